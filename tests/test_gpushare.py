"""Shared GPUs: --gpus 0.5 packs tasks onto one device, whole and shared mix without overcommitting
a device, each task sees its device, and the books balance exactly."""

import json
import random
import sys
from pathlib import Path

import pytest
from helpers import REPO, cli, cli_json, start_hog, tasks

from hog import gpushare
from hog.gpushare import GPU_UNITS
from hog.pilot.ledger import Ledger
from hog.pilot.resources import NodeResources
from hog.store.claims import ClaimedTask
from hog.store.packing import Candidate, Resources, choose, place

FAST = ("--heartbeat", "1s", "--idle-timeout", "2s")
TASK = REPO / "tests" / "gpu_share_task.py"


def share_task(root: Path, share: str, group: str, count: int, hold_s: float = 0.2) -> str:
    return f"{sys.executable} {TASK} {root} {share} {group} {count} {hold_s}"


def submit(db: Path, gpus: str, command: str) -> None:
    result = cli(db, "submit", "--gpus", gpus, "-o", "/dev/null", command)
    assert result.returncode == 0, result.stderr


def seen(root: Path) -> dict[int, dict]:
    return {int(path.stem): json.loads(path.read_text()) for path in (root / "seen").glob("*.json")}


def run_hog(db: Path, *args: str) -> None:
    hog = start_hog(db, *FAST, *args)
    assert hog.wait(timeout=240) == 0
    failed = [task for task in tasks(db) if task["state"] != "done"]
    assert not failed, cli(db, "check", *(str(task["id"]) for task in failed)).stdout


def test_half_gpu_tasks_run_four_at_once_two_per_device(db: Path, tmp_path: Path) -> None:
    for _ in range(4):
        submit(db, "0.5", share_task(tmp_path, "0.5", "halves", 4))
    run_hog(db, "--cores", "4", "--gpus", "2")
    runs = seen(tmp_path)
    assert len(runs) == 4
    for run in runs.values():
        # Each sees its one device, under the CUDA and the ROCm/HIP names alike.
        assert run["CUDA_VISIBLE_DEVICES"] == run["ROCR_VISIBLE_DEVICES"] == run["HIP_VISIBLE_DEVICES"]
    devices = sorted(run["CUDA_VISIBLE_DEVICES"] for run in runs.values())
    assert devices == ["0", "0", "1", "1"]


def test_whole_and_shared_gpus_mix_on_one_hog_without_overcommitting_a_device(
    db: Path, tmp_path: Path
) -> None:
    # Together: a whole GPU beside two halves of the other one.
    submit(db, "1", share_task(tmp_path, "1", "mixed", 3))
    for _ in range(2):
        submit(db, "0.5", share_task(tmp_path, "0.5", "mixed", 3))
    # Then a task of both GPUs, which waits for them all to be free.
    submit(db, "2", share_task(tmp_path, "2", "both", 1))
    # Then both devices full of quarters and thirds: seven tasks at once.
    for _ in range(4):
        submit(db, "0.25", share_task(tmp_path, "0.25", "small", 7))
    for _ in range(3):
        submit(db, "1/3", share_task(tmp_path, "1/3", "small", 7))
    run_hog(db, "--cores", "8", "--gpus", "2")
    runs = seen(tmp_path)
    assert len(runs) == 11
    by_group: dict[str, list[str]] = {}
    for run in runs.values():
        by_group.setdefault(run["group"], []).append(run["CUDA_VISIBLE_DEVICES"])
    assert by_group["both"] == ["0,1"]
    assert sorted(by_group["mixed"]) == ["0", "1", "1"]
    assert sorted(by_group["small"]) == ["0"] * 4 + ["1"] * 3
    assert sorted(task["gpus"] for task in tasks(db)) == pytest.approx(
        sorted([1, 0.5, 0.5, 2, 0.25, 0.25, 0.25, 0.25, 1 / 3, 1 / 3, 1 / 3])
    )


@pytest.mark.parametrize("amount", ["0.3", "1.5", "0.33", "1/17", "2/3", "-0.5", "half", "1e-1", "2000"])
def test_a_gpu_amount_that_does_not_pack_is_refused_saying_which_do(db: Path, amount: str) -> None:
    result = cli(db, "submit", "--gpus", amount, "true")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "--gpus" in error
    if amount != "2000":
        assert "1/k" in error and "0.5" in error, error
    assert tasks(db) == []


def test_a_workflow_file_takes_shares_and_refuses_what_does_not_pack(db: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    entries = [
        {"name": "a", "command": "true", "gpus": 0.25},
        {"name": "b", "command": "true", "gpus": "1/3"},
    ]
    good.write_text(json.dumps({"tasks": entries}))
    assert cli(db, "submit", "--workflow", str(good)).returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tasks": [{"name": "c", "command": "true", "gpus": 0.3}]}))
    result = cli(db, "submit", "--workflow", str(bad))
    assert result.returncode == 2 and "1/k" in result.stderr and "Traceback" not in result.stderr
    # Exported and submitted again, the shares come back exactly (1/3 as a float, read back).
    exported = cli(db, "export", "a", "b")
    assert exported.returncode == 0, exported.stderr
    again = tmp_path / "again.sqlite"
    assert cli(again, "init").returncode == 0
    (tmp_path / "export.json").write_text(exported.stdout)
    assert cli(again, "submit", "--workflow", str(tmp_path / "export.json")).returncode == 0, exported.stdout
    assert [task["gpus"] for task in tasks(again)] == [0.25, 1 / 3]
    assert "1/3" in cli(again, "show").stdout


def test_amounts_are_exact_units() -> None:
    assert gpushare.parse_gpus("0.5") == GPU_UNITS // 2
    assert gpushare.parse_gpus("1/3") * 3 == GPU_UNITS
    assert gpushare.parse_gpus(repr(1 / 3)) == GPU_UNITS // 3
    assert gpushare.parse_gpus("0.0625") * 16 == GPU_UNITS
    assert gpushare.parse_gpus("2") == 2 * GPU_UNITS
    assert [gpushare.text(gpushare.parse_gpus(t)) for t in ("0.5", "1/3", "0.2", "3")] == [
        "0.5",
        "1/3",
        "0.2",
        "3",
    ]
    assert gpushare.columns(GPU_UNITS // 4) == (1, 4) and gpushare.columns(2 * GPU_UNITS) == (2, None)


def test_place_keeps_whole_devices_free_for_whole_gpu_tasks() -> None:
    half, quarter = GPU_UNITS // 2, GPU_UNITS // 4
    assert place([GPU_UNITS, half], quarter) == [1]  # the fuller device that holds it
    assert place([GPU_UNITS, GPU_UNITS], half) == [0]
    assert place([half, half], GPU_UNITS) is None  # two halves are not one GPU
    assert place([GPU_UNITS, half, GPU_UNITS], 2 * GPU_UNITS) == [0, 2]
    assert place([quarter, quarter], half) is None


def test_a_claim_takes_no_more_shares_than_the_devices_hold() -> None:
    half = GPU_UNITS // 2
    candidates = [Candidate(key, Resources(1, half, 0), None) for key in range(5)]
    candidates.append(Candidate("whole", Resources(1, GPU_UNITS, 0), None))
    free = Resources(16, 2 * GPU_UNITS, 0)
    # Four halves fill both devices; the fifth and the whole GPU wait.
    chosen = choose(candidates, free, [], now=0, devices=(GPU_UNITS, GPU_UNITS))
    assert [c.key for c in chosen] == [0, 1, 2, 3]
    # One device half taken: the whole GPU takes the other, one half fills the first.
    mixed = [Candidate("whole", Resources(1, GPU_UNITS, 0), None), *candidates[:3]]
    chosen = choose(mixed, Resources(16, GPU_UNITS + half, 0), [], now=0, devices=(half, GPU_UNITS))
    assert [c.key for c in chosen] == ["whole", 0]


def _claimed(task_id: int, units: int) -> ClaimedTask:
    return ClaimedTask(task_id, 1, "true", 1, units, 0, None, 0, "/", None, None, None, None, {})


def test_a_million_shared_claims_leave_the_books_exactly_balanced() -> None:
    """Take and give back a million tasks of every share, and a few whole ones, at random: no
    device ever holds more than one GPU, and at the end every unit is back."""
    node = NodeResources(cores=10**9, cpu_ids=None, gpus=["0", "1", "2", "3"], mem_bytes=1 << 50)
    ledger = Ledger(node)
    amounts = [GPU_UNITS // split for split in range(2, gpushare.MAX_SPLIT + 1)] + [GPU_UNITS, 2 * GPU_UNITS]
    tasks_of = [_claimed(index, units) for index, units in enumerate(amounts)]
    rng = random.Random(16)
    running: list[tuple[ClaimedTask, list[str]]] = []
    cycles = 0
    while cycles < 1_000_000:
        task = tasks_of[rng.randrange(len(tasks_of))]
        if ledger.fits(task, queue_ahead=False):
            gpu_ids = ledger.gpus_for(task)
            ledger.take(task, gpu_ids)
            running.append((task, gpu_ids))
            cycles += 1
        elif running:
            given, gpu_ids = running.pop(rng.randrange(len(running)))
            ledger.give_back(given, gpu_ids)
        if cycles % 100_000 == 0:
            held = sum(task.gpus for task, _ in running)
            assert sum(ledger.devices()) + held == ledger.total.gpus
            assert all(0 <= room <= GPU_UNITS for room in ledger.devices())
    for task, gpu_ids in running:
        ledger.give_back(task, gpu_ids)
    assert ledger.devices() == (GPU_UNITS,) * 4
    assert ledger.free() == ledger.total == Resources(10**9, 4 * GPU_UNITS, 1 << 50)


def test_giving_back_more_than_was_taken_is_refused() -> None:
    ledger = Ledger(NodeResources(cores=4, cpu_ids=None, gpus=["0"], mem_bytes=1 << 30))
    with pytest.raises(RuntimeError, match="GPU 0"):
        ledger.give_back(_claimed(1, GPU_UNITS // 2), ["0"])


def test_show_lists_shares_as_typed(db: Path) -> None:
    submit(db, "0.5", "true")
    submit(db, "1/3", "true")
    assert [task["gpus"] for task in cli_json(db, "show")] == [0.5, 1 / 3]
    table = cli(db, "show").stdout
    assert " 0.5 " in table and " 1/3 " in table
