"""Kinds: named submit options stored in the queue, applied by `submit --kind`, overridden by the
options given on its command line."""

from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import cli, cli_json, tasks

from hog.cli.kinds import apply_kind
from hog.gpushare import GPU_UNITS
from hog.store import queue
from hog.store.db import open_database


def details(db: Path) -> list[queue.TaskDetail]:
    database = open_database(str(db))
    try:
        return queue.get_tasks(database, [task["id"] for task in tasks(db)])
    finally:
        database.close()


def kinds(db: Path) -> list[dict]:
    return cli_json(db, "kind", "list")  # type: ignore[return-value]


def test_a_kind_is_set_listed_applied_and_overridden(db: Path) -> None:
    result = cli(
        db, "kind", "set", "train", "--gpus", "0.5", "--time", "2h", "--mem", "16G", "-c", "2", "--name", "tr"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "kind train set: --cores 2 --gpus 0.5 --mem 16G --name tr --time 2h"
    (listed,) = kinds(db)
    assert listed["name"] == "train"
    assert listed["options"] == {"cores": "2", "gpus": "0.5", "mem": "16G", "name": "tr", "time_limit": "2h"}
    assert "--gpus 0.5" in cli(db, "kind", "list").stdout
    # As is, and with --cores and --name given on the command line, which win; -c 1 equals
    # submit's default and still wins: given is given.
    assert cli(db, "submit", "--kind", "train", "true").returncode == 0
    assert (
        cli(db, "submit", "--kind", "train", "-c", "1", "--name", "other", "--gpus", "1", "true").returncode
        == 0
    )
    first, second = details(db)
    assert (first.cores, first.gpus, first.mem_bytes, first.time_limit_s, first.name) == (
        2,
        GPU_UNITS // 2,
        16 << 30,
        7200.0,
        "tr",
    )
    assert (second.cores, second.gpus, second.mem_bytes, second.time_limit_s, second.name) == (
        1,
        GPU_UNITS,
        16 << 30,
        7200.0,
        "other",
    )


def test_setting_a_kind_again_replaces_it_and_delete_removes_it(db: Path) -> None:
    assert cli(db, "kind", "set", "prep", "--cores", "4", "--retries", "2").returncode == 0
    result = cli(db, "kind", "set", "prep", "--cores", "8")
    assert result.stdout.strip() == "kind prep replaced: --cores 8"
    assert [k["options"] for k in kinds(db)] == [{"cores": "8"}]
    assert cli(db, "kind", "set", "other", "-o", "/dev/null").returncode == 0
    deleted = cli(db, "kind", "delete", "prep")
    assert deleted.returncode == 0 and "prep" in deleted.stdout
    assert [k["name"] for k in kinds(db)] == ["other"]


def test_a_kind_applies_to_every_task_of_a_file_and_an_array(db: Path) -> None:
    assert cli(db, "kind", "set", "sweep", "--gpus", "0.25", "--priority", "5").returncode == 0
    assert cli(db, "submit", "--kind", "sweep", "--file", "-", input="true\ntrue\n").returncode == 0
    assert cli(db, "submit", "--kind", "sweep", "--array", "1-2", "echo {index}").returncode == 0
    assert [(t["gpus"], t["priority"]) for t in tasks(db)] == [(0.25, 5)] * 4


def test_a_kind_that_does_not_exist_is_refused_and_nothing_is_submitted(db: Path) -> None:
    assert cli(db, "kind", "set", "train", "--cores", "2").returncode == 0
    result = cli(db, "submit", "--kind", "trian", "true")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "no kind 'trian'" in line and "known: train" in line and "kind set trian" in line
    assert tasks(db) == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["kind", "set", "gpu", "--gpus", "0.3"], ["--gpus", "1/k"]),
        (["kind", "set", "gpu", "--gpus", "1.5"], ["--gpus", "1/k"]),
        (["kind", "set", "slow", "--time", "soon"], ["--time"]),
        (["kind", "set", "big", "--cores", "0"], ["--cores"]),
        (["kind", "set", "empty"], ["sets nothing"]),
        (["kind", "set", "b d", "--cores", "2"], ["bad kind name"]),
        (["kind", "set", "arr", "--array", "1-3"], ["--array"]),
        (["kind", "set", "wf", "--workflow", "x.json"], ["--workflow"]),
        (["kind", "set", "ids", "--after", "3"], ["--after"]),
        (["kind", "set"], ["NAME"]),
        (["kind", "delete", "nope"], ["no kind 'nope'"]),
        (["kind", "delete"], ["NAMES"]),
        (["kind", "list", "--format", "xml"], ["--format"]),
    ],
)
def test_bad_kind_input_is_one_clear_line_and_changes_nothing(
    db: Path, args: list[str], words: list[str]
) -> None:
    assert cli(db, "kind", "set", "keep", "--cores", "3").returncode == 0
    result = cli(db, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert [(k["name"], k["options"]) for k in kinds(db)] == [("keep", {"cores": "3"})]


def test_deleting_several_kinds_is_all_or_none(db: Path) -> None:
    assert cli(db, "kind", "set", "a", "--cores", "2").returncode == 0
    result = cli(db, "kind", "delete", "a", "b")
    assert result.returncode == 2 and "'b'" in result.stderr
    assert [k["name"] for k in kinds(db)] == ["a"]


def test_apply_kind_serves_any_command_and_leaves_out_options_it_lacks(db: Path) -> None:
    """What `run` or the make SHELL call: a command with fewer options than submit."""
    assert cli(db, "kind", "set", "train", "--cores", "4", "--gpus", "0.5", "--time", "1h").returncode == 0
    seen = {}

    @click.command()
    @click.option("-c", "--cores", type=int, default=1)
    @click.option("-t", "--time", "time_limit", default=None)
    @click.option("--kind")
    @click.pass_context
    def run(ctx: click.Context, kind: str | None, **values) -> None:
        database = open_database(str(db))
        try:
            seen.update(apply_kind(ctx, values, kind, database))
        finally:
            database.close()

    result = CliRunner().invoke(run, ["--kind", "train", "-t", "5m"])
    assert result.exit_code == 0, result.output
    assert seen == {"cores": 4, "time_limit": "5m"}
