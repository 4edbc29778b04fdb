"""Crashes at the worst moments, hostile files, and what nobody else may do to the queue."""

import fcntl
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
import psutil
import pytest
from helpers import child_env, cli, cli_json, heal_from_elsewhere, start_hog, wait_until

from hog.pilot.runner import EXIT_GIVEN_UP


def sqlite(db: Path) -> apsw.Connection:
    return apsw.Connection(str(db))


def consistent(db: Path) -> dict[str, int]:
    """Check integrity and the kept counts; return the counts."""
    connection = sqlite(db)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        real = dict(connection.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
        kept = dict(connection.execute("SELECT state, tasks FROM state_counts"))
    finally:
        connection.close()
    assert {state: n for state, n in kept.items() if n} == real
    return real


def kill_when_journal_appears(process: subprocess.Popen, db: Path) -> None:
    """SIGKILL the process as soon as it is inside a write transaction."""
    journal = Path(f"{db}-journal")

    def in_transaction() -> bool:
        assert process.poll() is None, "finished before it could be killed mid-transaction"
        return journal.exists()

    wait_until(in_transaction, interval=0.001, message="a write transaction")
    time.sleep(random.uniform(0.05, 0.3))  # a random point inside its writes
    process.send_signal(signal.SIGKILL)
    process.wait()


def hog_cli(db: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )


# -- crash consistency -------------------------------------------------------------------------


def test_kill_during_bulk_submit_adds_all_or_nothing(db: Path, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.txt"
    lines.write_text("".join(f"echo {n}\n" for n in range(600_000)))
    kill_when_journal_appears(hog_cli(db, "submit", "--file", str(lines)), db)
    assert sum(consistent(db).values()) in (0, 600_000)
    assert cli(db, "submit", "true").returncode == 0, "the queue is unusable after the crash"
    assert sum(consistent(db).values()) in (1, 600_001)


def test_kill_during_cleanup_deletes_all_or_nothing(db: Path, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.txt"
    lines.write_text("true\n" * 300_000)
    assert cli(db, "submit", "--file", str(lines)).returncode == 0
    connection = sqlite(db)
    # Set-up only: pretend they all ran, keeping the counts in step.
    connection.execute("UPDATE tasks SET state = 'done', ended_at = 1")
    connection.execute("UPDATE state_counts SET tasks = CASE state WHEN 'done' THEN 300000 ELSE 0 END")
    connection.close()
    kill_when_journal_appears(hog_cli(db, "cleanup"), db)
    assert consistent(db).get("done", 0) in (0, 300_000)


def test_kill_during_result_batches_loses_no_task(db: Path, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.txt"
    lines.write_text("true\n" * 3000)
    assert cli(db, "submit", "--file", str(lines)).returncode == 0
    for _ in range(4):
        hog = start_hog(db, "--cores", "2", "--heartbeat", "1s", "--idle-timeout", "1s")
        time.sleep(random.uniform(0.4, 1.2))  # killed at a random point of its run
        hog.kill()
        hog.wait()
        heal_from_elsewhere(db)
        counts = consistent(db)
        assert "running" not in counts, "a task stayed with a dead hog"
        assert sum(counts.values()) == 3000
    assert start_hog(db, "--cores", "2", "--heartbeat", "1s", "--idle-timeout", "1s").wait(timeout=120) == 0
    assert consistent(db) == {"done": 3000}
    connection = sqlite(db)
    successes = connection.execute(
        "SELECT task_id, count(*) FROM attempts WHERE reason = 'exited' AND exit_code = 0 GROUP BY task_id"
    ).fetchall()
    connection.close()
    assert len(successes) == 3000 and {n for _, n in successes} == {1}, "a result was recorded twice"


# -- hostile conditions ------------------------------------------------------------------------


def test_deleted_lock_file_is_recreated_and_writers_stay_serialised(db: Path) -> None:
    lock = Path(f"{db}.lock")
    holder = os.open(lock, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    lock.unlink()
    try:
        result = cli(db, "--timeout", "5", "submit", "true")
        assert result.returncode == 0, result.stderr
        assert lock.exists() and (lock.stat().st_mode & 0o777) == 0o600
    finally:
        os.close(holder)


def test_lock_held_past_the_timeout_fails_cleanly(db: Path) -> None:
    holder = os.open(f"{db}.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        result = cli(db, "--timeout", "1", "submit", "true")
    finally:
        os.close(holder)
    assert result.returncode != 0
    assert "lock" in result.stderr and "Traceback" not in result.stderr
    assert consistent(db) == {}


def test_corrupt_file_gets_a_clear_message(db: Path) -> None:
    assert cli(db, "submit", "--file", "-", input="true\n" * 2000).returncode == 0
    size = db.stat().st_size
    with open(db, "r+b") as handle:
        handle.seek(4096)  # keep the header; wreck every other page
        handle.write(os.urandom(size - 4096))
    for command in (["show"], ["status"], ["submit", "true"], ["check", "1"]):
        result = cli(db, *command)
        assert result.returncode != 0, command
        assert "damaged" in result.stderr or "not a slurm-hog database" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_random_bytes_are_not_a_queue(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(os.urandom(10_000))
    result = cli(path, "status")
    assert result.returncode != 0 and "not a slurm-hog" in result.stderr
    assert "Traceback" not in result.stderr


def test_hog_rides_out_a_lock_timeout_without_losing_its_tasks(db: Path, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    assert (
        cli(db, "submit", "--file", "-", input=f"sleep 1; echo $HOG_TASK_ID >> {done}\n" * 2).returncode == 0
    )
    log = tmp_path / "hog.log"
    hog = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hog",
            "--db",
            str(db),
            "--timeout",
            "1",
            "hog",
            "--cores",
            "2",
            "--heartbeat",
            "1s",
            "--idle-timeout",
            "2s",
        ],
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        env=child_env(),
    )
    wait_until(lambda: cli_json(db, "status")["tasks"]["running"] == 2, message="tasks running")
    holder = os.open(f"{db}.lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        wait_until(lambda: "database unavailable" in log.read_text(), timeout=20, message="a lock timeout")
        # Its tasks have ended and their results wait: the hog must wait for the lock asleep.
        process = psutil.Process(hog.pid)
        cpu_before, wall_before = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(2.0)
        cpu_used = sum(process.cpu_times()[:2]) - cpu_before
        wall = time.monotonic() - wall_before
    finally:
        os.close(holder)
    assert cpu_used < 0.25 * wall, f"the hog used {cpu_used:.2f} s of CPU in {wall:.2f} s waiting"
    assert hog.wait(timeout=60) == 0
    assert consistent(db) == {"done": 2}
    assert sorted(done.read_text().split()) == ["1", "2"]


@pytest.mark.parametrize("how", ["moved away", "removed with its lock file", "replaced by a new queue"])
def test_hog_whose_database_disappears_kills_its_tasks_and_leaves(db: Path, tmp_path: Path, how: str) -> None:
    """Nothing it does can be written any more: it must not run on, or spin, for ever."""
    pid_file = tmp_path / "pid"
    assert cli(db, "submit", f"echo $$ > {pid_file}; exec sleep 60").returncode == 0
    log = tmp_path / "hog.log"
    hog = start_hog(db, "--cores", "1", "--heartbeat", "1s", log_path=log)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), message="task start")
    task_pid = int(pid_file.read_text())
    if how == "moved away":
        os.rename(db, tmp_path / "elsewhere.sqlite")
    else:
        os.unlink(db)
        os.unlink(f"{db}.lock")
        if how == "replaced by a new queue":
            assert cli(db, "init").returncode == 0
    assert hog.wait(timeout=30) == EXIT_GIVEN_UP, log.read_text()
    assert "was deleted or replaced while this process had it open" in log.read_text()
    assert "Traceback" not in log.read_text()
    assert not psutil.pid_exists(task_pid) or psutil.Process(task_pid).status() == psutil.STATUS_ZOMBIE
    if how == "replaced by a new queue":
        assert not any(cli_json(db, "status")["tasks"].values())  # nothing written to the new queue


# -- security ----------------------------------------------------------------------------------


def test_queue_files_are_private(db: Path) -> None:
    for path in (db, Path(f"{db}.lock")):
        assert path.stat().st_mode & 0o777 == 0o600
    assert Path(f"{db}.logs").stat().st_mode & 0o777 == 0o700


def test_hog_and_monitor_refuse_a_database_anyone_can_write(db: Path) -> None:
    db.chmod(0o666)
    for command in (["hog", "--idle-timeout", "1s"], ["monitor", "--once"]):
        result = cli(db, *command)
        assert result.returncode != 0
        assert "writable by every user" in result.stderr and "chmod o-w" in result.stderr
        assert "Traceback" not in result.stderr


def test_nothing_listens_on_a_network_port(db: Path) -> None:
    assert cli(db, "submit", "sleep 5").returncode == 0
    monitor = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "monitor", "--poll", "0.5s", "--heartbeat", "1s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
        start_new_session=True,
    )
    try:
        wait_until(lambda: cli_json(db, "status")["tasks"]["running"] == 1, message="task running")
        processes = [psutil.Process(monitor.pid), *psutil.Process(monitor.pid).children(recursive=True)]
        processes += [psutil.Process(h["pid"]) for h in cli_json(db, "show", "-H") if h["pid"]]
        assert len(processes) >= 2
        for process in processes:
            assert process.net_connections(kind="inet") == [], f"{process.cmdline()} has a socket"
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=20)
        assert cli(db, "cancel", "--all").returncode == 0


# -- the locking check -------------------------------------------------------------------------


def test_doctor_passes_where_locks_work(db: Path) -> None:
    result = cli(db, "doctor", "--processes", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "locking works" in result.stdout
    assert cli(db, "init", "--check-locking").returncode == 0
    assert not list(db.parent.glob(".*doctor*")), "scratch files left behind"


def test_doctor_catches_locks_that_do_nothing(db: Path) -> None:
    env = child_env(SLURM_HOG_DOCTOR_IGNORE_LOCKS="1")
    result = cli(db, "doctor", "--processes", "6", env=env)
    assert result.returncode == 1
    assert "LOCKING IS BROKEN" in result.stdout


@pytest.mark.parametrize("processes", [2])
def test_doctor_through_a_command_prefix(db: Path, processes: int) -> None:
    result = cli(db, "doctor", "--processes", str(processes), "--command-prefix", "env")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{processes + 1} launches" in result.stdout
