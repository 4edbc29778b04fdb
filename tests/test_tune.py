"""`tune`: runs samples of a workload at several shares on hogs of its own and picks the best,
leaving the rest of the queue as it was."""

import json
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli, tasks

CONTENDED = REPO / "tests" / "contended_task.py"
# Alone 0.5 s; two on a GPU 0.6 s each, three 1.25 s, four 2 s: two per GPU is the fastest.
SLOWDOWNS = ("1", "1.2", "2.5", "4")


def tune(db: Path, *args: str):
    return cli(db, "tune", *args, timeout=600)


def test_tune_picks_two_per_gpu_for_a_workload_that_runs_best_two_to_a_gpu(db: Path, tmp_path: Path) -> None:
    assert cli(db, "kind", "set", "train", "--gpus", "1", "--time", "10m", "-o", "/dev/null").returncode == 0
    line = f"{sys.executable} {CONTENDED} {tmp_path} 0.5 {' '.join(SLOWDOWNS)}\n"
    assert cli(db, "submit", "--kind", "train", "--file", "-", input=line * 30).returncode == 0
    assert cli(db, "submit", "--name", "other", "--gpus", "1", "true").returncode == 0
    result = tune(
        db, "--kind", "train", "--gpus", "2", "--cores", "8", "--per-gpu", "1,2,4", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["best"] == "2 per GPU", report
    assert [s["option"] for s in report["settings"]] == ["--gpus 1", "--gpus 0.5", "--gpus 0.25"]
    assert all(s["done"] == s["tasks"] == 8 for s in report["settings"])
    assert all(s["peak_rss_kib"] for s in report["settings"])
    # Ready to paste: the kind's other options kept, as setting a kind replaces them all.
    assert report["kind_set"].endswith("kind set train --gpus 0.5 --stdout /dev/null --time 10m")
    # The samples ran and were recorded like any task; the rest of the queue is as it was.
    listed = tasks(db)
    done = [t for t in listed if t["state"] == "done"]
    assert sorted(t["gpus"] for t in done) == sorted([1] * 8 + [0.5] * 8 + [0.25] * 8)
    waiting = [t for t in listed if t["state"] == "waiting"]
    assert len(waiting) == 7 and all(t["gpus"] == 1 for t in waiting)
    assert [t["id"] for t in waiting][-1] == 31 and waiting[-1]["name"] == "other"
    # Pasted, the line sets the kind for the next submits.
    pasted = cli(db, *report["kind_set"].split()[3:])
    assert pasted.returncode == 0, pasted.stderr
    assert "--gpus 0.5" in cli(db, "kind", "list").stdout


def test_tune_tries_cores_per_task_for_cpu_work(db: Path) -> None:
    # Twice the cores make a task only 1.33 times as fast: one core each does more per second.
    line = 'if [ "$HOG_CORES" = 1 ]; then sleep 0.5; else sleep 0.375; fi\n'
    assert (
        cli(db, "submit", "--name", "prep", "-o", "/dev/null", "--file", "-", input=line * 10).returncode == 0
    )
    result = tune(
        db, "--name", "prep", "--cores-per-task", "1,2", "--cores", "2", "--gpus", "0", "--sample", "4"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2:] == ["best: 1 core per task", f"  slurm-hog --db {db} kind set prep --cores 1"]
    assert "2 cores per task" in result.stdout
    states = [t["state"] for t in tasks(db)]
    assert states.count("done") == 8 and states.count("waiting") == 2


def test_a_sample_that_fails_has_no_best_and_says_so(db: Path) -> None:
    assert (
        cli(
            db, "submit", "--name", "broken", "-o", "/dev/null", "--file", "-", input="false\n" * 4
        ).returncode
        == 0
    )
    result = tune(
        db, "--name", "broken", "--cores-per-task", "1,2", "--cores", "2", "--gpus", "0", "--sample", "2"
    )
    assert result.returncode == 1
    assert "best: none" in result.stdout
    assert [t["state"] for t in tasks(db)] == ["failed"] * 4


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], ["--name NAME or --kind KIND"]),
        (["--name", "x", "--kind", "y"], ["--name NAME or --kind KIND"]),
        (["--kind", "nope"], ["no kind 'nope'"]),
        (["--name", "absent"], ["no task of name 'absent' waits"]),
        (["--name", "w", "--per-gpu", "0,2"], ["--per-gpu", "1 to 16"]),
        (["--name", "w", "--per-gpu", "17"], ["--per-gpu"]),
        (["--name", "w", "--per-gpu", "2,2"], ["twice"]),
        (["--name", "w", "--cores-per-task", "a"], ["--cores-per-task"]),
        (["--name", "w", "--sample", "0"], ["--sample"]),
        (["--name", "w", "--gpus", "0,0"], ["--gpus"]),
        (["--name", "w", "--format", "xml"], ["--format"]),
    ],
)
def test_bad_tune_input_is_one_clear_line_and_runs_nothing(
    db: Path, args: list[str], words: list[str]
) -> None:
    assert cli(db, "submit", "--name", "w", "--gpus", "0.5", "true").returncode == 0
    result = tune(db, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    (task,) = tasks(db)
    assert (task["state"], task["gpus"]) == ("waiting", 0.5)
