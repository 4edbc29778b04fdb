import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import cli


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A new, empty queue database in a temporary folder."""
    path = tmp_path / "queue.sqlite"
    result = cli(path, "init")
    assert result.returncode == 0, result.stderr
    return path
