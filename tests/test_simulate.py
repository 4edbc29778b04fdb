"""The scale simulator (scripts/simulate.py) in its small configuration: a smoke test.

Its figures belong to the benchmark (README, "A thousand hogs on a slow filesystem"); here only
that simulated hogs drive the real store code end to end: every hog claims, runs and records
tasks, and the queue's own records agree with what the simulator counted.
"""

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_slowfs import load_slowfs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "simulate.py"


def simulate(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(out.read_text())


def check(summary: dict, hogs: int) -> None:
    assert summary["tasks_per_s"] > 0 and summary["transactions_per_s"] > 0
    assert 0 < summary["utilisation"] <= 1.0
    assert summary["fewest_tasks_per_hog"] > 0, "a simulated hog was starved"
    assert summary["lock_wait_p99_s"] >= summary["lock_wait_p50_s"] >= 0
    assert summary["tasks_per_transaction"] > 0
    assert summary["config"]["hogs"] == hogs


def test_small_simulation_on_a_local_folder(tmp_path: Path) -> None:
    writes = tmp_path / "writes.jsonl"
    summary = simulate(
        tmp_path, "--hogs", "6", "--cores", "4", "--task-s", "0.5", "--measure-s", "3", "--warmup-s", "1",
        "--processes", "2",
        "--fs", "local", "--transactions", str(writes),
    )  # fmt: skip
    check(summary, 6)
    # Every measured write, as the summary counted them.
    kept = [json.loads(line) for line in writes.read_text().splitlines()]
    assert len(kept) == round(summary["transactions_per_s"] * summary["window_s"])
    every_hog = {(process, hog) for process in range(2) for hog in range(3)}  # 6 hogs in 2 workers
    assert {(write["process"], write["hog"]) for write in kept} == every_hog
    waits = sorted(write["wait_s"] for write in kept)
    assert waits[len(waits) // 2] == summary["lock_wait_p50_s"]
    assert all(write["hold_s"] > 0 for write in kept)
    assert sum(write["results"] + write["claimed"] > 0 for write in kept) > len(kept) / 2


# In a fresh interpreter (a full collection also waits for the survivors to reach a quarter of
# the long-lived objects, however many the test process holds): survivors enough for several
# middle-generation collections, then the collections each recorded.
COLLECTIONS = """
import gc, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("simulate", sys.argv[1])
simulate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(simulate)
collector = simulate.CollectorPauses(sys.argv[2] == "full")
threshold = gc.get_threshold()[2]
kept = [[None] for _ in range(200_000)]
gc.collect(1)
collector.close()
pauses = collector.long_pauses
print(json.dumps({"threshold": threshold, "after": gc.get_threshold()[2], "total_s": collector.total_s,
                  "generations": sorted({generation for _, _, generation in pauses})}))
"""


@pytest.mark.skipif(sys.version_info >= (3, 14), reason="Python 3.14's collector is incremental")
@pytest.mark.parametrize("full_collections", [False, True])
def test_workers_skip_full_collections_unless_asked(full_collections: bool) -> None:
    """A full collection walks every object of the process: at a thousand hogs the state of a
    quarter of them, seconds with every hog of the worker stopped."""
    result = subprocess.run(
        [sys.executable, "-c", COLLECTIONS, str(SCRIPT), "full" if full_collections else "young"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["total_s"] > 0  # the young collections, counted
    assert (seen["threshold"] > 1_000_000) != full_collections
    assert seen["after"] == gc.get_threshold()[2]  # put back as it was
    assert (2 in seen["generations"]) == full_collections


def test_small_simulation_on_the_slow_filesystem(tmp_path: Path) -> None:
    problem = load_slowfs().available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the slow filesystem cannot mount: {problem} (CI needs it)")
        pytest.skip(f"the slow filesystem cannot mount: {problem}")
    summary = simulate(
        tmp_path, "--hogs", "4", "--cores", "4", "--task-s", "1", "--measure-s", "3", "--warmup-s", "1",
        "--processes", "2",
        "--fs", "nfs",
    )  # fmt: skip
    check(summary, 4)
    assert summary["fs_counts"]["counts"]["fsync_file"] > 0


def test_a_bad_size_is_refused_with_its_option_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--hogs", "-3", "--folder", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--hogs must be more than 0" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made


@pytest.mark.parametrize("option", ["--json", "--transactions"])
def test_an_output_file_that_cannot_be_written_is_refused_before_the_run(tmp_path: Path, option: str) -> None:
    missing = tmp_path / "no-such-folder" / "out.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "run", "--hogs", "2", option, str(missing), "--folder", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{option}: cannot write in {missing.parent}" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made, no run
