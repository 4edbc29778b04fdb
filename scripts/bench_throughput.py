#!/usr/bin/env python3
"""Throughput on one 2-core machine: 5,000 `true` tasks through slurm-hog and its alternatives.

- slurm-hog: `submit --file` (5,000 lines `true`, each run as /bin/sh -c true), then one
  `hog --cores 2 --idle-timeout 1s`, database on the local disk, rollback journal. Rate = tasks /
  (last task's ended_at - hog start), so the idle timeout is not counted; also the end-to-end time
  from the start of `submit` to the last ended_at.
- `xargs -P 2 -n 1 sh -c` reading 5,000 lines `true` (the goal's yardstick).
- a Python loop keeping 2 `subprocess.Popen(["sh", "-c", "true"])` running (the fork/exec ceiling).
- GNU Parallel (`parallel -j 2` reading the commands), if installed (`apt-get install -y parallel`).
- HyperQueue from PyPI (its Python API's LocalCluster: server plus one worker with 2 CPUs,
  default per-task output files, tasks run `true` without a shell), installed into
  bench-results/hq-venv on first use; skipped with the reason if that fails.

Goals: slurm-hog keeping no output (`submit -o /dev/null -e /dev/null`) at least 0.8x bare
xargs -P 2, as xargs keeps none; the hog with its default two files per task at least 0.9x xargs
writing two files per task (`true > N.out 2> N.err`). Each goal is the median of the ratios of
the rounds (the runners take turns in a new random order each round), so that the machine's
drift hits both sides of a ratio alike.

Every run writes into a folder of its own and nothing is deleted until the last round has run:
on a filesystem without a journal (ext4 here), each file created within a minute or more of
many deletions in its block group costs a scan past the freed inodes (measured: 179 us against
20 us per create after deleting 10,000 files), so a runner that cleaned up before or after its
run would slow down whichever runner came next.

    .venv/bin/python scripts/bench_throughput.py [--quick] [--reps N] [--skip parallel,hyperqueue]
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

GOAL = 0.8  # no output kept, against bare xargs
GOAL_FILES = 0.9  # the default two files per task, against xargs writing two files per task
HQ_VENV = os.path.join(bc.RESULTS, "hq-venv")

POPEN_LOOP = """
import subprocess, sys, time
n = int(sys.argv[1])
running, started = [], 0
t = time.perf_counter()
while started < n or running:
    while started < n and len(running) < 2:
        running.append(subprocess.Popen(["sh", "-c", "true"]))
        started += 1
    running[0].wait()
    running = [p for p in running if p.poll() is None]
print(time.perf_counter() - t)
"""

HQ_SCRIPT = """
import json, sys, time
from hyperqueue import Job, LocalCluster
from hyperqueue.cluster import WorkerConfig

n, folder = int(sys.argv[1]), sys.argv[2]
began = time.time()
with LocalCluster(server_dir=folder) as cluster:
    cluster.start_worker(WorkerConfig(cores=2))
    client = cluster.client()
    ready = time.time()
    job = Job(default_workdir=folder)
    for _ in range(n):
        job.program(["true"])
    submitted = client.submit(job)
    client.wait_for_jobs([submitted])
    done = time.time()
print(json.dumps({"start_s": ready - began, "submit_to_done_s": done - ready}))
"""


def main() -> None:
    args = bc.parse_args(
        __doc__.splitlines()[0],
        lambda p: p.add_argument("--skip", default="", help="comma-separated: parallel, hyperqueue, popen"),
    )
    tasks = 200 if args.quick else 5_000
    reps = args.reps or 5
    skip = {word.strip() for word in args.skip.split(",") if word.strip()}
    bc.byte_compile()
    folder = bc.workdir("throughput")
    task_file = os.path.join(folder, "tasks.txt")
    bc.write_lines(task_file, tasks, "true")
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    runners = {
        "slurm-hog": run_slurm_hog,
        "xargs -P 2": run_xargs,
        # The same pair keeping no output (a hog's tasks with -o/-e /dev/null), and both writing
        # two files per task as a hog does by default: file creation costs as much as a task.
        "slurm-hog, no output files": run_slurm_hog_no_files,
        "xargs -P 2, 2 files per task": run_xargs_files,
    }
    skipped = {}
    if "popen" not in skip:
        runners["python Popen loop"] = run_popen_loop
    if "parallel" in skip:
        skipped["GNU parallel"] = "--skip"
    elif shutil.which("parallel"):
        runners["GNU parallel"] = run_parallel
    else:
        skipped["GNU parallel"] = "not installed (apt-get install -y parallel)"
    if "hyperqueue" in skip:
        skipped["HyperQueue"] = "--skip"
    else:
        reason = ensure_hyperqueue()
        if reason:
            skipped["HyperQueue"] = reason
        else:
            runners["HyperQueue"] = run_hyperqueue
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")

    samples = bc.run_interleaved(runners, reps, folder, task_file, tasks)

    rates = {name: bc.median([tasks / r["seconds"] for r in runs]) for name, runs in samples.items()}
    xargs_rate = rates["xargs -P 2"]
    rows = []
    for name, runs in samples.items():
        seconds = bc.median([r["seconds"] for r in runs])
        rows.append((name, seconds, rates[name], round_ratio(samples, name, "xargs -P 2")))
    hog_runs = samples["slurm-hog"]
    print(f"\n{tasks:,} tasks of `true` on 2 cores, medians of {reps} interleaved rounds")
    bc.print_table(("runner", "seconds", "tasks/s", "x xargs (median of rounds)"), rows)
    print(
        "\nslurm-hog details (medians): "
        f"submit {bc.median([r['submit_s'] for r in hog_runs]):.2f} s, "
        f"hog start to last end {bc.median([r['seconds'] for r in hog_runs]):.2f} s, "
        f"first start to last end {bc.median([r['span_s'] for r in hog_runs]):.2f} s "
        f"({tasks / bc.median([r['span_s'] for r in hog_runs]):,.0f}/s), "
        f"end to end incl. submit {bc.median([r['end_to_end_s'] for r in hog_runs]):.2f} s, "
        f"hog exit {bc.median([r['hog_exit_s'] for r in hog_runs]):.2f} s (incl. 1 s idle timeout), "
        f"task run time p50 {bc.median([r['task_p50_ms'] for r in hog_runs]):.1f} ms, "
        f"hog CPU {bc.median([r['hog_cpu_s'] for r in hog_runs]):.2f} s"
    )
    # Like for like: xargs keeps no output of its tasks, so the goal compares the hog keeping none
    # either; with two files per task on both sides, and the hog's default against bare xargs,
    # are reported beside it.
    no_files = round_ratio(samples, "slurm-hog, no output files", "xargs -P 2")
    with_files = round_ratio(samples, "slurm-hog", "xargs -P 2, 2 files per task")
    summary = [
        bc.goal_line(
            f"hog throughput, {tasks:,} x `true`, 2 cores, no output kept "
            f"({rates['slurm-hog, no output files']:,.0f}/s vs xargs {xargs_rate:,.0f}/s)",
            no_files,
            "x xargs",
            f">= {GOAL}x",
            no_files >= GOAL if not args.quick else None,
        ),
        bc.goal_line(
            f"hog with its default 2 files per task vs xargs writing 2 files per task "
            f"({rates['slurm-hog']:,.0f}/s vs {rates['xargs -P 2, 2 files per task']:,.0f}/s)",
            with_files,
            "x xargs",
            f">= {GOAL_FILES}x",
            with_files >= GOAL_FILES if not args.quick else None,
        ),
        bc.goal_line(
            "hog with its default output files vs bare xargs",
            round_ratio(samples, "slurm-hog", "xargs -P 2"),
            "x xargs",
            "report",
            None,
        ),
    ]
    for name in ("GNU parallel", "HyperQueue"):
        if name in rates:
            summary.append(
                bc.goal_line(
                    f"hog throughput (default output files) vs {name} ({rates[name]:,.0f}/s)",
                    round_ratio(samples, "slurm-hog", name),
                    "x",
                    "report",
                    None,
                )
            )
    bc.print_goals(summary)
    bc.save(
        "throughput",
        args.quick,
        {"tasks": tasks, "reps": reps, "median_tasks_per_s": rates, "runs": samples, "skipped": skipped},
        summary,
    )
    bc.remove(folder)


def round_ratio(samples: dict[str, list[dict]], name: str, against: str) -> float:
    """The median over the rounds of `name`'s rate divided by `against`'s in the same round."""
    pairs = zip(samples[name], samples[against], strict=True)
    return bc.median([other["seconds"] / run["seconds"] for run, other in pairs])


def run_folder(folder: str) -> str:
    """A new folder for one run's files, left in place until every round has run (see above)."""
    import tempfile

    return tempfile.mkdtemp(prefix="run-", dir=folder)


def run_slurm_hog_no_files(folder: str, task_file: str, tasks: int) -> dict:
    return run_slurm_hog(folder, task_file, tasks, ("-o", "/dev/null", "-e", "/dev/null"))


def run_xargs_files(folder: str, task_file: str, tasks: int) -> dict:
    out = run_folder(folder)
    script = f"for n; do true > {out}/$n.out 2> {out}/$n.err; done"
    numbers = os.path.join(folder, "numbers.txt")
    with open(numbers, "w") as handle:
        handle.write("".join(f"{n}\n" for n in range(1, tasks + 1)))
    with open(numbers) as stdin:
        wall, cpu, status = bc.timed_run(
            ["xargs", "-P", "2", "-n", "1", "sh", "-c", script, "sh"], stdin=stdin
        )
    if status:
        raise SystemExit(f"bench: xargs exited {status}")
    return {"seconds": wall, "cpu_s": cpu}


def run_slurm_hog(folder: str, task_file: str, tasks: int, submit_options: tuple = ()) -> dict:
    import apsw

    bc.byte_compile()  # hog/ may have been edited since the last run
    db = os.path.join(run_folder(folder), "queue.sqlite")
    bc.new_queue(db)
    began = time.time()
    wall, _, status = bc.timed_run(
        bc.hog_argv(db, "submit", *submit_options, "--file", task_file), cwd=folder
    )
    if status:
        raise SystemExit("bench: submit failed")
    hog_started, hog_wall, hog_cpu = bc.run_local_hog(db, folder)
    connection = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    first_start, last_end, count = connection.execute(
        "SELECT min(started_at), max(ended_at), count(*) FROM attempts WHERE exit_code = 0"
    ).fetchall()[0]
    durations = [row[0] for row in connection.execute("SELECT ended_at - started_at FROM attempts")]
    done = connection.execute("SELECT tasks FROM state_counts WHERE state = 'done'").fetchall()[0][0]
    connection.close()
    if done != tasks or count != tasks:
        raise SystemExit(f"bench: {done} tasks done ({count} attempts), expected {tasks}")
    return {
        "seconds": last_end - hog_started,
        "submit_s": wall,
        "span_s": last_end - first_start,
        "end_to_end_s": last_end - began,
        "hog_exit_s": hog_wall,
        "hog_cpu_s": hog_cpu,
        "task_p50_ms": bc.median(durations) * 1000,
        "task_p99_ms": bc.percentile(durations, 0.99) * 1000,
    }


def run_xargs(folder: str, task_file: str, tasks: int) -> dict:
    with open(task_file) as commands:
        wall, cpu, status = bc.timed_run(["xargs", "-P", "2", "-n", "1", "sh", "-c"], stdin=commands)
    if status:
        raise SystemExit(f"bench: xargs exited {status}")
    return {"seconds": wall, "cpu_s": cpu}


def run_popen_loop(folder: str, task_file: str, tasks: int) -> dict:
    result = subprocess.run(
        [bc.PYTHON, "-c", POPEN_LOOP, str(tasks)], capture_output=True, text=True, check=True
    )
    return {"seconds": float(result.stdout)}


def run_parallel(folder: str, task_file: str, tasks: int) -> dict:
    with open(task_file) as commands:
        wall, cpu, status = bc.timed_run(["parallel", "--will-cite", "-j", "2"], stdin=commands)
    if status:
        raise SystemExit(f"bench: parallel exited {status}")
    return {"seconds": wall, "cpu_s": cpu}


def ensure_hyperqueue() -> str | None:
    """None when bench-results/hq-venv can import hyperqueue, else why not."""
    python = os.path.join(HQ_VENV, "bin", "python")
    if not os.path.exists(python):
        base = getattr(sys, "_base_executable", None) or sys.executable
        created = subprocess.run([base, "-m", "venv", HQ_VENV], capture_output=True, text=True)
        if created.returncode:
            return f"cannot create {HQ_VENV}: {created.stderr.strip()[-200:]}"
    check = subprocess.run([python, "-c", "import hyperqueue"], capture_output=True)
    if check.returncode == 0:
        return None
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "hyperqueue"],
        capture_output=True,
        text=True,
    )
    if installed.returncode:
        return f"`pip install hyperqueue` failed: {installed.stderr.strip()[-300:]}"
    check = subprocess.run([python, "-c", "import hyperqueue"], capture_output=True, text=True)
    return None if check.returncode == 0 else f"hyperqueue does not import: {check.stderr.strip()[-300:]}"


def run_hyperqueue(folder: str, task_file: str, tasks: int) -> dict:
    server_dir = run_folder(folder)
    started = time.perf_counter()
    result = subprocess.run(
        [os.path.join(HQ_VENV, "bin", "python"), "-c", HQ_SCRIPT, str(tasks), server_dir],
        capture_output=True,
        text=True,
        cwd=server_dir,
    )
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"bench: HyperQueue run failed: {result.stderr.strip()[-500:]}")
    inner = json.loads(result.stdout.strip().splitlines()[-1])
    # wait_for_jobs polls about once a second: the time is an upper bound by up to ~1 s.
    return {"seconds": inner["submit_to_done_s"], "start_s": inner["start_s"], "wall_s": wall}


if __name__ == "__main__":
    main()
