#!/usr/bin/env python3
"""Does anything grow with the queue? 1,000 against 1,000,000 waiting tasks.

(a) `status` and `show --limit 20` wall time (goal, issue 2: 1M within 1.5x of 1k);
(b) the cost of one claim through the core API, `claims.exchange` taking 1 task per transaction
    (goal, issue 3: 1M within 1.3x of 1k);
(c) a real hog's peak RSS while it works on a 1,000,000-task queue for ~10 s, then drains on
    SIGINT (goal, issue 3: under 60 MiB).

    .venv/bin/python scripts/bench_queue_size.py [--quick]
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

GOAL_CLI = 1.5
GOAL_CLAIM = 1.3
GOAL_RSS_MIB = 60


def main() -> None:
    args = bc.parse_args(__doc__.splitlines()[0])
    small, large = (1_000, 100_000) if args.quick else (1_000, 1_000_000)
    cli_runs = args.reps or (5 if args.quick else 15)
    claim_reps = 3
    claims = 100 if args.quick else 300
    hog_seconds = 3.0 if args.quick else 10.0
    bc.byte_compile()
    folder = bc.workdir("queue_size")
    pristine = {}
    for size in (small, large):
        db = os.path.join(folder, f"pristine-{size}.sqlite")
        task_file = os.path.join(folder, f"tasks-{size}.txt")
        bc.write_lines(task_file, size, "true")
        bc.new_queue(db)
        bc.hog(db, "submit", "--file", task_file)
        os.unlink(task_file)
        pristine[size] = db
    labels = {small: f"{small:,}", large: f"{large:,}"}
    summary = []

    # (a) status and show --limit 20
    commands = {
        "status": ["status"],
        "status --json": ["status", "--json"],
        "show --limit 20": ["show", "--limit", "20"],
        "check (last id)": None,
    }
    walls: dict[tuple[str, int], list[float]] = {}
    plan = [(name, size) for name in commands for size in (small, large)]
    for _ in range(cli_runs):
        bc.byte_compile()  # hog/ may have been edited since the last round
        random.shuffle(plan)
        for name, size in plan:
            words = commands[name] or ["check", str(size)]
            wall, _, status = bc.timed_run(bc.hog_argv(pristine[size], *words), cwd=folder)
            if status != 0:
                raise SystemExit(f"bench: `{name}` failed with status {status}")
            walls.setdefault((name, size), []).append(wall)
    cli_results, rows = {}, []
    for name in commands:
        a, b = bc.median(walls[(name, small)]), bc.median(walls[(name, large)])
        cli_results[name] = {
            labels[small]: walls[(name, small)],
            labels[large]: walls[(name, large)],
            "ratio": a and b / a,
        }
        rows.append((name, a * 1000, b * 1000, b / a))
    print(f"(a) CLI wall time on {labels[small]} vs {labels[large]} waiting tasks, median of {cli_runs} runs")
    bc.print_table(("command", f"{labels[small]} ms", f"{labels[large]} ms", "ratio"), rows)
    for name in ("status", "show --limit 20"):
        value = cli_results[name]["ratio"]
        summary.append(
            bc.goal_line(
                f"`{name}` at {labels[large]} / {labels[small]} tasks",
                value,
                "x",
                f"<= {GOAL_CLI}x",
                value <= GOAL_CLI if not args.quick else None,
            )
        )

    # (b) one-task claims through the core API
    claim_results = claim_costs(folder, pristine, (small, large), claims, claim_reps)
    rows = []
    for variant, per_size in claim_results.items():
        a, b = per_size[small]["median_ms"], per_size[large]["median_ms"]
        rows.append((variant, a, b, b / a))
        per_size["ratio"] = b / a
    print(f"\n(b) one claim (exchange, limit 1), ms each: {claims} claims x {claim_reps} fresh copies")
    bc.print_table(("variant", f"{labels[small]} ms", f"{labels[large]} ms", "ratio"), rows)
    value = claim_results["claim 1 (exchange)"]["ratio"]
    summary.append(
        bc.goal_line(
            f"claim cost at {labels[large]} / {labels[small]} waiting",
            value,
            "x",
            f"<= {GOAL_CLAIM}x",
            value <= GOAL_CLAIM if not args.quick else None,
        )
    )

    # (c) a real hog's peak memory
    rss_results = {}
    for size in (small, large):
        rss_results[labels[size]] = []
        for _ in range(claim_reps):
            bc.byte_compile()
            db = os.path.join(folder, "hog.sqlite")
            copy_queue(pristine[size], db)
            rss_results[labels[size]].append(hog_peak_rss(db, hog_seconds))
    rows = []
    for label, runs in rss_results.items():
        rows.append(
            (
                label,
                bc.median([r["vmhwm_kib"] / 1024 for r in runs]),
                bc.median([r["with_slots_vmhwm_kib"] / 1024 for r in runs]),
                bc.median([r["wait4_maxrss_kib"] / 1024 for r in runs]),
                bc.median([r["tasks_run"] for r in runs]),
                bc.median([r["drain_s"] for r in runs]),
            )
        )
    print(
        f"\n(c) a hog with 2 cores on a queue of `true` tasks, ~{hog_seconds:.0f} s then SIGINT; "
        f"median of {claim_reps}"
    )
    bc.print_table(
        ("queue", "peak RSS MiB", "with slot processes", "wait4 maxrss MiB", "tasks run", "drain s"), rows
    )
    # The hog with its slot processes, their peaks added up (shared pages counted in each).
    peak = max(r["with_slots_vmhwm_kib"] for r in rss_results[labels[large]]) / 1024
    summary.append(
        bc.goal_line(
            f"hog peak RSS with its 2 slot processes on {labels[large]} tasks (max of runs)",
            peak,
            "MiB",
            f"< {GOAL_RSS_MIB} MiB",
            peak < GOAL_RSS_MIB if not args.quick else None,
        )
    )

    bc.print_goals(summary)
    bc.save(
        "queue_size",
        args.quick,
        {
            "sizes": [small, large],
            "cli_runs": cli_runs,
            "cli": cli_results,
            "claims_per_run": claims,
            "claim": {v: {str(k): x for k, x in d.items()} for v, d in claim_results.items()},
            "hog_seconds": hog_seconds,
            "hog_rss": rss_results,
        },
        summary,
    )
    bc.remove(folder)


def copy_queue(source: str, target: str) -> None:
    bc.remove_queue(target)
    shutil.copyfile(source, target)
    os.chmod(target, 0o600)


def claim_costs(folder: str, pristine: dict, sizes: tuple, rounds: int, reps: int) -> dict:
    """Per-claim ms of `exchange` taking 1 task, without and with the previous task's result."""
    from hog.store import claims, states
    from hog.store.db import open_database
    from hog.store.packing import Resources

    mem = 8 << 30
    request = claims.ClaimRequest(
        free=Resources(1, 0, mem),
        total=Resources(2, 0, mem),
        busy=[],
        seconds_left=None,
        unlimited_allowed=True,
        limit=1,
    )
    variants = ("claim 1 (exchange)", "claim 1 + record 1 result")
    samples: dict[str, dict[int, list[float]]] = {v: {s: [] for s in sizes} for v in variants}
    plan = [(v, s) for v in variants for s in sizes] * reps
    random.shuffle(plan)
    for variant, size in plan:
        path = os.path.join(folder, "claim.sqlite")
        copy_queue(pristine[size], path)
        db = open_database(path)
        info = claims.HogInfo(
            host="bench",
            pid=os.getpid(),
            slurm_job_id=None,
            cores=2,
            gpus=[],
            mem_bytes=mem,
            end_by=None,
            lease_s=3600.0,
        )
        hog_id = claims.start_hog(db, info)
        environments: dict = {}
        previous = None
        times = []
        for _ in range(rounds):
            results = []
            if variant.endswith("result") and previous is not None:
                now = time.time()
                results = [
                    claims.TaskResult(previous.task_id, previous.attempt, states.REASON_EXITED, now, now, 0)
                ]
            started = time.perf_counter()
            outcome = claims.exchange(db, hog_id, "bench", results, request, environments)
            times.append(time.perf_counter() - started)
            if len(outcome.claimed) != 1:
                raise SystemExit(f"bench: a claim returned {len(outcome.claimed)} tasks, not 1")
            previous = outcome.claimed[0]
        db.close()
        samples[variant][size].append(bc.median(times) * 1000)
    return {
        variant: {
            size: {"median_ms_per_copy": per_size[size], "median_ms": bc.median(per_size[size])}
            for size in sizes
        }
        for variant, per_size in samples.items()
    }


def vm_hwm_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def hog_peak_rss(db: str, seconds: float) -> dict:
    """Run a hog for `seconds`, SIGINT it (it drains), and follow its peak RSS (VmHWM) to the end."""
    argv = bc.hog_argv(db, "hog", "--cores", "2", "--idle-timeout", "1s")
    with open(db + ".hog.log", "wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(db))
    started = time.monotonic()
    signalled = None
    peak = 0
    slot_peaks: dict[int, int] = {}  # its slot processes (one per core), by pid
    while True:
        # VmHWM while it lives, then the kernel's own figure from wait4.
        peak = max(peak, vm_hwm_kib(process.pid) or 0)
        for child in child_pids(process.pid):
            slot_peaks[child] = max(slot_peaks.get(child, 0), vm_hwm_kib(child) or 0)
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if signalled is None and time.monotonic() - started >= seconds:
            process.send_signal(signal.SIGINT)
            signalled = time.monotonic()
        time.sleep(0.05)
    ended = time.monotonic()
    process.returncode = os.waitstatus_to_exitcode(status)
    counts = json.loads(bc.hog(db, "status", "--json").stdout)["tasks"]
    return {
        "vmhwm_kib": peak,
        "slots_vmhwm_kib": sum(slot_peaks.values()),
        "with_slots_vmhwm_kib": peak + sum(slot_peaks.values()),
        "wait4_maxrss_kib": usage.ru_maxrss,
        "tasks_run": counts["done"] + counts["failed"],
        "still_running": counts["running"],
        "ran_s": (signalled or ended) - started,
        "drain_s": ended - signalled if signalled is not None else 0.0,
        "exit_status": process.returncode,
    }


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(word) for word in handle.read().split()]
    except OSError:
        return []


if __name__ == "__main__":
    main()
