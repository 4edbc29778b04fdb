"""Tasks' output files, made ahead of their start (procs.OutputFiles): whole for tasks run back to
back, and gone for tasks that never start."""

import json
import os
import signal
import subprocess
from pathlib import Path

from helpers import cli, start_hog, states_of, wait_until

FAST = ("--heartbeat", "1s", "--idle-timeout", "2s")


def submit(db: Path, *args: str, stdin: str | None = None) -> list[int]:
    result = cli(db, "submit", "--json", *args, input=stdin)
    assert result.returncode == 0, result.stderr
    first_last = json.loads(result.stdout)
    return list(range(first_last["first"], first_last["last"] + 1))


def finish(process: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def warm_up(db: Path) -> None:
    """Quick tasks first: a hog that has seen tasks end in milliseconds claims the next ones
    ahead, and its slot gets several at once (a hog that knows nothing claims one a core)."""
    submit(db, "-o", os.devnull, "-e", os.devnull, "--file", "-", stdin="true\n" * 20)


def task_files(db: Path) -> set[str]:
    return {path.name for path in (Path(f"{db}.logs") / "tasks").glob("*/*")}


def test_tasks_run_back_to_back_each_write_their_own_whole_output(db: Path) -> None:
    command = 'echo "out $HOG_TASK_ID"; echo "err $HOG_TASK_ID" >&2; ls /proc/self/fd | wc -l'
    ids = submit(db, "--file", "-", stdin=f"{command}\n" * 60)
    assert finish(start_hog(db, *FAST, "--cores", "1")) == 0
    for task_id in ids:
        out = cli(db, "log", str(task_id))
        assert out.returncode == 0, out.stderr
        lines = out.stdout.split("\n")
        assert lines[0] == f"out {task_id}"
        err = cli(db, "log", "--stderr", str(task_id))
        assert err.stdout == f"err {task_id}\n"
    # Each child holds its own files and no other task's (made ahead, none kept open).
    fds = {int(cli(db, "log", str(task_id)).stdout.split("\n")[1]) for task_id in ids}
    assert len(fds) == 1, f"tasks saw different numbers of open files: {fds}"


def test_tasks_cancelled_while_queued_in_a_slot_leave_no_files(db: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    named = tmp_path / "named.txt"
    named.write_text("an earlier attempt's output\n")
    warm_up(db)
    (first,) = submit(db, f"while [ ! -e {go} ]; do sleep 0.05; done; echo first")
    queued = submit(db, "--file", "-", stdin="echo queued\n" * 3)
    (kept,) = submit(db, "-o", str(named), "echo replaced")
    hog = start_hog(db, *FAST, "--cores", "1")
    try:
        # The four behind the first are claimed ahead and their files made.
        wait_until(lambda: {f"{task_id}.1.out" for task_id in queued} <= task_files(db), message="files made")
        assert cli(db, "cancel", *map(str, queued), str(kept)).returncode == 0
        wait_until(lambda: all(states_of(db)[task_id] == "cancelled" for task_id in [*queued, kept]))
        wait_until(lambda: task_files(db) == {f"{first}.1.out", f"{first}.1.err"}, message="files removed")
        go.touch()
    finally:
        assert finish(hog) == 0
    assert states_of(db)[first] == "done"
    assert (Path(f"{db}.logs") / "tasks" / "000000" / f"{first}.1.out").read_text() == "first\n"
    assert task_files(db) == {f"{first}.1.out", f"{first}.1.err"}
    assert named.read_text() == "an earlier attempt's output\n", "a task that never started truncated it"


def test_a_drained_hog_removes_the_files_of_tasks_it_gives_back(db: Path, tmp_path: Path) -> None:
    go, started = tmp_path / "go", tmp_path / "started"
    warm_up(db)
    (first,) = submit(db, f"touch {started}; while [ ! -e {go} ]; do sleep 0.05; done")
    behind = submit(db, "--file", "-", stdin="true\n" * 3)
    hog = start_hog(db, *FAST, "--cores", "1")
    wait_until(started.exists, message="the first task's start")
    wait_until(lambda: {f"{task_id}.1.err" for task_id in behind} <= task_files(db), message="files made")
    hog.send_signal(signal.SIGINT)
    wait_until(lambda: all(states_of(db)[task_id] == "waiting" for task_id in behind), message="given back")
    go.touch()
    assert finish(hog) == 0
    assert task_files(db) == {f"{first}.1.out", f"{first}.1.err"}


def test_a_task_holds_no_file_of_its_hog_or_slot(db: Path) -> None:
    # A slot's pipes held by a task's leftover process would hide the slot's death from the hog.
    ids = submit(db, "--file", "-", stdin="ls /proc/$$/fd\n" * 3)
    assert finish(start_hog(db, *FAST, "--cores", "2")) == 0
    for task_id in ids:
        assert cli(db, "log", str(task_id)).stdout.split() == ["0", "1", "2"]
