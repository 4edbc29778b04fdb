"""The doorbell beside the queue: which writes bump which counter, and who may read it."""

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import child_env, cli, start_hog, wait_until

import hog
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


def test_a_monitor_with_room_for_hogs_starts_one_when_work_is_submitted_not_at_its_next_poll(
    db: Path,
) -> None:
    from test_monitor import start_monitor

    monitor = start_monitor(db, "--hogs", "2", "--poll", "10m")  # the last --poll wins
    try:
        log = Path(f"{db}.monitor-0.out")  # start_monitor's
        wait_until(lambda: "keeping up to" in log.read_text(), message="the monitor's start")
        time.sleep(2)  # its first pass, which finds nothing waiting, is over
        assert cli(db, "submit", "true").returncode == 0
        # Without the doorbell the hog would start at the next poll, ten minutes on.
        wait_until(lambda: cli(db, "status", "--format", "json").stdout.count('"done": 1'), timeout=60)
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=30)


def test_results_go_out_sooner_where_the_lock_is_held_briefly() -> None:
    from hog.pilot.wakeup import QUICK_GAP_MAX_S, QUICK_GAP_MIN_S, quick_gap_s

    assert quick_gap_s(None) == QUICK_GAP_MAX_S  # not measured yet: as batched as before
    assert quick_gap_s(0.0005) == QUICK_GAP_MIN_S  # a local disk
    assert QUICK_GAP_MIN_S < quick_gap_s(0.004) < QUICK_GAP_MAX_S
    assert quick_gap_s(0.05) == QUICK_GAP_MAX_S  # a network filesystem


def test_a_slow_doorbell_is_listened_to_less_often(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bell"
    path.write_bytes(bytes(24))
    listener = doorbell.Listener(str(path))
    assert listener.read() == (0, 0, 0)
    quick = listener.interval_s  # a page-cache hit: the floor, unless this machine is very busy
    assert doorbell.LISTEN_S <= quick < 5.0
    original = os.pread
    monkeypatch.setattr(os, "pread", lambda *args: (time.sleep(0.05), original(*args))[1])
    assert listener.read() == (0, 0, 0)
    assert listener.interval_s >= 0.05 * doorbell.LISTEN_COST_SHARE  # a 50 ms read: every 5 s or more


def test_wait_hears_its_tasks_end_before_its_next_poll(db: Path, tmp_path: Path) -> None:

    process = start_hog(db, "--cores", "2", "--idle-timeout", "1m")
    try:
        first = cli(db, "submit", "sleep 1").stdout
        assert first
        # Without the doorbell `wait` would look again only after its ten-minute poll.
        result = subprocess.run(
            [sys.executable, "-m", "hog", "--db", str(db), "wait", "--poll", "10m", "--quiet"],
            capture_output=True,
            text=True,
            timeout=60,
            env=child_env(),
        )
        assert result.returncode == 0, result.stderr
        queue = hog.Queue(str(db))
        task_id = queue.submit("sleep 1")
        assert queue.wait(task_id, poll=600, timeout=60) == {task_id: "done"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_a_client_tells_its_tasks_end_from_others_by_the_ring_of_ended_ids(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite.doorbell"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        listener = doorbell.Listener(str(path))
        ended = 1 << doorbell.ENDED
        doorbell.ring(fd, ended, (5, 6))
        listener.read()
        assert listener.may_have_ended(7)  # the first look knows nothing of what came before
        doorbell.ring(fd, ended, (8, 9))
        assert listener.read()[doorbell.ENDED] == 2
        assert not listener.may_have_ended(7)  # others' ends: no need to read its row
        doorbell.ring(fd, ended, (10, 7, 11))
        listener.read()
        assert listener.may_have_ended(7)
        doorbell.ring(fd, ended)  # ends recorded without ids (a cancel of waiting tasks)
        listener.read()
        assert listener.may_have_ended(7)
        doorbell.ring(fd, ended, tuple(range(100, 100 + doorbell.ENDS + 1)))  # more than the ring holds
        listener.read()
        assert listener.may_have_ended(7)
        doorbell.ring(fd, ended, (12,))
        listener.read()
        assert not listener.may_have_ended(7)
        assert listener.read() == (0, 6, 0)  # the counters are where they were
    finally:
        os.close(fd)


def test_an_older_doorbell_without_a_ring_makes_every_end_news(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite.doorbell"
    path.write_bytes((0).to_bytes(8, "little") + (3).to_bytes(8, "little") + bytes(8))  # 24 bytes
    listener = doorbell.Listener(str(path))
    assert listener.read() == (0, 3, 0)
    assert listener.may_have_ended(7) and listener.may_have_ended(7)


def test_a_hog_puts_the_ids_of_the_tasks_it_ends_in_the_ring(db: Path, tmp_path: Path) -> None:
    process = start_hog(db, "--cores", "2", "--idle-timeout", "1m")
    try:
        listener = doorbell.Listener(f"{db}.doorbell")
        listener.read()
        listener.may_have_ended(1)
        first = int(cli(db, "submit", "true").stdout.split()[-1])
        wait_until(lambda: cli(db, "status", "--format", "json").stdout.count('"done": 1'))
        listener.read()
        assert listener.may_have_ended(first)
        second = int(cli(db, "submit", "true").stdout.split()[-1])
        wait_until(lambda: cli(db, "status", "--format", "json").stdout.count('"done": 2'))
        listener.read()
        assert not listener.may_have_ended(first) and second == first + 1
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
