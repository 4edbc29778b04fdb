#!/usr/bin/env python3
"""The CPU of one hog write under the lock: N results and a claim of N tasks, alone on this machine.

    .venv/bin/python scripts/bench_exchange.py [--tasks 1800] [--queue 2000000] [--model-vfs]

A queue of --queue waiting tasks (an array of `sleep 10`); a hog claims --tasks of them, then
five times over: another hog writes (so that the first one's page cache is stale, as among many
hogs), and the first records the results and starts of what it holds and claims as many again,
in one transaction (claims.exchange). Reports the median CPU of those transactions (the holding
thread's, `time.thread_time`) and per claim or result. --model-vfs runs sqlite through
scripts/latency_vfs.py with no latency, as simulate.py's model-* filesystems do, to see what the
Python VFS adds. Compare with the holder's CPU that simulate.py reports at scale, where a
thousand hogs share this machine's two cores.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

GIB = 1 << 30
CORES = 64
ROUNDS = 5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks",
        type=int,
        default=1800,
        help="results, and as many claims, in each measured write (a count; default 1800)",
    )
    parser.add_argument(
        "--queue",
        type=int,
        default=2_000_000,
        help="waiting tasks the queue starts with (a count; default 2,000,000)",
    )
    parser.add_argument("--model-vfs", action="store_true", help="through latency_vfs, no latency")
    arguments = parser.parse_args()
    if arguments.queue < (ROUNDS + 1) * arguments.tasks:
        parser.error(f"--queue must hold at least {(ROUNDS + 1) * arguments.tasks} tasks")
    with tempfile.TemporaryDirectory(prefix="hog-bench-exchange-") as folder:
        db_path = os.path.join(folder, "queue.sqlite")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for args in (["init"], ["submit", "--array", f"1-{arguments.queue}", "--", "sleep", "10"]):
            subprocess.run([sys.executable, "-m", "hog", "--db", db_path, *args], env=env, check=True)
        if arguments.model_vfs:
            import latency_vfs

            latency_vfs.install({"metadata_ms": 0.0, "fsync_ms": 0.0, "lock_ms": 0.0})
        cpu_s = exchanges(db_path, arguments.tasks)
    median = statistics.median(cpu_s)
    print(
        f"{arguments.tasks} results + {arguments.tasks} claims, queue of {arguments.queue:,}"
        f"{' (model VFS)' if arguments.model_vfs else ''}: {median * 1000:.1f} ms of CPU under the lock"
        f" (median of {ROUNDS}), {median * 1e6 / (2 * arguments.tasks):.1f} us per claim or result"
    )
    return 0


def exchanges(db_path: str, tasks: int) -> list[float]:
    from hog.pilot.options import lease_for
    from hog.store import claims
    from hog.store.db import open_database
    from hog.store.packing import Resources

    db, other = open_database(db_path), open_database(db_path)
    info = claims.HogInfo("node1", os.getpid(), None, CORES, [], 256 * GIB, None, lease_for(30.0))
    hog_id, other_id = claims.start_hog(db, info), claims.start_hog(other, info)
    assert hog_id is not None and other_id is not None
    request = claims.ClaimRequest(
        free=Resources(tasks, 0, 256 * GIB * tasks),
        total=Resources(CORES, 0, 256 * GIB),
        busy=[],
        seconds_left=None,
        unlimited_allowed=True,
        limit=tasks,
    )
    environments: dict[int, dict[str, str]] = {}
    held = claims.exchange(db, hog_id, "node1", [], request, environments).claimed
    cpu_s: list[float] = []
    for _ in range(ROUNDS):
        claims.exchange(other, other_id, "node1", [], None, {})  # another hog's write
        now = time.time()
        results = [claims.TaskResult(t.task_id, t.attempt, "exited", now - 9, now, exit_code=0) for t in held]
        starts = [claims.TaskStart(t.task_id, t.attempt, now - 10) for t in held]
        began = time.thread_time()
        held = claims.exchange(db, hog_id, "node1", results, request, environments, starts=starts).claimed
        cpu_s.append(time.thread_time() - began)
        assert len(held) == tasks
    db.close()
    other.close()
    return cpu_s


if __name__ == "__main__":
    sys.exit(main())
