"""What a task leaves behind dies with it, however it detached; a running task shows its start."""

import json
import signal
import time
from pathlib import Path

import psutil
import pytest
from helpers import child_env, cli, cli_json, start_hog, wait_until

# Each case starts `sleep 300` so that it escapes the task's process group or its parentage, then
# waits for the test's go-ahead file (the escape is in place by then) and exits.
ESCAPES = {
    "setsid": "setsid sleep 300 &",
    "double fork": "sh -c '(sleep 300 &) &'",
    "nohup": "nohup sleep 300 > /dev/null 2>&1 &",
    "daemon": (
        "python3 -c 'import os; os.fork() and os._exit(0); os.setsid(); os.fork() and os._exit(0);"
        ' os.execvp("sleep", ["sleep", "300"])\''
    ),
}


def submit(db: Path, command: str, mark: str) -> int:
    result = cli(db, "submit", "--json", command, env=child_env(ESCAPE_MARK=mark))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["first"]


def processes_of(mark: str, task_id: int, argv: list[str] | None = None) -> list[psutil.Process]:
    """The live processes a task of this test started (by their environment), with this argv."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if argv is not None and process.info["cmdline"] != argv:
            continue
        try:
            environment = process.environ()
        except (psutil.Error, OSError):
            continue
        if environment.get("ESCAPE_MARK") == mark and environment.get("HOG_TASK_ID") == str(task_id):
            found.append(process)
    return found


def task(db: Path, task_id: int) -> dict:
    return next(row for row in cli_json(db, "show") if row["id"] == task_id)


def stop(hog) -> None:
    hog.send_signal(signal.SIGTERM)
    hog.wait(timeout=60)


def test_processes_that_escape_a_task_are_killed_when_it_ends(db: Path, tmp_path: Path) -> None:
    mark = str(tmp_path)
    ids = {}
    for number, (case, escape) in enumerate(ESCAPES.items()):
        go = tmp_path / f"go-{number}"
        ids[case] = submit(db, f"{escape}\nwhile [ ! -e {go} ]; do sleep 0.05; done; exit {number + 3}", mark)
    next_id = submit(db, "echo next", mark)
    # One core: the tasks run one after the other on the same slot; the hog stays meanwhile.
    hog = start_hog(db, "--cores", "1", "--idle-timeout", "10m")
    try:
        for number, (case, task_id) in enumerate(ids.items()):
            wait_until(
                lambda task_id=task_id: processes_of(mark, task_id, ["sleep", "300"]),
                message=f"the {case} task's background process",
            )
            (tmp_path / f"go-{number}").touch()
            wait_until(lambda task_id=task_id: task(db, task_id)["state"] == "failed", message=f"{case} ends")
            assert task(db, task_id)["exit_code"] == number + 3, case
            assert processes_of(mark, task_id) == [], f"the {case} task left processes running"
        wait_until(lambda: task(db, next_id)["state"] == "done", message="the next task")
        assert hog.poll() is None
    finally:
        stop(hog)


def test_orphans_are_reaped_while_their_task_runs(db: Path, tmp_path: Path) -> None:
    """An orphan comes to the task's slot process, which reaps it when it ends: no zombies."""
    orphan_file, go = tmp_path / "orphan.pid", tmp_path / "go"
    orphan = (
        f"(setsid sh -c 'echo $$ > {orphan_file}.new; mv {orphan_file}.new {orphan_file}; exec sleep 1' &)"
    )
    task_id = submit(db, f"{orphan}; while [ ! -e {go} ]; do sleep 0.05; done", str(tmp_path))
    hog = start_hog(db, "--cores", "1", "--idle-timeout", "10m")
    try:
        wait_until(orphan_file.exists, message="the orphan's start")
        pid = int(orphan_file.read_text())
        slots = {child.pid for child in psutil.Process(hog.pid).children()}
        try:
            parent = psutil.Process(pid).ppid()
        except psutil.NoSuchProcess:
            pytest.fail("the orphan was reaped by another process")
        assert parent in slots, "the orphan did not come to the slot process"
        wait_until(lambda: not psutil.pid_exists(pid), message="the orphan reaped")
        assert task(db, task_id)["state"] == "running"
        go.touch()
        wait_until(lambda: task(db, task_id)["state"] == "done", message="the task's end")
    finally:
        stop(hog)


def test_a_killed_hog_leaves_no_escaped_process_behind(db: Path, tmp_path: Path) -> None:
    mark = str(tmp_path)
    task_id = submit(db, "setsid sleep 300 & sleep 300", mark)
    hog = start_hog(db, "--cores", "1")
    wait_until(lambda: processes_of(mark, task_id, ["sleep", "300"])[1:], message="the task and its escape")
    hog.send_signal(signal.SIGKILL)
    hog.wait(timeout=10)
    wait_until(lambda: not processes_of(mark, task_id), timeout=10, message="the task's processes gone")


def test_a_running_task_shows_its_start_and_how_long_it_has_run(db: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    task_id = submit(db, f"while [ ! -e {go} ]; do sleep 0.05; done", str(tmp_path))
    before = time.time()
    # The default heartbeat (30 s): the start must not wait for it.
    hog = start_hog(db, "--cores", "1", "--idle-timeout", "10m")
    try:
        started = wait_until(
            lambda: task(db, task_id)["started_at"], timeout=20, message="the start recorded"
        )
        assert before <= started <= time.time()
        assert task(db, task_id)["state"] == "running"
        table = cli(db, "show")
        assert table.returncode == 0, table.stderr
        assert "running " in table.stdout.splitlines()[1], table.stdout  # its runtime column
        go.touch()
        wait_until(lambda: task(db, task_id)["state"] == "done", message="the task's end")
        assert task(db, task_id)["started_at"] == started
    finally:
        stop(hog)
