"""Logs and what a task was submitted with: log --follow, log --hog, monitor --log, check --full,
and cleanup --hogs, through the CLI with real hogs and a real monitor."""

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import child_env, cli, cli_json, start_hog, wait_until

HOG = ("--cores", "1", "--heartbeat", "1s", "--idle-timeout", "2s")


def submit(db: Path, *args: str) -> int:
    result = cli(db, "submit", *args)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def follower(db: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def has_open(pid: int, path: Path) -> bool:
    """Whether process `pid` has the file `path` open."""
    folder = f"/proc/{pid}/fd"
    for fd in os.listdir(folder):
        with contextlib.suppress(OSError):  # closed meanwhile
            if os.readlink(os.path.join(folder, fd)) == str(path):
                return True
    return False


def hogs(db: Path) -> dict[int, dict]:
    return {hog["id"]: hog for hog in cli_json(db, "show", "-H")}


@pytest.fixture
def monitor_stopped(db: Path):
    yield
    cli(db, "monitor", "--stop")


def test_log_follow_prints_every_line_as_it_comes_and_ends_with_the_task(db: Path) -> None:
    # Twenty lines over four seconds; the follower starts before the task does.
    task_id = submit(db, "for i in $(seq 1 20); do echo line $i; sleep 0.2; done")
    follow = follower(db, "log", str(task_id), "--follow")
    hog = start_hog(db, *HOG)
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert out == "".join(f"line {i}\n" for i in range(1, 21))
    assert cli_json(db, "check", str(task_id))[0]["state"] == "done"
    assert hog.wait(timeout=60) == 0


@pytest.mark.parametrize("asleep", [False, True], ids=["live", "attempts-between-two-looks"])
def test_log_follow_goes_on_across_attempts(db: Path, asleep: bool) -> None:
    task_id = submit(db, "--retries", "1", 'echo "attempt $HOG_ATTEMPT"; sleep 1; test "$HOG_ATTEMPT" = 2')
    follow = follower(db, "log", str(task_id), "--follow")
    if asleep:  # both attempts run while the follower is stopped: it must still print both
        wait_until(lambda: has_open(follow.pid, db), message="the follower to open the queue")
        time.sleep(0.5)  # its first look, right after, finds the task waiting
        follow.send_signal(signal.SIGSTOP)
    hog = start_hog(db, *HOG)
    if asleep:
        wait_until(lambda: cli_json(db, "check", str(task_id))[0]["state"] == "done", timeout=60)
        follow.send_signal(signal.SIGCONT)
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 0, err
    assert out == "attempt 1\nattempt 2\n"
    assert f"task {task_id}'s attempt 2 started" in err
    assert hog.wait(timeout=60) == 0


def test_log_follow_of_a_task_cancelled_before_it_ran(db: Path) -> None:
    task_id = submit(db, "true")
    follow = follower(db, "log", str(task_id), "--follow", "--stderr")
    assert cli(db, "cancel", str(task_id)).returncode == 0
    out, err = follow.communicate(timeout=60)
    assert (follow.returncode, out) == (0, "")
    assert "ended (cancelled) without running" in err


def test_logs_of_hogs_and_of_the_monitor(db: Path, monitor_stopped: None) -> None:
    submit(db, "sleep 1")
    result = cli(
        db, "monitor", "--daemon", "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "2s", "--poll", "1s"
    )
    assert result.returncode == 0, result.stderr
    hog_id = wait_until(lambda: list(hogs(db)), timeout=30)[0]
    follow_hog = follower(db, "log", "--hog", str(hog_id), "--follow")
    out, err = follow_hog.communicate(timeout=60)
    assert follow_hog.returncode == 0, err
    assert f"hog {hog_id} on " in out and "finished (idle)" in out, out
    assert hogs(db)[hog_id]["state"] == "finished"
    printed = cli(db, "log", "--hog", str(hog_id))
    assert printed.returncode == 0 and printed.stdout == out

    follow_monitor = follower(db, "monitor", "--log", "--follow")
    assert cli(db, "monitor", "--stop").returncode == 0
    out, err = follow_monitor.communicate(timeout=60)
    assert follow_monitor.returncode == 0, err
    assert f"started hog {hog_id}" in out and "monitor on" in out and "stopping" in out
    assert cli(db, "monitor", "--log").stdout == out


def test_log_bad_inputs(db: Path) -> None:
    hog = start_hog(db, *HOG)  # a hog started by hand: its log is not beside the queue
    assert hog.wait(timeout=60) == 0
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args, words in [
        (("log",), "say whose log"),
        (("log", "1", "--hog", "1"), "say whose log"),
        (("log", "--hog", "7"), "no hog 7"),
        (("log", "--hog", "1"), "was started by hand"),
        (("log", "--hog", "1", "--stderr"), "a hog has one log"),
        (("log", "1", "--follow", "--attempt", "1"), "leave out --attempt"),
        (("log", "5", "--follow"), "no task 5"),
    ]:
        result = cli(db, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_check_full_shows_what_a_task_was_submitted_with_and_every_attempt(db: Path, tmp_path: Path) -> None:
    parent = submit(db, "--name", "prep", "true")
    folder = tmp_path / "work"
    folder.mkdir()
    task_id = submit(
        db,
        "--after",
        "prep",
        "--mem",
        "200M",
        "-t",
        "5m",
        "--retries",
        "1",
        "--priority",
        "3",
        "--cwd",
        str(folder),
        "-o",
        "out-{attempt}.txt",
        'python3 -c \'import os,sys; x = bytearray(30 << 20); sys.exit(os.environ["HOG_ATTEMPT"] != "2")\'',
    )
    hog = start_hog(db, *HOG)
    wait_until(lambda: cli_json(db, "check", str(task_id))[0]["state"] == "done", timeout=60)
    (task,) = cli_json(db, "check", str(task_id), "--full")
    assert task["mem_bytes"] == 200 << 20 and task["time_limit_s"] == 300
    assert (task["max_retries"], task["retries_used"], task["priority"]) == (1, 1, 3)
    assert task["cwd"] == str(folder)
    assert task["stdout"] == str(folder / "out-2.txt") and task["stdout_pattern"] == "out-{attempt}.txt"
    assert task["stderr"] == f"{db}.logs/tasks/000000/{task_id}.2.err"
    assert task["parents"] == [{"id": parent, "kind": "ok", "state": "done"}]
    assert [a["exit_code"] for a in task["attempts"]] == [1, 0]
    for attempt in task["attempts"]:
        assert attempt["host"] and attempt["hog_id"] == 1
        assert attempt["cpu_user_s"] is not None and attempt["peak_memory_bytes"] >= 30 << 20
    text = cli(db, "check", str(task_id), "--full")
    assert text.returncode == 0
    for words in (
        "time limit 5m00s",
        "memory 200.0 MiB",
        "1 of 1 used",
        f"parents     {parent} (after, done)",
    ):
        assert words in text.stdout, text.stdout
    assert text.stdout.count("exited") == 2
    rows = cli(db, "check", str(task_id), "--full", "--format", "csv").stdout.splitlines()
    assert rows[0].startswith("task_id,attempt,hog_id,host") and len(rows) == 3
    assert hog.wait(timeout=60) == 0


def test_cleanup_hogs_deletes_ended_hogs_and_their_logs(db: Path, monitor_stopped: None) -> None:
    task_id = submit(db, "true")
    result = cli(
        db, "monitor", "--once", "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "1s", "--poll", "1s"
    )
    assert result.returncode == 0, result.stderr
    (ended,) = hogs(db).values()
    assert ended["state"] == "finished" and os.path.exists(ended["log_path"])
    running = start_hog(db, "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "60s")
    wait_until(lambda: len(hogs(db)) == 2, timeout=30)

    kept = cli(db, "cleanup", "--hogs", "--older-than", "1d")
    assert (kept.returncode, kept.stdout.strip()) == (0, "deleted 0 hogs, 0 files, 0 B")
    result = cli(db, "cleanup", "--hogs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("deleted 1 hog, 1 file, ")
    assert list(hogs(db)) == [2], "the running hog stays"
    assert not os.path.exists(ended["log_path"])
    (task,) = cli_json(db, "check", str(task_id), "--full")
    assert task["attempts"][0]["hog_id"] is None and task["attempts"][0]["host"], "the attempt keeps its host"
    for args, words in [
        (("--state", "done"), "--state is for tasks"),
        (("--keep-output",), "--keep-output is for"),
    ]:
        bad = cli(db, "cleanup", "--hogs", *args)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
    assert cli(db, "hogs", "stop", "2", "--now").returncode == 0
    assert running.wait(timeout=60) == 0
