import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import cli, start_hog


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
