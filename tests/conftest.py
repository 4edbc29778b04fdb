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


# scripts/test.sh runs the suite on two workers (pytest-xdist, `--dist loadgroup`). The SLURM
# tests share one local cluster and count on its nodes being free, so they run one after another
# on one worker; a module whose fixture builds something once for all its tests (Unix users, a
# queue of a million rows) keeps its tests on one worker, where the fixture is built once.
ONE_WORKER_MODULES = {"test_cli", "test_fuzz", "test_report", "test_shared_queue", "test_stats"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if isinstance(item, pytest.Function) else ""
        if item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
        elif module in ONE_WORKER_MODULES:
            item.add_marker(pytest.mark.xdist_group(module))


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
