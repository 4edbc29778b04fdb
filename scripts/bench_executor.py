"""HogExecutor against submitit and ProcessPoolExecutor: trivial calls through `map`.

    .venv/bin/python scripts/bench_executor.py            10,000 calls (submitit: 200, see below)
    .venv/bin/python scripts/bench_executor.py --quick    200 calls (submitit: 40)

- hog: `HogExecutor(db, local_hogs=1).map(trivial, range(N))` on a new queue, the hog taking the
  machine's cores; from the call of map to the last result.
- submitit: `LocalExecutor.map_array` in its own venv (bench-results/tmp/submitit-venv, made here
  with `pip install submitit`: the project does not depend on it). Its local executor starts every
  job at once (two Python processes each, no limit), so it is given the calls in chunks of
  CHUNK, each awaited before the next, and run on fewer calls (`--submitit-calls`, half before
  the hog's run and half after): its rate is compared, per call.
- ProcessPoolExecutor(max_workers=cores).map: no durability at all, the floor.

Per-call costs, each measured alone: pickle (cloudpickle of one call), submit (the calls file and
the transaction, per call of a 1,000-call batch), spawn (`python -S` with the package's folder on
its path, as the worker starts), unpickle (the worker's imports and loading its call, beyond
spawn), result (the worker's store imports and its one transaction, beyond spawn); claim and the
hog's own work are what remains of the CPU time per call (wall time x cores).
"""

import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common

CHUNK = 100
SUBMITIT_SCRIPT = """
import sys, time, submitit
def trivial(x):
    return x + 1
n, chunk, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
executor = submitit.LocalExecutor(folder=folder)
executor.update_parameters(timeout_min=30)
started = time.monotonic()
total = 0
for first in range(0, n, chunk):
    jobs = executor.map_array(trivial, range(first, min(n, first + chunk)))
    total += sum(job.result() for job in jobs)
assert total == sum(range(1, n + 1)), total
print(time.monotonic() - started)
"""


def trivial(x: int) -> int:
    return x + 1


def run_hog(calls: int, folder: str) -> float:
    import hog

    db = os.path.join(folder, "queue.sqlite")
    common.remove_queue(db)
    hog.Queue(db, create=True).close()
    with hog.HogExecutor(db, local_hogs=1) as executor:
        started = time.monotonic()
        total = sum(executor.map(trivial, range(calls)))
        elapsed = time.monotonic() - started
    assert total == sum(range(1, calls + 1)), total
    return elapsed


def run_pool(calls: int) -> float:
    cores = len(os.sched_getaffinity(0))
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=cores) as pool:
        total = sum(pool.map(trivial, range(calls)))
    assert total == sum(range(1, calls + 1))
    return time.monotonic() - started


def submitit_python(folder: str) -> str:
    venv = os.path.join(common.RESULTS, "tmp", "submitit-venv")
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "submitit"], check=True
        )
    return python


def run_submitit(calls: int, folder: str) -> float:
    python = submitit_python(folder)
    result = subprocess.run(
        [python, "-c", SUBMITIT_SCRIPT, str(calls), str(CHUNK), os.path.join(folder, "submitit")],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.split()[-1])


def per_call_costs(folder: str) -> dict[str, float]:
    """Seconds per call of each part, measured alone."""
    import hog
    from hog.api.calls import pickled_call, write_calls
    from hog.store.calls import record_result

    db = os.path.join(folder, "costs.sqlite")
    common.remove_queue(db)
    queue = hog.Queue(db, create=True)
    calls = 1000
    started = time.perf_counter()
    records = [pickled_call((trivial, (x,), {})) for x in range(calls)]
    pickle_s = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    _, rows = write_calls(queue.db.files, records, sys.executable)
    ids = queue.submit_tasks(rows, hog.TaskOptions())
    submit_s = (time.perf_counter() - started) / calls
    started = time.perf_counter()
    for task_id in ids[:200]:
        record_result(queue.db, task_id, 1, True, b"x", None)  # the same transaction, if no row
    transaction_s = (time.perf_counter() - started) / 200

    def start_cost(code: str, *flags: str) -> float:
        samples = []
        for _ in range(30):
            begun = time.perf_counter()
            subprocess.run([sys.executable, *flags, "-c", code], check=True)
            samples.append(time.perf_counter() - begun)
        return statistics.median(samples)

    argv = queue.task(ids[0]).argv
    # As the worker starts: without site, the package's folder on the path.
    boot = argv[3].split("from hog")[0]
    spawn_s = start_cost(boot, "-S")
    load = f"from hog.api.worker import load_call; load_call({argv[4]!r}, {argv[5]}, {argv[6]})"
    unpickle_s = start_cost(boot + load, "-S") - spawn_s
    loaded_s = start_cost(boot + load + "; import hog.store.calls, hog.store.db", "-S")
    result_s = loaded_s - unpickle_s - spawn_s + transaction_s
    queue.close()
    return {
        "pickle": pickle_s,
        "submit": submit_s,
        "spawn": spawn_s,
        "unpickle": unpickle_s,
        "result": result_s,
    }


def main() -> None:
    args = common.parse_args(
        __doc__.split("\n")[0],
        lambda parser: (
            parser.add_argument("--calls", type=int, help="calls through hog and the pool (default 10000)"),
            parser.add_argument("--submitit-calls", type=int, help="calls through submitit (default 200)"),
        ),
    )
    calls = args.calls or (200 if args.quick else 10_000)
    submitit_calls = args.submitit_calls or (40 if args.quick else 200)
    folder = common.workdir("executor")
    common.byte_compile()
    # submitit's calls in two halves, before and after the hog's: the machine's load drifts.
    half = submitit_calls // 2
    submitit_s = run_submitit(half, folder)
    print(f"submitit: {half} calls in {submitit_s:.1f} s", flush=True)
    hog_s = run_hog(calls, folder)
    print(f"hog: {calls} calls in {hog_s:.1f} s", flush=True)
    pool_s = run_pool(calls)
    later_s = run_submitit(submitit_calls - half, folder)
    print(f"submitit: {submitit_calls - half} calls in {later_s:.1f} s", flush=True)
    submitit_s += later_s
    costs = per_call_costs(folder)
    cores = len(os.sched_getaffinity(0))
    hog_per_call = hog_s / calls
    submitit_per_call = submitit_s / submitit_calls
    pool_per_call = pool_s / calls
    common.print_table(
        ("runner", "calls", "seconds", "ms per call", "calls/s"),
        [
            ("hog (1 local hog)", calls, hog_s, 1000 * hog_per_call, calls / hog_s),
            (
                "submitit LocalExecutor",
                submitit_calls,
                submitit_s,
                1000 * submitit_per_call,
                1 / submitit_per_call,
            ),
            ("ProcessPoolExecutor", calls, pool_s, 1000 * pool_per_call, calls / pool_s),
        ],
    )
    measured = sum(costs.values())
    # Wall time per call times the cores is the CPU time each call took; what the parts measured
    # alone do not explain is the claim, the hog's start of the task and its bookkeeping.
    costs["claim and hog (rest)"] = max(0.0, hog_per_call * cores - measured)
    print()
    common.print_table(("part", "ms per call"), [(part, 1000 * seconds) for part, seconds in costs.items()])
    speedup = submitit_per_call / hog_per_call
    durability = hog_per_call / pool_per_call
    summary = [
        common.goal_line(
            "executor: hog map vs submitit map_array, per call", speedup, "x", ">= 5x", speedup >= 5
        ),
        common.goal_line(
            "executor: hog map vs ProcessPoolExecutor (durability)", durability, "x slower", "report", None
        ),
    ]
    common.print_goals(summary)
    common.save(
        "executor",
        args.quick,
        {
            "calls": calls,
            "submitit_calls": submitit_calls,
            "seconds": {"hog": hog_s, "submitit": submitit_s, "pool": pool_s},
            "per_call_s": costs,
        },
        summary,
    )


if __name__ == "__main__":
    main()
