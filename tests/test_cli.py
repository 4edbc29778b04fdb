"""Every user command through the real CLI (`python -m hog --db DB ...` in a subprocess)."""

import contextlib
import csv
import grp
import io
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import apsw
import psutil
import pytest
from helpers import REPO, child_env, cli, cli_json, start_hog, wait_until

from hog.gpushare import GPU_UNITS
from hog.store import claims, queue, schema, states, submitting
from hog.store import db as hogdb
from hog.store.packing import Resources
from hog.store.submitting import decode_environment

# -- helpers ---------------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


def assert_refused(result: subprocess.CompletedProcess, phrase: str) -> None:
    """Non-zero exit, one line naming the problem on stderr, no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    assert phrase.lower() in result.stderr.lower(), result.stderr
    # click's usage errors add its "Usage:" and "Try ... --help" lines: the message is one line.
    message = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(("Usage:", "Try '"))
    ]
    assert len(message) == 1, result.stderr


def snapshot(path: Path) -> bytes | None:
    """The database file's bytes: equal before and after means nothing was written."""
    return path.read_bytes() if path.exists() else None


def submit(db: Path, *args: str, **kwargs) -> int:
    """Submit and return the first new id."""
    result = ok(cli(db, "submit", *args, **kwargs))
    return int(result.stdout.strip().split("-")[0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A new, empty queue database, made in this process (init itself is tested below)."""
    path = tmp_path / "queue.sqlite"
    hogdb.create_database(str(path))
    return path


@contextlib.contextmanager
def opened(db: Path):
    database = hogdb.open_database(str(db))
    try:
        yield database
    finally:
        database.close()


def add(db: Path, *commands: str, name: str | None = None) -> int:
    """Set-up through the core, not the CLI under test: submit shell commands, return the first id."""
    with opened(db) as database:
        options = submitting.SubmitOptions(
            name=name, cwd=str(db.parent), environment={"PATH": "/usr/bin:/bin"}
        )
        return submitting.submit(database, [(command, None) for command in commands], options)[0]


def tasks(db: Path) -> list[dict]:
    """What `show --json` prints, read through the core (a subprocess per check is slow)."""
    with opened(db) as database:
        return [dict(zip(queue.TASK_COLUMNS, row, strict=True)) for row in queue.iter_tasks(database)]


def states_of(db: Path) -> dict[int, str]:
    return {task["id"]: task["state"] for task in tasks(db)}


def task_counts(db: Path) -> dict[str, int]:
    with opened(db) as database:
        return queue.status(database).tasks


def detail(db: Path, task_id: int) -> queue.TaskDetail:
    database = hogdb.open_database(str(db))
    try:
        return queue.get_tasks(database, [task_id])[0]
    finally:
        database.close()


def finish(db: Path, exit_codes: dict[int, int]) -> None:
    """Run every waiting task through a fake hog in this process; exit code 0 unless given."""
    database = hogdb.open_database(str(db))
    try:
        hog_id = claims.start_hog(
            database,
            claims.HogInfo("node1", os.getpid(), None, 64, [], 1 << 40, None, 30.0),
        )
        size = Resources(64, 0, 1 << 40)
        request = claims.ClaimRequest(size, size, [], None, True, 1000)
        claimed = claims.exchange(database, hog_id, "node1", [], request, {}).claimed
        now = time.time()
        results = [
            claims.TaskResult(
                task.task_id,
                task.attempt,
                states.REASON_EXITED,
                now - 1,
                now,
                exit_codes.get(task.task_id, 0),
            )
            for task in claimed
        ]
        claims.exchange(database, hog_id, "node1", results, None, {}, finish_reason="idle")
    finally:
        database.close()


def claim_all(db: Path) -> None:
    """Leave every waiting task running on a fake hog."""
    database = hogdb.open_database(str(db))
    try:
        hog_id = claims.start_hog(
            database, claims.HogInfo("node1", os.getpid(), None, 64, [], 1 << 40, None, 3600.0)
        )
        size = Resources(64, 0, 1 << 40)
        request = claims.ClaimRequest(size, size, [], None, True, 1000)
        claims.exchange(database, hog_id, "node1", [], request, {})
    finally:
        database.close()


def write_script(path: Path, text: str) -> Path:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)
    return path


# -- a real hog runs a few tasks once for the whole module ----------------------------------


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """A queue whose tasks a real hog ran to completion, while `wait` watched."""
    folder = tmp_path_factory.mktemp("ran")
    work = folder / "work"
    work.mkdir()
    db = folder / "queue.sqlite"
    ok(cli(db, "init"))
    env = child_env(MY_TEST_VALUE="hello")
    ids = {}
    ids["shell"] = submit(db, 'echo "$MY_TEST_VALUE" | tr a-z A-Z; echo to-stderr >&2', env=env, cwd=work)
    ids["argv"] = submit(db, "--", "printf", "%s|", "a b", 'c"d', "$HOME", "", cwd=work)
    ids["fails"] = submit(db, "echo failing >&2; exit 3", cwd=work)
    ids["signal"] = submit(db, "kill -TERM $$", cwd=work)
    write_script(work / "script.sh", "echo script out\necho script err >&2\n")
    # The first slurm_hog.py's options, before the command: what follows it is the task's.
    ids["old"] = submit(db, "-o", "out.txt", "-e", "err.txt", "./script.sh", cwd=work)
    ids["dashes"] = submit(db, "-c", "2", "echo", "hi", "-c", "2", "-t", "5", cwd=work)
    ids["assign"] = submit(db, "MYVAR=x", "sh", "-c", 'echo "$MYVAR" "$@"', "-", "-l", cwd=work)
    ids["pattern"] = submit(db, "-o", "p-{id}-{attempt}.out", "--name", "pat", "echo patterned", cwd=work)
    hog = start_hog(db, "--idle-timeout", "1s", "--heartbeat", "1s", "--cores", "2")
    try:
        waited = cli(db, "wait", "--poll", "0.2s", timeout=60)
        assert hog.wait(timeout=60) == 0
    finally:
        if hog.poll() is None:
            hog.kill()
            hog.wait()
    return {"db": db, "work": work, "ids": ids, "waited": waited}


def test_hog_ran_every_task_and_wait_reported_the_failure(ran):
    ids = ran["ids"]
    assert ran["waited"].returncode == 1  # one task failed
    assert "Traceback" not in ran["waited"].stderr
    assert states_of(ran["db"]) == {
        ids["shell"]: "done",
        ids["argv"]: "done",
        ids["fails"]: "failed",
        ids["signal"]: "failed",
        ids["old"]: "done",
        ids["pattern"]: "done",
        ids["dashes"]: "done",
        ids["assign"]: "done",
    }


def test_log_prints_a_tasks_stdout_and_stderr(ran):
    db, ids = ran["db"], ran["ids"]
    # The shell string ran through sh, with the submitting shell's environment.
    assert ok(cli(db, "log", str(ids["shell"]))).stdout == "HELLO\n"
    assert ok(cli(db, "log", str(ids["shell"]), "--stderr")).stdout == "to-stderr\n"
    assert ok(cli(db, "log", str(ids["fails"]), "--stderr")).stdout == "failing\n"


def test_exact_argv_reaches_the_program_unchanged(ran):
    assert ok(cli(ran["db"], "log", str(ran["ids"]["argv"]))).stdout == 'a b|c"d|$HOME||'


def test_old_submit_executable_with_output_files(ran):
    work, ids = ran["work"], ran["ids"]
    assert (work / "out.txt").read_text() == "script out\n"
    assert (work / "err.txt").read_text() == "script err\n"
    assert ok(cli(ran["db"], "log", str(ids["old"]))).stdout == "script out\n"
    assert ok(cli(ran["db"], "log", str(ids["old"]), "--stderr")).stdout == "script err\n"


def test_options_end_at_the_first_word_of_the_command(ran):
    db, ids = ran["db"], ran["ids"]
    # Words after the command are the task's, even those that look like submit's options.
    assert ok(cli(db, "log", str(ids["dashes"]))).stdout == "hi -c 2 -t 5\n"
    dashes = detail(db, ids["dashes"])
    assert dashes.cores == 2 and dashes.time_limit_s is None
    # Leading NAME=value words set the task's environment, as in the shell and env.
    assert ok(cli(db, "log", str(ids["assign"]))).stdout == "x -l\n"
    assert detail(db, ids["assign"]).command == 'MYVAR=x sh -c \'echo "$MYVAR" "$@"\' - -l'


def test_submit_ls_dash_l_is_one_task_with_its_flag(db):
    task_id = submit(db, "ls", "-l")
    assert detail(db, task_id).argv == ["ls", "-l"]
    assert_refused(cli(db, "submit", "A=1", "B=2"), "only variable assignments")


def test_output_pattern_placeholders_are_filled(ran):
    task_id = ran["ids"]["pattern"]
    assert (ran["work"] / f"p-{task_id}-1.out").read_text() == "patterned\n"


def test_check_shows_exit_codes_of_finished_tasks(ran):
    ids = ran["ids"]
    rows = cli_json(ran["db"], "check", str(ids["shell"]), str(ids["fails"]), str(ids["signal"]))
    by_id = {row["id"]: row for row in rows}
    assert by_id[ids["signal"]]["state"] == "failed" and by_id[ids["signal"]]["signal"] == 15
    assert by_id[ids["shell"]]["state"] == "done" and by_id[ids["shell"]]["exit_code"] == 0
    assert by_id[ids["fails"]]["state"] == "failed" and by_id[ids["fails"]]["exit_code"] == 3
    assert by_id[ids["fails"]]["attempts"] == 1
    assert by_id[ids["fails"]]["why"] == "failing"  # the last line of its stderr


def test_wait_exit_codes_for_given_ids(ran):
    ids = ran["ids"]
    assert ok(cli(ran["db"], "wait", str(ids["shell"]), str(ids["old"]))).returncode == 0
    failed = cli(ran["db"], "wait", str(ids["fails"]))
    assert failed.returncode == 1 and "did not succeed" in failed.stderr


def test_status_after_the_run(ran):
    status = cli_json(ran["db"], "status")
    assert status["tasks"]["done"] == 6 and status["tasks"]["failed"] == 2
    assert status["tasks"]["waiting"] == 0 and status["tasks"]["running"] == 0
    assert status["hogs"]["finished"] == 1
    assert status["finished_last_minute"] == 8
    assert status["seconds_to_empty"] == 0


def test_show_hogs(ran):
    hogs = cli_json(ran["db"], "show", "-H")
    assert len(hogs) == 1
    assert hogs[0]["state"] == "finished" and hogs[0]["tasks_run"] == 8
    table = ok(cli(ran["db"], "show", "-H")).stdout
    assert table.splitlines()[0].split()[:2] == ["id", "state"] and "finished" in table


def test_show_hogs_filtered_by_hog_state(ran):
    # The first slurm_hog.py's `show -s STATUS -H`: hog states must be accepted with -H.
    assert [h["state"] for h in cli_json(ran["db"], "show", "-s", "finished", "-H")] == ["finished"]
    assert cli_json(ran["db"], "show", "-s", "running", "-H") == []


# -- init ------------------------------------------------------------------------------------


def test_init_creates_owner_only_files(tmp_path):
    db = tmp_path / "queue.sqlite"
    result = ok(cli(db, "init"))
    assert str(db) in result.stdout
    for path in (db, Path(f"{db}.lock")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cli_json(db, "show") == []


def test_init_twice_refuses_and_keeps_the_queue(db):
    add(db, "echo keep me")
    before = snapshot(db)
    assert_refused(cli(db, "init"), "already exists")
    assert snapshot(db) == before
    assert [task["command"] for task in tasks(db)] == ["echo keep me"]


def test_init_with_a_group_shares_with_it(tmp_path):
    group = grp.getgrgid(os.getgid()).gr_name
    db = tmp_path / "queue.sqlite"
    ok(cli(db, "init", "--group", group))
    for path in (db, Path(f"{db}.lock")):
        info = path.stat()
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid()


def test_init_with_an_unknown_group_creates_nothing(tmp_path):
    db = tmp_path / "queue.sqlite"
    assert_refused(cli(db, "init", "--group", "no-such-group-hopefully"), "no group")
    assert list(tmp_path.iterdir()) == []


def test_init_in_a_missing_folder(tmp_path):
    assert_refused(cli(tmp_path / "nowhere" / "queue.sqlite", "init"), "does not exist")


# -- submit ----------------------------------------------------------------------------------


def test_submit_one_shell_string_is_stored_whole(db):
    command = 'echo a | tr a b > "x y.txt" && ls *.txt'
    result = ok(cli(db, "submit", command))
    assert result.stdout.strip() == "1"
    assert [task["command"] for task in tasks(db)] == [command]
    assert detail(db, 1).argv is None  # runs through /bin/sh -c


def test_submit_double_dash_keeps_arguments_exactly(db):
    words = ["prog", "a b", "", "'quoted'", "$HOME", "*", "-c"]
    ok(cli(db, "submit", "--", *words))
    stored = detail(db, 1)
    assert stored.argv == words
    assert shlex.split(stored.command) == words
    # One word after -- is a program name, not a shell string.
    ok(cli(db, "submit", "--", "echo hi"))
    assert detail(db, 2).argv == ["echo hi"]


def test_submit_several_words_without_double_dash_keeps_them_apart(db):
    ok(cli(db, "submit", "printf", "%s\\n", "a b"))
    assert detail(db, 1).argv == ["printf", "%s\\n", "a b"]


def test_submit_file_skips_blank_lines_and_comments(db, tmp_path):
    task_file = tmp_path / "tasks.txt"
    task_file.write_text(
        "# header\necho one\n\n   \n  # indented comment\necho 'two  spaces'\r\n  echo three\n"
    )
    result = ok(cli(db, "submit", "--file", str(task_file)))
    assert result.stdout.strip() == "1-3"
    assert [task["command"] for task in tasks(db)] == ["echo one", "echo 'two  spaces'", "  echo three"]
    assert all(detail(db, n).argv is None for n in (1, 2, 3))


def test_submit_file_from_stdin(db):
    lines = "".join(f"echo {n}\n" for n in range(100))
    result = ok(cli(db, "submit", "--file", "-", "--json", input=lines))
    assert json.loads(result.stdout) == {"first": 1, "last": 100, "count": 100}
    assert [task["command"] for task in tasks(db)] == [f"echo {n}" for n in range(100)]


def test_submit_file_shares_one_submission_and_environment(db, tmp_path):
    task_file = tmp_path / "tasks.txt"
    task_file.write_text("".join(f"echo {n}\n" for n in range(300)))
    ok(cli(db, "submit", "--file", str(task_file), "--name", "batch"))
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    counts = connection.execute(
        "SELECT (SELECT count(*) FROM submissions), (SELECT count(*) FROM environments)"
    ).fetchall()
    connection.close()
    assert counts == [(1, 1)]


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (b"echo 1\necho 2\necho \xff\xfe bad\necho 4\n", 3),
        (b"echo 1\n# fine\n\necho a\x00b\n", 4),
        (b"".join(b"echo %d\n" % n for n in range(5000)) + b"echo \xc3\x28\n", 5001),
    ],
    ids=["invalid-utf8", "nul", "late"],
)
def test_submit_file_with_a_bad_line_names_it_and_adds_nothing(db, tmp_path, content, line):
    add(db, "echo before")
    task_file = tmp_path / "tasks.txt"
    task_file.write_bytes(content)
    before = snapshot(db)
    result = cli(db, "submit", "--file", str(task_file))
    assert_refused(result, f"line {line}")
    assert "nothing was added" in result.stderr
    assert snapshot(db) == before
    assert [task["id"] for task in tasks(db)] == [1]
    assert submit(db, "echo after") == 2  # no id was used up


def test_submit_bad_line_from_stdin(db):
    result = cli(db, "submit", "--file", "-", input="echo ok\necho \0 nul\n")
    assert_refused(result, "line 2")
    assert tasks(db) == []


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_submit_unreadable_file(db, tmp_path, kind):
    path = tmp_path / "nope.txt"
    if kind == "folder":
        path.mkdir()
    before = snapshot(db)
    assert_refused(cli(db, "submit", "--file", str(path)), "cannot read --file")
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        ([""], "empty"),
        (["   "], "empty"),
        (["--", ""], "empty"),
        ([], "nothing to submit"),
    ],
    ids=["empty", "blank", "empty-program", "nothing"],
)
def test_submit_empty_command_is_refused(db, args, phrase):
    before = snapshot(db)
    assert_refused(cli(db, "submit", *args), phrase)
    assert snapshot(db) == before


def test_submit_file_with_only_comments_adds_nothing(db, tmp_path):
    task_file = tmp_path / "tasks.txt"
    task_file.write_text("# nothing\n\n# here\n")
    before = snapshot(db)
    assert_refused(cli(db, "submit", "--file", str(task_file)), "no command")
    assert snapshot(db) == before


def test_submit_command_and_file_together_is_refused(db, tmp_path):
    task_file = tmp_path / "tasks.txt"
    task_file.write_text("echo 1\n")
    assert_refused(cli(db, "submit", "--file", str(task_file), "echo 2"), "either")
    assert tasks(db) == []


def test_submit_stores_every_option(db, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = ok(
        cli(
            db,
            "submit",
            "-c",
            "2",
            "-g",
            "1",
            "--mem",
            "4G",
            "-t",
            "1-02:03:04",
            "--priority",
            "7",
            "--retries",
            "3",
            "--name",
            "sim",
            "-o",
            "o/{id}.out",
            "-e",
            "e/{id}.{attempt}.err",
            "--cwd",
            str(work),
            "--json",
            "--",
            "./simulate",
            "--seed",
            "7",
        )
    )
    assert json.loads(result.stdout) == {"first": 1, "last": 1, "count": 1}
    (shown,) = tasks(db)
    assert (shown["cores"], shown["gpus"], shown["priority"], shown["name"]) == (2, GPU_UNITS, 7, "sim")
    assert shown["state"] == "waiting" and shown["attempt"] == 0
    stored = detail(db, 1)
    assert stored.mem_bytes == 4 << 30
    assert stored.time_limit_s == 86400 + 2 * 3600 + 3 * 60 + 4
    assert stored.max_retries == 3
    assert stored.stdout_pattern == "o/{id}.out"
    assert stored.stderr_pattern == "e/{id}.{attempt}.err"
    assert stored.cwd == str(work)
    assert stored.argv == ["./simulate", "--seed", "7"]
    assert [row["state"] for row in cli_json(db, "check", "1")] == ["waiting"]


def test_submit_defaults(db, tmp_path):
    work = tmp_path / "here"
    work.mkdir()
    ok(cli(db, "submit", "true", cwd=work))
    stored = detail(db, 1)
    assert (stored.cores, stored.gpus, stored.priority, stored.max_retries) == (1, 0, 0, 0)
    assert stored.mem_bytes is None and stored.time_limit_s is None and stored.name is None
    assert stored.cwd == str(work)  # where submit ran


def test_submit_captures_the_environment_but_not_the_allocation(db):
    env = child_env(MY_SETTING="42", SLURM_JOB_ID="999", CUDA_VISIBLE_DEVICES="0,1")
    ok(cli(db, "submit", "true", env=env))
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    (variables,) = connection.execute("SELECT variables FROM environments").fetchall()[0]
    connection.close()
    captured = decode_environment(variables)
    assert captured["MY_SETTING"] == "42"
    assert "SLURM_JOB_ID" not in captured and "CUDA_VISIBLE_DEVICES" not in captured


# -- bad option values -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["-t", "1:2:3:4"], "--time"),
        (["-t", "soon"], "--time"),
        (["-t", "0"], "--time"),
        (["-t", "9" * 5000], "--time"),
        (["--mem", "12X"], "--mem"),
        (["--mem", "0"], "--mem"),
        (["--mem", "9" * 400], "--mem"),
        (["-c", "0"], "--cores"),
        (["-c", "two"], "--cores"),
        (["-g", "-1"], "--gpus"),
        (["--retries", "-1"], "--retries"),
        (["--priority", "abc"], "--priority"),
        (["--priority", "99999999999999999999"], "--priority"),
        (["-o", "{jobid}.out"], "placeholder"),
        (["-e", "{id"], "--stderr"),
        (["--cwd", "/no/such/folder"], "folder"),
    ],
)
def test_submit_bad_option_values_are_refused(db, args, phrase):
    add(db, "echo existing")
    before = snapshot(db)
    assert_refused(cli(db, "submit", *args, "echo new"), phrase)
    assert snapshot(db) == before


# -- check -----------------------------------------------------------------------------------


def test_check_known_ids_exits_zero(db):
    add(db, "echo 1", "echo 2", "echo 3")
    ok(cli(db, "cancel", "2"))
    rows = cli_json(db, "check", "1-3")
    assert [(row["id"], row["state"]) for row in rows] == [(1, "waiting"), (2, "cancelled"), (3, "waiting")]
    table = ok(cli(db, "check", "1,3")).stdout
    assert table.splitlines()[0].split()[:2] == ["id", "state"]
    assert len(table.strip().splitlines()) == 3


def test_check_unknown_ids_fails_but_prints_the_known_ones(db):
    add(db, "true")
    result = cli(db, "check", "1", "99", "--json")
    assert_refused(result, "no task 99")
    assert [row["id"] for row in json.loads(result.stdout)] == [1]
    table = cli(db, "check", "1", "98")
    assert table.returncode != 0 and "98" in table.stderr
    assert table.stdout.splitlines()[1].split()[:2] == ["1", "waiting"]


def test_check_bad_id_word(db):
    assert_refused(cli(db, "check", "abc"), "bad task id")


def test_check_running_task_with_a_cancel_request(db):
    add(db, "sleep 100")
    claim_all(db)
    ok(cli(db, "cancel", "1"))
    (row,) = cli_json(db, "check", "1")
    assert row["state"] == "running" and row["why"] == "cancel requested"


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_ids(db):
    add(db, *(f"echo {n}" for n in range(6)))
    result = ok(cli(db, "cancel", "1", "3-4"))
    assert "cancelled 3" in result.stdout
    assert states_of(db) == {
        1: "cancelled",
        2: "waiting",
        3: "cancelled",
        4: "cancelled",
        5: "waiting",
        6: "waiting",
    }


def test_cancel_all(db):
    add(db, "echo 1", "echo 2", "echo 3")
    add(db, "echo running")
    finish(db, {})  # all four done
    add(db, "echo 5", "echo 6")
    ok(cli(db, "cancel", "--all"))
    assert set(states_of(db).items()) == {
        (1, "done"),
        (2, "done"),
        (3, "done"),
        (4, "done"),
        (5, "cancelled"),
        (6, "cancelled"),
    }


def test_cancel_by_state(db):
    add(db, "echo 1", "echo 2")
    claim_all(db)
    add(db, "echo 3")
    ok(cli(db, "cancel", "--state", "waiting"))
    assert states_of(db) == {1: "running", 2: "running", 3: "cancelled"}
    ok(cli(db, "cancel", "--state", "running"))
    assert states_of(db) == {1: "running", 2: "running", 3: "cancelled"}  # their hog kills them
    assert [row["why"] for row in cli_json(db, "check", "1-2")] == ["cancel requested"] * 2


def test_cancel_unknown_id_cancels_nothing(db):
    add(db, "echo 1", "echo 2")
    before = snapshot(db)
    assert_refused(cli(db, "cancel", "1", "99"), "no task 99")
    assert snapshot(db) == before
    assert states_of(db) == {1: "waiting", 2: "waiting"}


def test_cancel_needs_exactly_one_selection(db):
    add(db, "true")
    assert_refused(cli(db, "cancel"), "what to cancel")
    assert_refused(cli(db, "cancel", "1", "--all"), "what to cancel")
    assert states_of(db) == {1: "waiting"}


def test_cancel_an_ended_task_leaves_it_alone(db):
    add(db, "true")
    finish(db, {})
    result = ok(cli(db, "cancel", "1"))
    assert "already done" in result.stderr
    assert states_of(db) == {1: "done"}


# -- show ------------------------------------------------------------------------------------


@pytest.fixture
def mixed(db):
    """Tasks 1-3 done/failed/done (name a), 4-5 waiting (name b), 6 cancelled."""
    add(db, "echo 1", "exit 1", "echo 3", name="a")
    finish(db, {2: 1})
    add(db, "echo 4", "echo 5", name="b")
    add(db, "echo 6")
    with opened(db) as database:
        queue.cancel(database, [6])
    return db


def test_show_filters(mixed):
    assert [t["id"] for t in cli_json(mixed, "show", "-s", "waiting")] == [4, 5]
    assert [t["id"] for t in cli_json(mixed, "show", "-s", "done", "-s", "failed")] == [1, 2, 3]
    assert [t["id"] for t in cli_json(mixed, "show", "--state", "ended")] == [1, 2, 3, 6]
    assert [t["id"] for t in cli_json(mixed, "show", "-s", "active")] == [4, 5]
    assert [t["id"] for t in cli_json(mixed, "show", "--name", "a")] == [1, 2, 3]
    assert [t["id"] for t in cli_json(mixed, "show", "--limit", "2")] == [1, 2]
    assert [t["id"] for t in cli_json(mixed, "show", "--name", "b", "--limit", "1")] == [4]
    assert cli_json(mixed, "show", "--name", "nobody") == []


def test_show_json_fields(mixed):
    rows = cli_json(mixed, "show")
    assert [row["state"] for row in rows] == ["done", "failed", "done", "waiting", "waiting", "cancelled"]
    assert rows[1]["exit_code"] == 1 and rows[1]["command"] == "exit 1"
    assert rows[0]["host"] == "node1" and rows[3]["host"] is None


def test_show_csv(mixed):
    text = ok(cli(mixed, "show", "--format", "csv")).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["id"] for row in rows] == ["1", "2", "3", "4", "5", "6"]
    assert rows[1]["state"] == "failed" and rows[1]["exit_code"] == "1"
    assert rows[3]["exit_code"] == ""  # None is an empty cell


def test_show_table(mixed):
    text = ok(cli(mixed, "show", "--format", "table")).stdout
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["id", "state"]
    assert len(lines) == 7
    assert lines[2].split()[:2] == ["2", "failed"] and lines[2].endswith("exit 1")
    assert ok(cli(mixed, "show")).stdout == text  # table is the default


def test_show_json_flag_equals_format_json(mixed):
    assert ok(cli(mixed, "show", "--json")).stdout == ok(cli(mixed, "show", "--format", "json")).stdout


def test_show_bad_values(mixed):
    assert_refused(cli(mixed, "show", "-s", "sleeping"), "sleeping")
    assert_refused(cli(mixed, "show", "--limit", "0"), "--limit")
    assert_refused(cli(mixed, "show", "--format", "xml"), "xml")


# -- status ----------------------------------------------------------------------------------


def test_status_counts(mixed):
    status = cli_json(mixed, "status")
    assert status["tasks"] == {
        "held": 0,
        "blocked": 0,
        "waiting": 2,
        "running": 0,
        "done": 2,
        "failed": 1,
        "timeout": 0,
        "cancelled": 1,
    }
    assert status["hogs"]["finished"] == 1 and status["hogs"]["running"] == 0
    assert status["finished_last_minute"] == 4  # three run, one cancelled
    assert status["seconds_to_empty"] == pytest.approx(30)  # 2 to go at 4 per minute
    text = ok(cli(mixed, "status")).stdout
    assert "waiting" in text and "2 tasks to go" in text


def test_status_of_an_empty_queue(db):
    status = cli_json(db, "status")
    assert set(status["tasks"].values()) == {0}
    assert "empty" in ok(cli(db, "status")).stdout


# -- retry -----------------------------------------------------------------------------------


def test_retry_failed(mixed):
    result = ok(cli(mixed, "retry", "--failed"))
    assert "requeued 1" in result.stdout
    assert states_of(mixed)[2] == "waiting"
    assert states_of(mixed)[1] == "done" and states_of(mixed)[6] == "cancelled"
    assert task_counts(mixed)["waiting"] == 3 and task_counts(mixed)["failed"] == 0
    assert cli_json(mixed, "check", "2")[0]["exit_code"] is None


def test_retry_ids(mixed):
    result = ok(cli(mixed, "retry", "6", "1"))
    assert "requeued 1" in result.stdout
    assert "task 1 is done" in result.stderr
    assert states_of(mixed)[6] == "waiting" and states_of(mixed)[1] == "done"


def test_retry_unknown_id_changes_nothing(mixed):
    before = snapshot(mixed)
    assert_refused(cli(mixed, "retry", "2", "99"), "no task 99")
    assert snapshot(mixed) == before
    assert_refused(cli(mixed, "retry"), "what to retry")
    assert_refused(cli(mixed, "retry", "2", "--failed"), "what to retry")
    assert snapshot(mixed) == before


# -- cleanup ---------------------------------------------------------------------------------


def test_cleanup_deletes_ended_tasks_only(mixed):
    claim_all(mixed)  # 4 and 5 running
    add(mixed, "echo 7")  # waiting
    result = ok(cli(mixed, "cleanup"))
    assert "deleted 4" in result.stdout
    assert states_of(mixed) == {4: "running", 5: "running", 7: "waiting"}
    assert task_counts(mixed)["done"] == 0 and task_counts(mixed)["running"] == 2


def test_cleanup_by_state(mixed):
    ok(cli(mixed, "cleanup", "--state", "done"))
    assert sorted(states_of(mixed)) == [2, 4, 5, 6]
    ok(cli(mixed, "cleanup", "-s", "failed", "-s", "cancelled"))
    assert sorted(states_of(mixed)) == [4, 5]


@pytest.mark.parametrize("state", ["waiting", "running"])
def test_cleanup_refuses_active_states(mixed, state):
    before = snapshot(mixed)
    assert_refused(cli(mixed, "cleanup", "--state", state), f"'{state}' is not one of 'done'")
    offered = ok(cli(mixed, "cleanup", "--help")).stdout.split("--state")[1].split("Only tasks in")[0]
    assert state not in offered and "done" in offered
    assert snapshot(mixed) == before


def test_cleanup_older_than(db):
    add(db, "echo 1", "echo 2", "echo 3")
    database = hogdb.open_database(str(db))
    queue.cancel(database, [1, 2], now=time.time() - 7200)  # ended two hours ago
    database.close()
    ok(cli(db, "cancel", "3"))  # ended now
    assert "deleted 0" in ok(cli(db, "cleanup", "--older-than", "3h")).stdout
    assert "deleted 2" in ok(cli(db, "cleanup", "--older-than", "1h")).stdout
    assert states_of(db) == {3: "cancelled"}
    assert_refused(cli(db, "cleanup", "--older-than", "yesterday"), "--older-than")


# -- log -------------------------------------------------------------------------------------


def test_log_of_a_task_that_has_not_run(db):
    add(db, "true")
    assert_refused(cli(db, "log", "1"), "not run yet")
    assert_refused(cli(db, "log", "99"), "no task 99")


# -- wait ------------------------------------------------------------------------------------


def test_wait_all_done_exits_zero(db):
    add(db, "echo 1", "echo 2")
    finish(db, {})
    result = ok(cli(db, "wait"))
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_wait_some_failed_exits_one(mixed):
    ok(cli(mixed, "cancel", "--all"))
    result = cli(mixed, "wait")
    assert result.returncode == 1 and "did not succeed" in result.stderr
    assert "Traceback" not in result.stderr


def test_wait_gives_up_after_max_wait_on_a_queue_no_hog_serves(db):
    add(db, "true")
    result = cli(db, "wait", "--max-wait", "1s", "--poll", "0.2s")
    assert result.returncode == 3
    assert states_of(db) == {1: "waiting"}


def test_wait_returns_when_the_last_task_ends(db):
    add(db, "true")
    waiter = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "wait", "--poll", "0.1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        # Once it has the database open it is past start-up; one more command's round trip later
        # it must still be waiting, since a task waits.
        watched = psutil.Process(waiter.pid)
        wait_until(
            lambda: waiter.poll() is not None or any(f.path == str(db) for f in watched.open_files()),
            timeout=30,
            message="wait to open the database",
        )
        ok(cli(db, "status"))
        assert waiter.poll() is None
        finish(db, {})
        wait_until(lambda: waiter.poll() is not None, timeout=30, message="wait to return")
        assert waiter.returncode == 0
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.communicate()


def test_wait_unknown_id(db):
    assert_refused(cli(db, "wait", "5"), "no task 5")


# -- where the database is -------------------------------------------------------------------


def _hog(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hog", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60
    )


def test_slurm_hog_db_is_used_without_db(db, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = child_env(SLURM_HOG_DB=str(db))
    ok(_hog("submit", "echo via env", env=env, cwd=elsewhere))
    assert [task["command"] for task in tasks(db)] == ["echo via env"]
    assert not (elsewhere / "jobs.sqlite").exists()
    # --db wins over the variable.
    other = tmp_path / "other.sqlite"
    ok(cli(other, "init"))
    ok(_hog("--db", str(other), "submit", "echo via flag", env=env, cwd=elsewhere))
    assert [task["command"] for task in tasks(other)] == ["echo via flag"]
    assert len(tasks(db)) == 1


def test_jobs_sqlite_in_the_current_folder_by_default(tmp_path):
    env = child_env()
    ok(_hog("init", env=env, cwd=tmp_path))
    assert (tmp_path / "jobs.sqlite").exists()
    ok(_hog("submit", "true", env=env, cwd=tmp_path))
    assert len(tasks(tmp_path / "jobs.sqlite")) == 1


def test_old_spellings(db, tmp_path):
    env = child_env()
    # --db and --timeout before the command, or after it.
    ok(_hog("--db", str(db), "--timeout", "5", "submit", "echo 1", env=env, cwd=tmp_path))
    ok(_hog("submit", "--db", str(db), "--timeout", "5", "echo 2", env=env, cwd=tmp_path))
    assert [row["state"] for row in cli_json(db, "check", "1")] == ["waiting"]  # check JOBID
    ok(cli(db, "cancel", "1"))  # cancel JOBID
    assert states_of(db) == {1: "cancelled", 2: "waiting"}
    assert "deleted 1" in ok(cli(db, "cleanup")).stdout  # cleanup
    assert states_of(db) == {2: "waiting"}
    assert [t["id"] for t in cli_json(db, "show", "-s", "waiting")] == [2]  # show -s STATUS
    assert cli_json(db, "show", "-H") == []  # show -H


# -- a database that cannot be used ----------------------------------------------------------

READING_AND_WRITING = [
    ["submit", "true"],
    ["show"],
    ["status"],
    ["check", "1"],
    ["cancel", "1"],
    ["retry", "--failed"],
    ["cleanup"],
    ["wait"],
    ["log", "1"],
]


@pytest.mark.parametrize("args", READING_AND_WRITING, ids=lambda a: a[0])
def test_no_database_suggests_init_and_creates_nothing(tmp_path, args):
    path = tmp_path / "missing.sqlite"
    assert_refused(cli(path, *args), "init")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READING_AND_WRITING[:5], ids=lambda a: a[0])
def test_a_file_that_is_not_sqlite_is_refused(tmp_path, args):
    path = tmp_path / "notes.txt"
    path.write_text("dear diary\n" * 500)
    assert_refused(cli(path, *args), "not a slurm-hog")
    assert path.read_text() == "dear diary\n" * 500


@pytest.mark.parametrize("args", [["submit", "true"], ["show"], ["status"]], ids=lambda a: a[0])
def test_an_sqlite_file_that_is_not_ours_is_refused(tmp_path, args):
    path = tmp_path / "other.sqlite"
    connection = apsw.Connection(str(path))
    connection.execute("CREATE TABLE tasks(id INTEGER PRIMARY KEY, state TEXT)")
    connection.close()
    before = snapshot(path)
    assert_refused(cli(path, *args), "not a slurm-hog")
    assert snapshot(path) == before


@pytest.mark.parametrize(
    "args", [["submit", "true"], ["show"], ["status"], ["cancel", "--all"]], ids=lambda a: a[0]
)
def test_a_newer_schema_is_refused(db, args):
    add(db, "echo old")
    connection = apsw.Connection(str(db))
    connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    connection.close()
    before = snapshot(db)
    result = cli(db, *args)
    assert_refused(result, "newer")
    assert "upgrade" in result.stderr
    assert snapshot(db) == before


def test_a_folder_instead_of_a_database(tmp_path):
    assert_refused(cli(tmp_path, "show"), "folder")


@contextlib.contextmanager
def immutable(path: Path):
    """`chattr +i`: read-only even for root, who ignores permission bits."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make a file read-only for root")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def make_read_only(path: Path):
    """chmod for a normal user; root ignores the mode, so chattr +i for root."""
    if os.geteuid() == 0:
        with immutable(path):
            yield
        return
    mode = path.stat().st_mode
    path.chmod(0o400 if path.is_file() else 0o500)
    try:
        yield
    finally:
        path.chmod(stat.S_IMODE(mode))


def test_a_read_only_database_is_refused_for_writes_and_still_read(db):
    add(db, "echo 1")
    before = snapshot(db)
    with make_read_only(db):
        result = cli(db, "submit", "echo 2")
        assert_refused(result, "read-only")
        assert_refused(cli(db, "cancel", "--all"), "read-only")
        assert [task["id"] for task in tasks(db)] == [1]  # reading still works
    assert snapshot(db) == before


def test_a_folder_that_is_not_writable_is_refused_with_a_message_that_says_so(db):
    add(db, "echo 1")
    before = snapshot(db)
    with make_read_only(db.parent):
        result = cli(db, "submit", "echo 2")
        assert result.returncode != 0 and "Traceback" not in result.stderr
        # The journal cannot be created beside the database: the fix is a writable folder.
        assert "writable" in result.stderr or "read-only" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(db) == before


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root only), unmounted afterwards."""
    folder = tmp_path / "small"
    folder.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)
    return filler


def test_a_full_disk_is_refused_and_adds_nothing(small_disk, tmp_path):
    db = small_disk / "queue.sqlite"
    ok(cli(db, "init"))
    add(db, "echo before")
    filler = fill(small_disk)
    before = snapshot(db)
    task_file = tmp_path / "big.txt"
    task_file.write_text("".join(f"echo {'x' * 80} {n}\n" for n in range(4000)))
    result = cli(db, "submit", "--file", str(task_file))
    assert_refused(result, "full")
    assert snapshot(db) == before
    filler.unlink()
    assert [task["command"] for task in tasks(db)] == ["echo before"]
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    connection.close()
    assert submit(db, "echo after") == 2


# -- what a new user trips on ------------------------------------------------------------------


def test_retry_of_a_done_task_says_why_nothing_was_requeued(mixed):
    before = snapshot(mixed)
    result = cli(mixed, "retry", "1")
    assert_refused(result, "nothing requeued: task 1 is done")
    assert snapshot(mixed) == before


def test_check_names_what_is_wrong_with_an_id(db):
    assert_refused(cli(db, "check", "1-1000000000"), "spans 1,000,000,000 ids")
    assert_refused(cli(db, "check", "0"), "ids start at 1")
    assert_refused(cli(db, "check", "9-3"), "from low to high")


def test_show_states_are_case_insensitive_and_task_and_hog_states_apart(mixed):
    assert [t["id"] for t in cli_json(mixed, "show", "-s", "Done")] == [1, 3]
    assert_refused(cli(mixed, "show", "-s", "finished"), "is a hog state: add -H")
    assert_refused(cli(mixed, "show", "-H", "-s", "done"), "not a hog state")
    assert cli_json(mixed, "show", "-H", "-s", "FINISHED")


@pytest.mark.parametrize(
    "args, phrase",
    [
        (("show", "--json", "--format", "csv"), "--json and --format csv disagree"),
        (("show", "-H", "--name", "x"), "--name picks tasks"),
    ],
)
def test_conflicting_options_are_refused(mixed, args, phrase):
    assert_refused(cli(mixed, *args), phrase)


def test_a_byte_order_mark_is_not_part_of_the_first_command(db, tmp_path):
    task_file = tmp_path / "tasks.txt"
    task_file.write_bytes("\ufeffecho first\necho second\n".encode())
    submit(db, "--file", str(task_file))
    assert [task["command"] for task in tasks(db)] == ["echo first", "echo second"]


def test_wait_max_wait_ends_on_time_with_a_message(db):
    add(db, "sleep 100")
    started = time.monotonic()
    result = cli(db, "wait", "--max-wait", "0:01", "--poll", "1m")
    assert result.returncode == 3
    assert "gave up after 1.0s (--max-wait): 1 task not ended" in result.stderr
    assert time.monotonic() - started < 50, "it waited for the next poll"


def test_ctrl_c_during_wait_exits_130(db):
    add(db, "sleep 100")
    process = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "wait", "--poll", "0.1s"],
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    # In its loop once it holds the queue open.
    wait_until(lambda: str(db) in [f.path for f in psutil.Process(process.pid).open_files()])
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "the tasks go on" in stderr and "interrupted" in stderr and "Traceback" not in stderr


def test_log_of_a_task_whose_output_was_not_kept_says_so(db):
    task_id = submit(db, "-o", "/dev/null", "-e", "/dev/null", "true")
    finish(db, {})
    result = ok(cli(db, "log", str(task_id)))
    assert result.stdout == "" and "submitted with -o /dev/null" in result.stderr


def test_duration_options_say_what_a_bare_number_means():
    for command in ("submit", "wait", "cleanup"):
        help_text = " ".join(ok(cli("unused.sqlite", command, "--help")).stdout.split())
        assert "a bare number is minutes" in help_text, command


def test_slurm_hog_py_runs_from_a_clone_with_any_python(tmp_path):
    # -S: no site-packages, as with a system Python that lacks click and apsw.
    result = subprocess.run(
        [sys.executable, "-S", str(REPO / "slurm_hog.py"), "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("slurm-hog "), result.stderr
    # A copy without a .venv beside it says what to do, in one line.
    shutil.copy(REPO / "slurm_hog.py", tmp_path)
    shutil.copytree(REPO / "hog", tmp_path / "hog")
    result = subprocess.run(
        [sys.executable, "-S", str(tmp_path / "slurm_hog.py"), "--version"], capture_output=True, text=True
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "lacks the package" in result.stderr and "install.sh" in result.stderr


def test_shell_completion_knows_the_lazy_commands():
    env = child_env(_SLURM_HOG_COMPLETE="bash_complete", COMP_WORDS="slurm-hog su", COMP_CWORD="1")
    result = subprocess.run([sys.executable, "-m", "hog"], capture_output=True, text=True, env=env)
    assert "submit" in result.stdout.split("\n")[0].split(",")


def test_submit_from_a_slow_pipe_does_not_hold_the_queue(db):
    """`submit --file -` reads its pipe to the end before it takes the queue's lock: a slow
    producer must not stop every hog and every other command meanwhile."""
    feeder = subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "submit", "--file", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        feeder.stdin.write("echo first\n")
        feeder.stdin.flush()
        other = cli(db, "--timeout", "3", "submit", "echo other")
        assert other.returncode == 0, other.stderr
        assert feeder.poll() is None, "the first submit ended before its input did"
        feeder.stdin.write("echo second\n")
    finally:
        feeder.stdin.close()
        feeder.wait(timeout=30)
    assert feeder.returncode == 0
    assert sorted(task["command"] for task in tasks(db)) == ["echo first", "echo other", "echo second"]
