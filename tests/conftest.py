import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import cli, start_hog

# Started in the background of a script (`pytest ... &`), the suite inherits SIGINT ignored and
# passes that on to every process it starts: the tests of Ctrl-C need it heard, as on a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# scripts/test.sh runs the suite on two workers (pytest-xdist, `--dist loadfile`: a file's tests
# on one worker, so that a module's fixture is built once). The SLURM tests share one local
# cluster and count on its nodes being free (one restarts it): they take turns through a lock,
# across workers and across runs of the suite at once.
SLURM_TESTS_LOCK = Path(os.environ.get("SLURM_HOG_CLUSTER_DIR", "/tmp/slurm-hog-cluster")) / "tests.lock"


@pytest.fixture(autouse=True)
def _one_slurm_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("slurm") is None or not SLURM_TESTS_LOCK.parent.is_dir():
        yield
        return
    with open(SLURM_TESTS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A new, empty queue database in a temporary folder."""
    path = tmp_path / "queue.sqlite"
    result = cli(path, "init")
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def hog(db: Path) -> Iterator[subprocess.Popen]:
    """A local hog of two cores on `db` that waits a minute for work, stopped at the end."""
    process = start_hog(db, "--cores", "2", "--idle-timeout", "1m")
    yield process
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
