"""What the user sees of blocked and held tasks (cancel, status) and TOML workflow files,
through the CLI as typed."""

import json
import sys
from pathlib import Path

import pytest
from helpers import child_env, cli, cli_json, states_of


def submit(db: Path, *args: str) -> list[int]:
    result = cli(db, "submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout)
    return list(range(ids["first"], ids["last"] + 1))


def test_cancel_says_what_it_cancelled_by_state(db: Path) -> None:
    (parent,) = submit(db, "true")
    blocked = submit(db, "--after", str(parent), "--array", "1-3", "true")
    held = submit(db, "--hold", "--array", "1-2", "true")
    result = cli(db, "cancel", *map(str, [*blocked, *held]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cancelled 0 waiting, 3 blocked, 2 held, 0 running (their hogs kill them)"
    assert cli(db, "cancel", str(parent)).stdout.strip() == (
        "cancelled 1 waiting, 0 running (their hogs kill them)"
    )
    assert set(states_of(db).values()) == {"cancelled"}


def test_status_counts_blocked_and_held_tasks_as_still_to_go(db: Path) -> None:
    (parent,) = submit(db, "--hold", "true")
    submit(db, "--after", str(parent), "--array", "1-3", "true")
    submit(db, "true")
    text = cli(db, "status").stdout
    assert "5 tasks to go (3 waiting for their parents, 1 held until released)" in text, text
    assert "the queue is empty" not in text
    assert cli_json(db, "status")["seconds_to_empty"] is None  # no rate yet, but not empty

    only_held = db.parent / "held.sqlite"
    assert cli(only_held, "init").returncode == 0
    submit(only_held, "--bundle", "later", "true")
    text = cli(only_held, "status").stdout
    assert "1 task to go (1 held until released)" in text and "the queue is empty" not in text


TOML_FLOW = """
[[tasks]]
name = "prep"
command = "echo prep"
mem = "1G"

[[tasks]]
name = "run"
argv = ["echo", "run"]
cores = 2
after = ["prep"]

[[tasks]]
name = "sum"
command = "echo sum"
after_any = ["run"]
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is Python 3.11+")
def test_a_toml_workflow_file_gives_the_same_graph_as_json(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(TOML_FLOW)
    ids = submit(db, "--workflow", str(path))
    found = cli_json(db, "deps", "prep", "--format", "json")
    names = {task["id"]: task["name"] for task in found["tasks"]}
    edges = {(names[edge["parent"]], names[edge["child"]], edge["kind"]) for edge in found["edges"]}
    assert edges == {("prep", "run", "ok"), ("run", "sum", "any")}
    assert len(ids) == 3 and states_of(db)[ids[1]] == "blocked"

    bad = tmp_path / "bad.toml"
    bad.write_text('[[tasks]]\nname = "a"\ncommand = \n')
    result = cli(db, "submit", "--workflow", str(bad))
    assert result.returncode == 2 and "not valid TOML" in result.stderr and "line 3" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    cycle = tmp_path / "cycle.toml"
    cycle.write_text('[[tasks]]\nname = "a"\ncommand = "true"\nafter = ["a"]\n')
    result = cli(db, "submit", "--workflow", str(cycle))
    assert result.returncode == 2 and "a -> a" in result.stderr
    assert len(states_of(db)) == 3


def test_a_toml_workflow_file_without_tomllib_is_refused_with_what_to_do(db: Path, tmp_path: Path) -> None:
    # As on Python 3.10: a module of that name that cannot be imported comes first on the path.
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "tomllib.py").write_text("raise ModuleNotFoundError(\"No module named 'tomllib'\")\n")
    path = tmp_path / "flow.toml"
    path.write_text(TOML_FLOW)
    env = child_env()
    env["PYTHONPATH"] = f"{shadow}:{env['PYTHONPATH']}"
    result = cli(db, "submit", "--workflow", str(path), env=env)
    assert result.returncode == 2, result.stderr
    assert "TOML workflow files need Python 3.11 or newer" in result.stderr and "JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert states_of(db) == {}
