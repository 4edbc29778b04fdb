#!/usr/bin/env python3
"""report --html and stats on a million-task queue (issue 17): the page's size and build time.

The queue is made through the store as hogs make it, with simulated clocks: 1,000,000 tasks in
four named arrays (runtimes drawn around 2 s, 10 s, 30 s and 60 s; 1% fail with a stderr tail; 1 in
2,000 is a straggler 20x longer), run by 64 hogs of 32 cores through claims.exchange (256 tasks a
round, each hog's idle sums on its heartbeat); one hog is lost half-way and its tasks go back to
the queue. The bench's own connection writes without fsync (synchronous=OFF): only the making is
sped up, the reading is the same. Then `slurm-hog report --html` and `slurm-hog stats` run as a user
types them, --reps times each. Goals: the page at most 5 MB, built in under 30 s.

    .venv/bin/python scripts/bench_report.py [--quick] [--reps N] [--keep]
"""

import heapq
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_common as bc

from hog.store import claims, states
from hog.store.db import create_database, open_database
from hog.store.packing import Resources
from hog.store.submitting import SubmitOptions
from hog.store.usage import HogUsage
from hog.store.workflows import ArrayTasks, Step, submit_steps

SIZE_GOAL_BYTES = 5 * 1024 * 1024
TIME_GOAL_S = 30.0
NAMES = {"qc": 2.0, "call": 10.0, "align": 30.0, "merge": 60.0}  # median runtime, seconds
HOGS, CORES, ROUND = 64, 32, 256
START = 1_700_000_000.0  # the simulated run's first second (epoch)
LEASE_S = 92.0


def make_queue(db_path: str, tasks: int, hogs: int, seed: int = 17) -> dict:
    """Fill a new queue as real hogs would; returns what was made."""
    rng = random.Random(seed)
    create_database(db_path)
    db = open_database(db_path)
    db.connection.execute("PRAGMA synchronous = OFF")
    per_name = tasks // len(NAMES)
    steps = [
        Step(
            SubmitOptions(
                name=name, cwd="/", environment={}, stdout_pattern="/dev/null", stderr_pattern="/dev/null"
            ),
            ArrayTasks([(f"./{name} {{index}}", None)], range(1, per_name + 1)),
        )
        for name in NAMES
    ]
    submit_steps(db, steps, now=START)
    # Each hog: its id, its slots' next free times (a heap), results not yet written.
    ring: list[tuple[float, int]] = []
    slots: dict[int, list[tuple[float, int]]] = {}  # (free at, slot) heaps
    pending: dict[int, list[claims.TaskResult]] = {}
    launched: dict[int, float] = {}
    environments: dict[int, dict[str, str]] = {}
    lost_hog = None
    for number in range(hogs):
        launch = START + 5 + number * 0.5
        info = claims.HogInfo(f"node{number:03d}", 1000 + number, None, CORES, [], 1 << 37, None, LEASE_S)
        hog_id = claims.start_hog(db, info, now=launch + 2.0)
        assert hog_id is not None
        launched[hog_id] = launch
        slots[hog_id] = [(launch + 2.5, slot) for slot in range(CORES)]
        pending[hog_id] = []
        heapq.heappush(ring, (launch + 2.5, hog_id))
    lose_after = tasks // 2
    claimed_total = 0
    request = claims.ClaimRequest(
        free=Resources(ROUND, 0, 1 << 40), total=Resources(CORES, 0, 1 << 37), busy=[],
        seconds_left=None, unlimited_allowed=True, limit=ROUND,
    )  # fmt: skip
    while ring:
        now, hog_id = heapq.heappop(ring)
        usage = HogUsage(launched[hog_id], CORES * 2.5, CORES * 0.01, CORES * 0.2, 0.0, 0.3)
        if lost_hog is None and claimed_total >= lose_after:
            # This one dies with its tasks: the others' next rounds reap it past its lease.
            lost_hog = hog_id
            claims.set_hog_state(db, hog_id, states.HOG_LOST, "no heartbeat", now=now + LEASE_S)
            continue
        done = claims.exchange(
            db, hog_id, f"node{hog_id:03d}", pending[hog_id], request, environments, now=now, usage=usage
        )
        pending[hog_id] = []
        if not done.claimed:
            end = max(free_at for free_at, _ in slots[hog_id])
            claims.exchange(
                db, hog_id, "", [], None, environments, finish_reason="idle", now=end + 60,
                usage=usage._replace(idle_empty_core_s=CORES * 60.0),
            )  # fmt: skip
            continue
        claimed_total += len(done.claimed)
        free = slots[hog_id]
        for task in done.claimed:
            start, slot = heapq.heappop(free)
            runtime = rng.lognormvariate(0, 0.35) * NAMES[task.name or "qc"]
            if rng.random() < 1 / 2000:
                runtime *= 20  # a straggler
            failed = rng.random() < 0.01
            end = start + runtime
            heapq.heappush(free, (end, slot))
            pending[hog_id].append(
                claims.TaskResult(
                    task.task_id, task.attempt, states.REASON_EXITED, started_at=start, ended_at=end,
                    exit_code=1 if failed else 0, max_rss_kib=int(rng.lognormvariate(12, 0.3)),
                    cpu_user_s=runtime * 0.9, cpu_system_s=runtime * 0.02,
                    stderr_tail=f"{task.name}: input {task.task_id} is corrupt\n" if failed else None,
                    cores=str(slot),
                )
            )  # fmt: skip
        heapq.heappush(ring, (free[0][0], hog_id))
    db.close()
    return {"tasks": per_name * len(NAMES), "hogs": hogs, "lost_hog": lost_hog}


def main() -> None:
    args = bc.parse_args(__doc__.splitlines()[0])
    reps = args.reps or (1 if args.quick else 3)
    bc.byte_compile()
    folder = bc.workdir("report")
    db_path = os.path.join(folder, "million.sqlite")
    tasks, hogs = (20_000, 8) if args.quick else (1_000_000, HOGS)
    started = time.monotonic()
    made = make_queue(db_path, tasks, hogs)
    making_s = time.monotonic() - started
    print(
        f"made {made['tasks']:,} tasks run by {hogs} hogs (hog {made['lost_hog']} lost) in {making_s:.0f} s"
    )
    runs = []
    for rep in range(reps):
        page = os.path.join(folder, f"report-{rep}.html")
        seconds, _, code = bc.timed_run(bc.hog_argv(db_path, "report", "--html", page))
        assert code == 0, f"report exited {code}"
        stats_s, _, code = bc.timed_run(bc.hog_argv(db_path, "stats", "--json"))
        assert code == 0, f"stats exited {code}"
        runs.append({"report_s": seconds, "bytes": os.path.getsize(page), "stats_s": stats_s})
        size_mb = os.path.getsize(page) / 1e6
        print(f"round {rep + 1}: report {seconds:.1f} s, {size_mb:.2f} MB; stats {stats_s:.1f} s")
    report_s = bc.median([run["report_s"] for run in runs])
    size = max(run["bytes"] for run in runs)
    stats_s = bc.median([run["stats_s"] for run in runs])
    bc.print_table(
        ("measure", "value"),
        [("report --html (median s)", report_s), ("page (MB)", size / 1e6), ("stats (median s)", stats_s)],
    )
    summary = [
        bc.goal_line(f"report --html on {made['tasks']:,} tasks", report_s, "s", f"< {TIME_GOAL_S:.0f} s",
                     report_s < TIME_GOAL_S),
        bc.goal_line("report page size", size / 1e6, "MB", "<= 5 MB", size <= SIZE_GOAL_BYTES),
    ]  # fmt: skip
    bc.save("report", args.quick, {"made": made, "making_s": making_s, "runs": runs}, summary)
    bc.print_goals(summary)
    print(f"pages in {folder}")


if __name__ == "__main__":
    main()
