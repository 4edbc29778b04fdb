"""Dependencies between tasks, run by real hogs: blocked children released as parents end,
cascades of cancels, re-arming by retry, lost parents, concurrent submitters."""

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env, cli, cli_json, holds_for, start_hog, states_of, task_counts, wait_until

FAST = ("--heartbeat", "1s", "--idle-timeout", "2s")


def submit(db: Path, *args: str) -> list[int]:
    result = cli(db, "submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout)
    return list(range(ids["first"], ids["last"] + 1))


def step(log: Path, name: str, then: str = "true") -> str:
    """A command that notes its start and end in `log`, and ends as `then` does."""
    return f"echo start {name} >> {log}; sleep 0.2; echo end {name} >> {log}; {then}"


def order(log: Path) -> list[str]:
    return log.read_text().split("\n")


def ran_after(log: Path, child: str, parent: str) -> bool:
    lines = order(log)
    return lines.index(f"end {parent}") < lines.index(f"start {child}")


def run_hog(db: Path, *args: str, timeout: float = 90) -> int:
    hog = start_hog(db, *FAST, *args)
    try:
        return hog.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        hog.kill()
        raise


def dump(db: Path) -> list[str]:
    connection = sqlite3.connect(db)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def refused(db: Path, *args: str, says: str) -> None:
    """A bad submit: one line naming the problem, exit 2, the database unchanged."""
    before = dump(db)
    result = cli(db, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert dump(db) == before


def reason(db: Path, task_id: int) -> str | None:
    connection = sqlite3.connect(db)
    try:
        return connection.execute("SELECT reason FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]
    finally:
        connection.close()


# -- graphs run by real hogs -----------------------------------------------------------------


def test_a_diamond_runs_each_task_after_its_parents(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    (top,) = submit(db, "--name", "top", step(log, "top"))
    (left,) = submit(db, "--after", "top", step(log, "left"))
    (right,) = submit(db, "--after", str(top), step(log, "right"))
    (bottom,) = submit(db, "--after", f"{left},{right}", step(log, "bottom"))
    assert states_of(db) == {top: "waiting", left: "blocked", right: "blocked", bottom: "blocked"}
    assert task_counts(db)["blocked"] == 3
    assert run_hog(db, "--cores", "2") == 0
    assert set(states_of(db).values()) == {"done"}
    for child, parent in [("left", "top"), ("right", "top"), ("bottom", "left"), ("bottom", "right")]:
        assert ran_after(log, child, parent), order(log)


def test_a_chain_runs_in_order(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    previous = submit(db, step(log, "0"))
    for number in range(1, 5):
        previous = submit(db, "--after-ok", str(previous[0]), step(log, str(number)))
    assert run_hog(db, "--cores", "2") == 0
    assert [line for line in order(log) if line.startswith("start")] == [f"start {n}" for n in range(5)]
    assert set(states_of(db).values()) == {"done"}


def test_fan_out_and_fan_in_through_a_name(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    (prep,) = submit(db, "--name", "prep", step(log, "prep"))
    sweep = [submit(db, "--name", "sweep", "--after", "prep", step(log, f"s{n}"))[0] for n in range(6)]
    (summary,) = submit(db, "--after", "sweep", step(log, "summary"))
    assert run_hog(db, "--cores", "2") == 0
    assert set(states_of(db).values()) == {"done"}
    for n in range(6):
        assert ran_after(log, f"s{n}", "prep")
        assert ran_after(log, "summary", f"s{n}")
    assert sweep == list(range(prep + 1, summary))


def test_after_any_runs_after_a_failure_and_after_ok_is_cancelled(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    (broken,) = submit(db, step(log, "broken", "false"))
    (cleanup,) = submit(db, "--after-any", str(broken), step(log, "cleanup"))
    (analysis,) = submit(db, "--after", str(broken), step(log, "analysis"))
    (report,) = submit(db, "--after", str(analysis), step(log, "report"))
    assert run_hog(db) == 0
    assert states_of(db) == {broken: "failed", cleanup: "done", analysis: "cancelled", report: "cancelled"}
    assert ran_after(log, "cleanup", "broken")
    assert "start analysis" not in order(log)
    assert reason(db, analysis) == f"parent {broken} failed"
    assert reason(db, report) == f"parent {analysis} was cancelled: task {broken} failed"
    assert cli_json(db, "check", str(analysis))[0]["why"] == f"parent {broken} failed"


def test_retry_of_a_failed_parent_re_arms_what_its_failure_cancelled(db: Path, tmp_path: Path) -> None:
    log, flag = tmp_path / "log", tmp_path / "fixed"
    (first,) = submit(db, step(log, "first", f"test -f {flag}"))
    (second,) = submit(db, "--after", str(first), step(log, "second"))
    (third,) = submit(db, "--after", str(second), step(log, "third"))
    (other,) = submit(db, step(log, "other"))
    assert run_hog(db) == 0
    assert states_of(db) == {first: "failed", second: "cancelled", third: "cancelled", other: "done"}
    flag.touch()
    result = cli(db, "retry", str(first))
    assert result.returncode == 0, result.stderr
    assert states_of(db) == {first: "waiting", second: "blocked", third: "blocked", other: "done"}
    assert reason(db, third) is None
    assert run_hog(db) == 0
    assert set(states_of(db).values()) == {"done"}
    assert ran_after(log, "third", "second") and ran_after(log, "second", "first")


def test_cancelling_a_parent_cancels_its_descendants_and_retry_re_arms_them(db: Path) -> None:
    (parent,) = submit(db, "--hold", "true")
    (child,) = submit(db, "--after", str(parent), "true")
    (grandchild,) = submit(db, "--after", str(child), "true")
    assert cli(db, "cancel", str(parent)).returncode == 0
    assert states_of(db) == {parent: "cancelled", child: "cancelled", grandchild: "cancelled"}
    assert reason(db, child) == f"parent {parent} was cancelled"
    assert task_counts(db)["cancelled"] == 3 and task_counts(db)["blocked"] == 0
    assert cli(db, "retry", str(parent)).returncode == 0
    assert states_of(db) == {parent: "waiting", child: "blocked", grandchild: "blocked"}
    assert run_hog(db) == 0
    assert set(states_of(db).values()) == {"done"}


def test_a_parent_lost_with_its_hog_keeps_its_child_blocked_until_the_new_attempt_ends(
    db: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    (parent,) = submit(db, f"echo start parent $HOG_ATTEMPT >> {log}; sleep 3; echo end parent >> {log}")
    (child,) = submit(db, "--after", str(parent), step(log, "child"))
    victim = start_hog(db, *FAST)
    wait_until(lambda: log.exists() and "start parent 1" in log.read_text(), message="parent started")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    healer = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "10s")
    wait_until(lambda: "start parent 2" in log.read_text(), timeout=60, message="second attempt")
    assert states_of(db)[child] == "blocked"
    assert healer.wait(timeout=90) == 0
    assert states_of(db) == {parent: "done", child: "done"}
    assert ran_after(log, "child", "parent")


def test_children_submitted_while_their_parent_ends_are_never_stuck(db: Path, tmp_path: Path) -> None:
    (parent,) = submit(db, "sleep 1")
    hog = start_hog(db, *FAST)
    wait_until(lambda: states_of(db)[parent] == "running", message="parent running")
    # Four submitters race with the parent's end: each adds children one at a time.
    script = (
        "import subprocess, sys\n"
        "for _ in range(6):\n"
        "    subprocess.run([sys.executable, '-m', 'hog', '--db', sys.argv[1], 'submit', '--after',"
        " sys.argv[2], 'true'], check=True, capture_output=True)\n"
    )
    submitters = [
        subprocess.Popen([sys.executable, "-c", script, str(db), str(parent)], env=child_env())
        for _ in range(4)
    ]
    assert [submitter.wait(timeout=120) for submitter in submitters] == [0] * 4
    assert hog.wait(timeout=120) == 0
    found = states_of(db)
    assert len(found) == 25
    assert set(found.values()) == {"done"}, found


# -- bad input -------------------------------------------------------------------------------


def test_bad_dependencies_are_refused_and_change_nothing(db: Path) -> None:
    refused(db, "submit", "--after", "7", "true", says="no task 7")
    refused(db, "submit", "--after", "prep", "true", says="no task is named 'prep'")
    (failed,) = submit(db, "false")
    assert run_hog(db) == 0
    refused(db, "submit", "--after", str(failed), "true", says=f"task {failed} failed")
    refused(db, "submit", "--after", "5-3", "true", says="a range goes from low to high")
    assert submit(db, "--after-any", str(failed), "true")
    assert states_of(db)[failed + 1] == "waiting"


@pytest.mark.parametrize("spec", ["5-1", "", "3-9:0", "x"])
def test_arrays_with_empty_or_reversed_ranges_are_refused(db: Path, spec: str) -> None:
    refused(db, "submit", "--array", spec, "true", says="--array")


def test_status_counts_blocked_and_held(db: Path) -> None:
    (held,) = submit(db, "--hold", "true")
    submit(db, "--after", str(held), "true")
    counts = task_counts(db)
    assert counts["held"] == 1 and counts["blocked"] == 1
    table = cli(db, "status").stdout
    assert "held" in table and "blocked" in table
    assert holds_for(lambda: states_of(db)[held] == "held", 0.2)


# -- held bundles and arrays -----------------------------------------------------------------


def test_a_held_bundle_runs_only_once_released(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    seeds = submit(db, "--bundle", "seed", "--array", "1-3", f"echo seed {{index}} >> {log}")
    (after,) = submit(db, "--bundle", "seed", "--after", "1-3", f"echo after >> {log}")
    (loose,) = submit(db, "--hold", "--name", "loose", "true")
    assert set(states_of(db).values()) == {"held"}
    assert task_counts(db)["held"] == 5
    assert run_hog(db) == 0
    assert not log.exists()
    result = cli(db, "release", "--bundle", "seed")
    assert result.returncode == 0 and "released 4 held tasks" in result.stdout
    assert states_of(db) == {**dict.fromkeys(seeds, "waiting"), after: "blocked", loose: "held"}
    assert run_hog(db) == 0
    assert order(log)[-2] == "after"
    assert cli(db, "release", "loose").returncode == 0
    assert states_of(db)[loose] == "waiting"
    refused(db, "release", "--bundle", "nothing", says="no task in bundle 'nothing'")
    refused(db, "release", "77", says="no task 77")
    # Released already: nothing to do is said, with a non-zero exit.
    again = cli(db, "release", "loose")
    assert again.returncode == 1 and "nothing released" in again.stderr and "Traceback" not in again.stderr


def test_array_and_each_line_fill_placeholders_and_variables(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ids = submit(
        db,
        "--array",
        "0-6:3",
        "-o",
        f"{out}/a{{index}}.txt",
        "--",
        "sh",
        "-c",
        "echo $HOG_ARRAY_INDEX {index}",
    )
    entries = tmp_path / "entries"
    entries.write_text("one two\n\nthree's\n")
    lines = submit(db, "--each-line", str(entries), "-o", f"{out}/e{{id}}.txt", 'echo "$HOG_ENTRY|" {entry}')
    assert len(ids) == 3 and len(lines) == 2
    assert run_hog(db) == 0
    for index in (0, 3, 6):
        assert (out / f"a{index}.txt").read_text() == f"{index} {index}\n"
    assert (out / f"e{lines[0]}.txt").read_text() == "one two| one two\n"
    assert (out / f"e{lines[1]}.txt").read_text() == "three's| three's\n"
    assert cli(db, "log", str(ids[1])).stdout == "3 3\n"


def test_each_line_refuses_an_empty_file(db: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n\n")
    refused(db, "submit", "--each-line", str(empty), "true", says="has no lines")


# -- schema ----------------------------------------------------------------------------------


def test_a_schema_1_queue_with_tasks_is_upgraded_in_place(tmp_path: Path) -> None:
    from hog.store import schema
    from hog.store.db import open_database

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(schema.SCHEMA_V1)
    old.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    old.execute("PRAGMA user_version = 1")
    old.execute("INSERT INTO environments(id, variables) VALUES (1, '')")
    old.execute(
        "INSERT INTO submissions(id, submitted_at, cwd, environment_id, name, cores, gpus, max_retries)"
        " VALUES (1, 0, '/', 1, 'old', 1, 0, 0)"
    )
    for task_id, state in [(1, "done"), (2, "failed"), (3, "waiting"), (9, "waiting")]:
        old.execute(
            "INSERT INTO tasks(id, submission_id, command, state) VALUES (?, 1, 'true', ?)", (task_id, state)
        )
    old.execute("INSERT INTO attempts(task_id, attempt, claimed_at, reason) VALUES (1, 1, 0, 'exited')")
    old.execute("DELETE FROM tasks WHERE id = 9")  # cleaned up: its id must never come back
    old.execute("UPDATE state_counts SET tasks = 1 WHERE state IN ('done', 'failed')")
    old.execute("UPDATE state_counts SET tasks = 1 WHERE state = 'waiting'")
    old.commit()
    old.close()
    (tmp_path / "old.sqlite.lock").touch(mode=0o600)
    path.chmod(0o600)
    db = open_database(str(path))
    try:
        assert db.query("PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
        assert db.query("SELECT id, state FROM tasks ORDER BY id") == [
            (1, "done"),
            (2, "failed"),
            (3, "waiting"),
        ]
        assert db.query("SELECT task_id, reason FROM attempts") == [(1, "exited")]
        assert db.query("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'") == [(9,)]
        indexes = {row[0] for row in db.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"tasks_queue", "tasks_hog", "tasks_ended", "dependencies_parent"} <= indexes
        counts = dict(db.query("SELECT state, tasks FROM state_counts"))
        assert counts == {**dict.fromkeys(counts, 0), "done": 1, "failed": 1, "waiting": 1}
        assert {"blocked", "held"} <= set(counts)
        assert db.query("PRAGMA foreign_keys") == [(1,)]
        assert db.query("PRAGMA foreign_key_check") == []
    finally:
        db.close()
    # The upgraded queue works: a new task gets the next id, blocked after an old one.
    (new,) = submit(path, "--after", "3", "true")
    assert new == 10
    assert states_of(path)[new] == "blocked"


# -- workflow files, export, deps ------------------------------------------------------------

WORKFLOW = """{"tasks": [
  {"name": "prep", "command": "echo prep >> LOG", "mem": "1G", "time": "1h"},
  {"name": "left", "argv": ["sh", "-c", "echo left >> LOG"], "cores": 2, "after": ["prep"]},
  {"name": "right", "command": "echo right >> LOG; false", "after": ["prep"]},
  {"name": "sum", "command": "echo sum >> LOG", "after": ["left"], "after_any": ["right"]}
]}
"""


def graph(db: Path, *targets: str) -> dict:
    found = cli_json(db, "deps", *targets, "--format", "json")
    names = {task["id"]: task["name"] for task in found["tasks"]}
    return {(names[edge["parent"]], names[edge["child"]], edge["kind"]) for edge in found["edges"]}


def test_a_workflow_file_runs_and_exports_the_same_graph(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    path = tmp_path / "flow.json"
    path.write_text(WORKFLOW.replace("LOG", str(log)))
    ids = submit(db, "--bundle", "flow", "--workflow", str(path))
    assert len(ids) == 4
    expected = {
        ("prep", "left", "ok"),
        ("prep", "right", "ok"),
        ("left", "sum", "ok"),
        ("right", "sum", "any"),
    }
    assert graph(db, "--bundle", "flow") == expected
    text = cli(db, "deps", "--bundle", "flow").stdout.splitlines()
    assert text[0].startswith(f"{ids[0]} held prep") and text[1].startswith(f"  {ids[1]} held left")
    dot = cli(db, "deps", "prep", "--format", "dot").stdout
    assert dot.startswith("digraph") and f"t{ids[2]} -> t{ids[3]} [style=dashed];" in dot
    downstream = [task["id"] for task in cli_json(db, "show", "--after", str(ids[1]))]
    upstream = [task["id"] for task in cli_json(db, "show", "--before", str(ids[3]))]
    assert downstream == [ids[3]] and upstream == ids[:3]

    exported = cli(db, "export", "--bundle", "flow")
    assert exported.returncode == 0, exported.stderr
    assert "environment" not in exported.stdout
    again = tmp_path / "again.sqlite"
    assert cli(again, "init").returncode == 0
    copy = tmp_path / "copy.json"
    copy.write_text(exported.stdout)
    submit(again, "--workflow", str(copy))
    assert graph(again, "prep") == expected
    first, second = (cli_json(path_, "show") for path_ in (db, again))
    assert [(t["name"], t["cores"], t["command"]) for t in first] == [
        (t["name"], t["cores"], t["command"]) for t in second
    ]
    assert "environment" in cli(db, "export", str(ids[0]), "--environment").stdout

    assert cli(db, "release", "--bundle", "flow").returncode == 0
    assert run_hog(db, "--cores", "2") == 0
    assert states_of(db) == dict(zip(ids, ["done", "done", "failed", "done"], strict=True))
    assert order(log)[0] == "prep" and order(log)[3] == "sum"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('{"tasks": [\n {"name": "a", "command": "x",}\n]}', "not valid JSON at line 2 column"),
        (
            '{"tasks": [\n {"name": "a", "command": "x", "after": ["c"]},\n'
            ' {"name": "b", "command": "x", "after": ["a"]},\n'
            ' {"name": "c", "command": "x", "after": ["b"]}\n]}',
            "cycle, a -> b -> c -> a",
        ),
        ('{"tasks": [\n {"name": "a", "command": "x", "after": ["a"]}\n]}', "cycle, a -> a"),
        (
            '{"tasks": [\n {"name": "a", "command": "x"},\n'
            ' {"name": "b", "command": "x", "after": ["zz"]}\n]}',
            ":3: task 'b' is after 'zz'",
        ),
        (
            '{"tasks": [\n {"name": "a", "command": "x"},\n {"name": "a", "command": "y"}\n]}',
            ":3: the name 'a' is used twice",
        ),
        ('{"tasks": [\n {"name": "a", "command": "x", "cores": 0}\n]}', '"cores" is a whole number'),
        ('{"tasks": []}', "non-empty"),
    ],
)
def test_bad_workflow_files_are_refused_with_their_line(
    db: Path, tmp_path: Path, text: str, says: str
) -> None:
    submit(db, "--name", "before", "true")
    path = tmp_path / "bad.json"
    path.write_text(text)
    refused(db, "submit", "--workflow", str(path), says=says)


def test_a_workflow_step_refused_half_way_adds_nothing(db: Path, tmp_path: Path) -> None:
    (failed,) = submit(db, "false")
    assert run_hog(db) == 0
    path = tmp_path / "flow.json"
    path.write_text('{"tasks": [{"name": "a", "command": "true"}, {"name": "b", "command": "true"}]}')
    refused(db, "submit", "--after", str(failed), "--workflow", str(path), says=f"task {failed} failed")
