"""What a new user trips on: bytes that are not UTF-8, work no hog can run, claimed tasks that have
not started, and output files left behind by cleanup. Through the CLI and with real hogs."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import child_env, cli, cli_json, rows_of, start_hog, wait_until

from hog.store import claims, states
from hog.store import db as hogdb
from hog.store.packing import Resources
from hog.store.paths import QueueFiles

# How Python gives the byte 0xff of a name, an argument or a variable: a lone surrogate.
BYTE = os.fsdecode(b"\xff")

# Writes what the task got, as bytes, NUL-separated: its argument, its folder and two variables.
TASK = """
import os, sys
got = [os.fsencode(sys.argv[1]), os.getcwdb(), os.environb[b"PLAIN"], os.environb[b"NAME\\xff"]]
open("got", "wb").write(b"\\0".join(got))
"""


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run_hog_until_idle(db: Path, *args: str) -> None:
    """A real hog that runs what it can and leaves once idle."""
    hog = start_hog(db, "--idle-timeout", "1s", "--heartbeat", "1s", *args)
    assert hog.wait(timeout=120) == 0


# -- bytes that are not UTF-8 ----------------------------------------------------------------


def test_bytes_that_are_not_utf8_reach_the_task_exactly(db: Path, tmp_path: Path) -> None:
    folder = tmp_path / f"work{BYTE}"
    (folder / f"out{BYTE}").mkdir(parents=True)
    (tmp_path / "task.py").write_text(TASK)
    env = child_env(PLAIN=f"x{BYTE}y", **{f"NAME{BYTE}": "1"})
    submitted = ok(
        cli(db, "submit", "--", sys.executable, str(tmp_path / "task.py"), f"a{BYTE}b", env=env, cwd=folder)
    )
    shell = ok(cli(db, "submit", f"printf '{BYTE}' > shell", env=env, cwd=folder))
    pattern = ok(cli(db, "submit", "-o", f"out{BYTE}/{{id}}.txt", "--", "echo", "hi", env=env, cwd=folder))
    run_hog_until_idle(db)

    assert {task["state"] for task in cli_json(db, "show")} == {states.DONE}
    expected = [b"a\xffb", os.fsencode(os.path.realpath(folder)), b"x\xffy", b"1"]
    assert (folder / "got").read_bytes() == b"\0".join(expected)
    assert (folder / "shell").read_bytes() == b"\xff"
    assert (folder / f"out{BYTE}" / f"{pattern.stdout.strip()}.txt").read_bytes() == b"hi\n"
    # Listings show the byte as an escape.
    commands = {task["id"]: task["command"] for task in cli_json(db, "show")}
    assert "'a\\xffb'" in commands[int(submitted.stdout)]
    assert commands[int(shell.stdout)] == "printf '\\xff' > shell"
    # Plain environments are still stored as text, shared by old and new rows alike.
    assert {kind for (kind,) in rows_of(db, "SELECT typeof(variables) FROM environments")} == {"blob"}
    ok(cli(db, "submit", "true"))
    assert ("text",) in rows_of(db, "SELECT typeof(variables) FROM environments")


def test_a_program_whose_name_is_not_utf8_fails_with_its_name(db: Path) -> None:
    submitted = ok(cli(db, "submit", "--", f"./missing{BYTE}"))
    run_hog_until_idle(db)
    (task,) = cli_json(db, "check", submitted.stdout.strip())
    assert task["state"] == states.FAILED
    assert task["why"].endswith("./missing\\xff"), task


def test_a_task_file_line_that_is_not_utf8_is_refused(db: Path, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.txt"
    lines.write_bytes(b"echo one\nprintf '\xff'\n")
    result = cli(db, "submit", "--file", str(lines))
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"slurm-hog: error: {lines} line 2 is not valid UTF-8: fix its encoding; nothing was added"
    )
    assert cli_json(db, "status")["tasks"][states.WAITING] == 0


def test_a_name_that_is_not_utf8_is_refused(db: Path) -> None:
    result = cli(db, "submit", "--name", f"n{BYTE}", "true")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "slurm-hog: error: --name holds a byte that is not UTF-8: give a name in plain text"
    )
    assert cli_json(db, "status")["tasks"][states.WAITING] == 0


def test_a_missing_folder_is_named_with_its_escape(db: Path) -> None:
    result = cli(db, "submit", "--cwd", f"nowhere{BYTE}", "true")
    assert result.returncode == 2
    assert result.stderr.strip() == "slurm-hog: error: --cwd nowhere\\xff: no such folder"


# -- work no hog can run ---------------------------------------------------------------------


MISFITS_LINE = (
    "2 waiting tasks fit none of the hogs seen (at most 1 core, 0 GPUs, 1.0 GiB): "
    "task 1 asks for 4 cores, 8.0 GiB; they wait until a larger hog starts"
)
NOTHING_ALIVE = "no hog runs and no monitor serves"


def submit_some_that_fit_no_hog(db: Path) -> None:
    ok(cli(db, "submit", "-c", "4", "--mem", "8G", "true"))
    ok(cli(db, "submit", "-g", "1", "true"))
    ok(cli(db, "submit", "true"))


def test_status_names_waiting_tasks_that_fit_none_of_the_hogs_seen(db: Path) -> None:
    submit_some_that_fit_no_hog(db)
    assert cli_json(db, "status")["waiting_fit_no_hog"] is None  # no hog seen: nothing to tell
    run_hog_until_idle(db, "--cores", "1", "--gpus", "0", "--mem", "1G")

    status = cli_json(db, "status")
    assert status["tasks"][states.WAITING] == 2
    assert status["waiting_fit_no_hog"] == 2
    assert status["seconds_to_empty"] is None  # never, not "in about 20s"
    text = ok(cli(db, "status")).stdout
    assert MISFITS_LINE in text
    assert "empty in about" not in text


def test_wait_says_once_what_fits_no_hog_and_that_nothing_is_alive(db: Path) -> None:
    submit_some_that_fit_no_hog(db)
    run_hog_until_idle(db, "--cores", "1", "--gpus", "0", "--mem", "1G")
    result = cli(db, "wait", "--max-wait", "1s", "--poll", "0.1s")
    assert result.returncode == 3
    assert result.stderr.count(f"wait: {MISFITS_LINE}\n") == 1
    assert result.stderr.count(NOTHING_ALIVE) == 1
    assert f"wait: {NOTHING_ALIVE} {db}: nothing runs the 2 tasks left until one starts" in result.stderr
    # A task that fits is not named.
    result = cli(db, "wait", "--max-wait", "1s", "--poll", "0.1s", "2")
    assert "wait: 1 waiting task fits none of the hogs seen" in result.stderr
    assert "task 2 asks for 1 core, 1 GPU;" in result.stderr


def test_wait_is_quiet_about_liveness_while_a_hog_or_a_monitor_is_alive(db: Path) -> None:
    submit_some_that_fit_no_hog(db)
    hog = start_hog(db, "--cores", "1", "--gpus", "0", "--mem", "1G", "--idle-timeout", "10m")
    try:
        wait_until(lambda: cli_json(db, "status")["tasks"][states.DONE] == 1, message="the task that fits")
        result = cli(db, "wait", "--max-wait", "1s", "--poll", "0.1s")
        assert result.returncode == 3
        assert result.stderr.count(f"wait: {MISFITS_LINE}\n") == 1
        assert NOTHING_ALIVE not in result.stderr
    finally:
        hog.send_signal(signal.SIGTERM)
        assert hog.wait(timeout=60) == 0
    # The hog has gone; a monitor that starts no hog still serves the queue.
    monitor = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "monitor", "--hogs", "0", "--poll", "1s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )
    try:
        wait_until(lambda: "a monitor serves" in cli(db, "monitor", "--status").stdout, message="the monitor")
        result = cli(db, "wait", "--max-wait", "1s", "--poll", "0.1s")
        assert result.returncode == 3
        assert NOTHING_ALIVE not in result.stderr
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=60)


# -- claimed ahead is not running ------------------------------------------------------------


def claim_five_and_start_two(db: Path) -> None:
    """A hog in this process claims five tasks ahead and starts two (as its slots record starts)."""
    database = hogdb.open_database(str(db))
    try:
        hog_id = claims.start_hog(
            database, claims.HogInfo("node1", os.getpid(), None, 2, [], 1 << 30, None, 3600.0)
        )
        assert hog_id is not None
        room = Resources(8, 0, 1 << 30)  # its two cores and the tasks it may hold ahead
        request = claims.ClaimRequest(room, room, [], None, True, 5)
        claimed = claims.exchange(database, hog_id, "node1", [], request, {}).claimed
        assert len(claimed) == 5
        with database.transaction() as connection:
            connection.execute(
                "UPDATE attempts SET started_at = ? WHERE task_id IN (1, 2) AND attempt = 1", (time.time(),)
            )
    finally:
        database.close()


def on_a_terminal(db: Path, *args: str) -> tuple[int, str]:
    """Run the CLI with its stderr on a terminal (wait draws its bar only there): status, stderr."""
    leader, follower = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=child_env(),
    )
    os.close(follower)
    received = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # EIO: the process has closed the terminal
            break
        if not data:
            break
        received.append(data)
    os.close(leader)
    return process.wait(timeout=60), b"".join(received).decode()


def test_claimed_tasks_that_have_not_started_are_shown_apart(db: Path, tmp_path: Path) -> None:
    lines = tmp_path / "tasks.txt"
    lines.write_text("sleep 60\n" * 10)
    ok(cli(db, "submit", "--file", str(lines)))
    claim_five_and_start_two(db)

    status = cli_json(db, "status")
    assert status["tasks"][states.RUNNING] == 5
    assert status["claimed_ahead"] == 3
    assert (
        "running: 2 started, 3 claimed ahead by their hogs (not started yet)" in ok(cli(db, "status")).stdout
    )

    code, shown = on_a_terminal(db, "wait", "--max-wait", "0.5s", "--poll", "0.1s")
    assert code == 3
    bars = re.findall(r"\d+/\d+ ended[^\r\n]*", shown)
    assert bars and bars[-1].strip() == "0/10 ended, 2 running, 3 claimed", shown
    assert NOTHING_ALIVE not in shown  # the hog beats within its lease


# -- cleanup removes output files ------------------------------------------------------------


def output_files(db: Path) -> list[str]:
    root = Path(QueueFiles(str(db)).tasks)
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_cleanup_removes_the_output_files_of_every_attempt(db: Path, tmp_path: Path) -> None:
    ok(cli(db, "submit", "echo one"))
    ok(cli(db, "submit", "--retries", "1", "echo two; exit 1"))
    ok(cli(db, "submit", "-o", str(tmp_path / "mine.txt"), "echo mine"))
    run_hog_until_idle(db)
    assert output_files(db) == [
        "000000/1.1.err",
        "000000/1.1.out",
        "000000/2.1.err",
        "000000/2.1.out",
        "000000/2.2.err",
        "000000/2.2.out",
        "000000/3.1.err",
    ]

    result = ok(cli(db, "cleanup", "--state", "done"))
    assert result.stdout.strip() == "deleted 2 tasks, 3 files, 4 B"
    assert output_files(db) == ["000000/2.1.err", "000000/2.1.out", "000000/2.2.err", "000000/2.2.out"]
    assert (tmp_path / "mine.txt").read_text() == "mine\n"  # named by the user: theirs

    # A thousand more, cancelled: the first folder's ids are all used, so it goes once empty.
    lines = tmp_path / "tasks.txt"
    lines.write_text("true\n" * 1000)
    ok(cli(db, "submit", "--file", str(lines)))
    ok(cli(db, "cancel", "--all"))
    result = ok(cli(db, "cleanup"))
    assert result.stdout.strip() == "deleted 1001 tasks, 4 files, 8 B"
    assert output_files(db) == []
    assert not os.path.exists(QueueFiles(str(db)).task_folder(1))
    assert (tmp_path / "mine.txt").exists()


def test_cleanup_keep_output_keeps_every_file(db: Path) -> None:
    ok(cli(db, "submit", "echo one"))
    run_hog_until_idle(db)
    assert ok(cli(db, "cleanup", "--keep-output")).stdout.strip() == "deleted 1 task"
    assert output_files(db) == ["000000/1.1.err", "000000/1.1.out"]
    # A later cleanup in the same folder takes the files of tasks that are gone.
    ok(cli(db, "submit", "echo two"))
    run_hog_until_idle(db)
    assert ok(cli(db, "cleanup")).stdout.strip() == "deleted 1 task, 4 files, 8 B"
    assert output_files(db) == []


def test_files_written_the_other_way_are_read_and_cleaned(db: Path) -> None:
    # Hogs spread the files over subfolders on a shared filesystem (and older hogs did not): a
    # queue whose files were made one way is read and cleaned the other way too.
    ok(cli(db, "submit", "echo one"))
    run_hog_until_idle(db)
    files = QueueFiles(str(db))
    assert not files.spread  # the tests' folders are on a local disk
    os.makedirs(files.task_subfolder(1))
    for stream in ("out", "err"):
        made = files.task_output(1, 1, stream)
        os.replace(made, os.path.join(files.task_subfolder(1), os.path.basename(made)))
    assert ok(cli(db, "log", "1")).stdout == "one\n"
    (task,) = json.loads(ok(cli(db, "check", "--full", "--format", "json", "1")).stdout)
    assert task["stdout"] == os.path.join(files.task_subfolder(1), "1.1.out")
    # Ids of that folder still to come: it stays, emptied of the files of the tasks gone.
    assert ok(cli(db, "cleanup")).stdout.strip() == "deleted 1 task, 2 files, 4 B"
    assert output_files(db) == [] and os.path.isdir(files.task_folder(1))
