"""The doorbell beside the queue: which writes bump which counter, and who may read it."""

import os
import signal
import stat
from pathlib import Path

from helpers import cli, start_hog, wait_until

from hog.store import doorbell


def counters(db: Path) -> tuple[int, ...]:
    values = doorbell.Listener(f"{db}.doorbell").read()
    return values if values is not None else doorbell.SILENT


def test_submit_end_and_cancel_each_bump_their_counter(db: Path, tmp_path: Path) -> None:
    assert cli(db, "submit", "true").returncode == 0
    assert counters(db) == (1, 0, 0)  # WORK: a hog may claim
    assert stat.S_IMODE(os.stat(f"{db}.doorbell").st_mode) == 0o600  # as private as the queue
    assert cli(db, "submit", "--hold", f"touch {tmp_path}/started; sleep 60").returncode == 0
    assert counters(db) == (1, 0, 0)  # held: nothing for a hog yet
    assert cli(db, "release", "2").returncode == 0
    assert counters(db) == (2, 0, 0)
    hog = start_hog(db, "--cores", "2", "--idle-timeout", "1m")
    try:
        wait_until(lambda: (tmp_path / "started").exists(), message="the second task started")
        wait_until(lambda: counters(db)[doorbell.ENDED] == 1, message="the first task's end rung")
        assert cli(db, "cancel", "2").returncode == 0
        assert counters(db)[doorbell.CANCEL] == 1  # its hog kills it without waiting for its poll
        wait_until(lambda: counters(db)[doorbell.ENDED] == 2, message="the cancelled task's end rung")
    finally:
        hog.send_signal(signal.SIGTERM)
        hog.wait(timeout=30)


def test_reading_a_queue_without_a_doorbell_is_silent(db: Path) -> None:
    assert doorbell.Listener(f"{db}.doorbell").read() is None  # never rung: readers look on a slower clock
