"""Output files made ahead by the slot processes and handed to each task open (outfiles.py)."""

import json
import os
import signal
import subprocess
import threading
from pathlib import Path

from helpers import cli, start_hog, states_of, wait_until

from hog.pilot.outfiles import Outputs

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
    # Each child holds its own files and no other task's (made ahead, kept open in the slot).
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
        # The four behind the first are sent to the one slot and their files made there.
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
    go = tmp_path / "go"
    warm_up(db)
    (first,) = submit(db, f"while [ ! -e {go} ]; do sleep 0.05; done")
    behind = submit(db, "--file", "-", stdin="true\n" * 3)
    hog = start_hog(db, *FAST, "--cores", "1")
    wait_until(lambda: {f"{task_id}.1.err" for task_id in behind} <= task_files(db), message="files made")
    hog.send_signal(signal.SIGINT)
    wait_until(lambda: all(states_of(db)[task_id] == "waiting" for task_id in behind), message="given back")
    go.touch()
    assert finish(hog) == 0
    assert task_files(db) == {f"{first}.1.out", f"{first}.1.err"}


def test_files_are_made_with_the_queues_mode_and_existing_ones_left_alone(tmp_path: Path) -> None:
    outputs = Outputs()
    old = tmp_path / "old.out"
    old.write_text("left from an earlier attempt")
    logs = tmp_path / "logs" / "000000"
    os.umask(old_umask := os.umask(0o077))
    try:
        outputs.ask((1, 1), (str(logs / "1.out"), str(logs / "1.err"), 0o660, 0o660, 0o2770))
        outputs.ask((2, 1), (str(old), os.devnull, 0o666, 0o666, 0o700))
        outputs.ask((3, 1), (str(logs / "3.out"), str(logs / "3.err"), 0o600, 0o600, 0o700))
        taken = []
        thread = threading.Thread(target=lambda: taken.extend(outputs.take((1, 1))))
        thread.start()
        thread.join(timeout=30)
        assert len(taken) == 2 and all(isinstance(fd, int) for fd in taken)
        os.write(taken[0], b"made ahead\n")
        for fd in taken:
            os.close(fd)
        assert (logs / "1.out").read_text() == "made ahead\n"
        assert oct((logs / "1.err").stat().st_mode & 0o7777) == oct(0o660), "the umask took group bits"
        assert oct(logs.stat().st_mode & 0o7777) == oct(0o2770)
        # An existing file is the child's to open and truncate as it starts, not before.
        assert outputs.take((2, 1)) == [None, None]
        assert old.read_text() == "left from an earlier attempt"
        # A task that will not start: what was made for it is closed and removed.
        wait_until(lambda: (logs / "3.err").exists(), message="3's files")
        outputs.drop((3, 1))
        assert not (logs / "3.out").exists() and not (logs / "3.err").exists()
        assert outputs.take((4, 1)) == [None, None], "nothing asked: nothing to wait for"
    finally:
        os.umask(old_umask)


def test_a_file_that_cannot_be_made_is_reported_and_the_next_task_still_gets_its_own(tmp_path: Path) -> None:
    outputs = Outputs()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    outputs.ask((1, 1), (str(tmp_path / "1.out"), str(blocker / "1.err"), 0o600, 0o600, 0o700))
    outputs.ask((2, 1), (str(tmp_path / "2.out"), str(tmp_path / "2.out"), 0o600, 0o600, 0o700))
    try:
        outputs.take((1, 1))
    except NotADirectoryError as error:
        assert error.filename == str(blocker / "1.err")
    else:
        raise AssertionError("no error for a file under a file")
    assert (tmp_path / "1.out").exists(), "what was made for a task that failed to start stays"
    out, err = outputs.take((2, 1))
    assert out is not None and err is None, "one file for both streams is made once"
    os.close(out)
