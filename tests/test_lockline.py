"""The lock's line at a thousand hogs (README, "A thousand hogs on a slow filesystem").

Paced hogs close the loop on the waits they see: a long wait in line spaces the next writes
further apart (within the 10-minute bound), short waits ease them back (hog/pilot/pacing.py). A
paced hog claims between its paced writes only when what it holds ahead would run out before the
next one's claim lands (hog/pilot/rounds.py). Through the real rounds and a real queue file.
"""

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import cli

from hog.pilot.background import DatabaseThread
from hog.pilot.ledger import Ledger
from hog.pilot.options import lease_for
from hog.pilot.pacing import TARGET_WAIT_S, Pacing
from hog.pilot.resources import NodeResources
from hog.pilot.rounds import FLUSH_INTERVAL_S, DatabaseRounds
from hog.pilot.walltime import Walltime
from hog.store import claims
from hog.store.beats import LONGEST_WRITE_SPACING_S
from hog.store.db import open_database

GIB = 1 << 30
CORES = 64
TASK_S = 60.0
SIMULATE = Path(__file__).resolve().parents[1] / "scripts" / "simulate.py"


class MeanDraw(random.Random):
    """Every spacing drawn at the mean of its range: the hog's share of the lock."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def paced(hogs: int, hold_s: float, wait_s: float = 0.0) -> Pacing:
    """A hog paced among `hogs`, past its first paced spacing (its phase, drawn otherwise)."""
    pacing = Pacing(lease_s=lease_for(30.0), flush_interval_s=FLUSH_INTERVAL_S, rng=MeanDraw())
    pacing.observe(hold_s=hold_s, wait_s=wait_s)
    pacing.hogs_running = hogs
    pacing.interval_s()  # its first paced spacing: a phase
    pacing.observe(hold_s=hold_s, wait_s=wait_s)  # the next, at the mean of its range...
    pacing.stretch = 1.0  # ... not yet stretched by the waits
    return pacing


def test_long_waits_in_line_space_a_paced_hogs_writes_further_and_short_ones_ease_them_back() -> None:
    pacing = paced(300, hold_s=0.1)
    share_s = pacing.bound_s()  # 300 x 0.1 / 0.6 on average: spacings up to 67 s
    pacing.observe(hold_s=0.1, wait_s=20 * TARGET_WAIT_S)
    assert pacing.bound_s() > 1.9 * share_s
    for _ in range(3):  # twice each, up to the longest spacing over the share (12 times)
        pacing.observe(hold_s=0.1, wait_s=20 * TARGET_WAIT_S)
    assert pacing.bound_s() == LONGEST_WRITE_SPACING_S  # never past the bound
    assert pacing.interval_s() <= LONGEST_WRITE_SPACING_S
    for _ in range(40):
        pacing.observe(hold_s=0.1, wait_s=0.0)
    assert abs(pacing.bound_s() - share_s) < 1e-6  # eased back to the hogs' share, not below


def test_a_hog_alone_or_on_a_fast_disk_writes_as_before_whatever_it_waited() -> None:
    pacing = paced(8, hold_s=0.002)  # 8 hogs, 2 ms commits
    for _ in range(5):
        pacing.observe(hold_s=0.002, wait_s=10.0)
    assert pacing.interval_s() == FLUSH_INTERVAL_S and not pacing.paced


class Holdings:
    """What a hog holds, as a claim sees it: tasks claimed and not started; nothing running."""

    def __init__(self, unstarted: list[claims.ClaimedTask]) -> None:
        self.unstarted = unstarted

    def busy(self) -> list:
        return []

    def any_running(self) -> bool:
        return False


def hog_rounds(db_path: Path) -> DatabaseRounds:
    db = open_database(str(db_path))
    info = claims.HogInfo("node1", os.getpid(), None, CORES, [], 256 * GIB, None, lease_for(30.0))
    hog_id = claims.start_hog(db, info)
    assert hog_id is not None
    _, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    return DatabaseRounds(
        db=db,
        hog_id=hog_id,
        host="node1",
        name=f"hog {hog_id}",
        thread=DatabaseThread(write_fd),
        ledger=Ledger(NodeResources(cores=CORES, gpus=[], mem_bytes=256 * GIB, cpu_ids=None)),
        walltime=Walltime(end_by=None, margin_s=0.0),
        heartbeat_s=30.0,
        timeout_s=60.0,
    )


def first_claim(rounds: DatabaseRounds) -> list[claims.ClaimedTask]:
    """A node-full claimed, then the rounds paced as among a thousand hogs with 60 s tasks whose
    writes wait 20 s in line: a paced write every 167 s, whose claim lands 20 s later."""
    rounds.give_next(time.monotonic(), Holdings([]), claiming=True)
    outcome = rounds.wait_round()
    assert outcome is not None and len(outcome.claimed) == CORES
    rounds.note_duration(TASK_S)
    rounds.pacing = paced(1000, hold_s=0.1, wait_s=20.0)
    rounds.hogs_running = 1000
    assert rounds.pacing.paced
    return outcome.claimed


def test_a_paced_hog_holding_enough_to_last_until_its_next_write_does_not_claim_in_between(db: Path) -> None:
    assert cli(db, "submit", "--array", "1-400", "--", "sleep", "60").returncode == 0
    rounds = hog_rounds(db)
    try:
        node_full = first_claim(rounds)
        # 212 tasks of 60 s on 64 cores: 199 s of work, past the next paced write's claim (187 s),
        # though below half of what a paced hog may hold ahead.
        rounds.give_next(time.monotonic(), Holdings(node_full * 3 + node_full[:20]), claiming=True)
        assert not rounds.claim_in_hand
    finally:
        rounds.thread.close()
        rounds.db.close()


def test_a_paced_hog_whose_tasks_would_run_out_before_its_next_write_claims_at_once(db: Path) -> None:
    assert cli(db, "submit", "--array", "1-400", "--", "sleep", "60").returncode == 0
    rounds = hog_rounds(db)
    try:
        node_full = first_claim(rounds)
        rounds.give_next(time.monotonic(), Holdings(node_full), claiming=True)  # 60 s of work
        assert rounds.claim_in_hand
        outcome = rounds.wait_round()
        assert outcome is not None and outcome.claimed
    finally:
        rounds.thread.close()
        rounds.db.close()


def test_the_simulator_says_why_each_round_was_given_and_the_holders_cpu(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [sys.executable, str(SIMULATE), "run", "--json", str(out), "--hogs", "4", "--cores", "4",
         "--task-s", "0.5", "--measure-s", "3", "--warmup-s", "1", "--processes", "2", "--fs", "local"],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rounds/s by why" in result.stdout
    summary = json.loads(out.read_text())
    assert set(summary["rounds_given_per_s"]) <= {"claim", "top-up", "flush", "cancel-poll", "heal"}
    assert sum(summary["rounds_given_per_s"].values()) > 0
    assert 0 <= summary["lock_held_cpu_mean_s"] <= summary["lock_held_mean_s"] + 0.01
    assert summary["lock_busy_share"] > 0


def test_the_write_cost_benchmark_measures_a_write_of_results_and_claims() -> None:
    script = SIMULATE.parent / "bench_exchange.py"
    result = subprocess.run(
        [sys.executable, str(script), "--tasks", "20", "--queue", "200"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "20 results + 20 claims, queue of 200" in result.stdout and "per claim or result" in result.stdout
    too_small = subprocess.run(
        [sys.executable, str(script), "--tasks", "100", "--queue", "200"], capture_output=True, text=True
    )
    assert too_small.returncode == 2 and "--queue must hold at least 600 tasks" in too_small.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--hogs", "0"], "--hogs: give 1 or more"),
        (["--tasks", "-5"], "--tasks: give 1 or more"),
        (["--reps", "0"], "--reps: give 1 or more"),
        (["--cases", "nfs"], "--cases: include local"),
    ],
)
def test_the_slow_mount_benchmark_refuses_counts_it_cannot_run(
    arguments: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "slowfs.json"
    result = subprocess.run(
        [sys.executable, str(SIMULATE.parent / "bench_slowfs.py"), *arguments, "--json", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()
