#!/usr/bin/env python3
"""2,000 `true` tasks on the local SLURM cluster: slurm-hog hogs against one `sbatch` job each.

Needs the cluster of scripts/slurm-cluster.sh to be up (`status` exits 0); its `env` lines are
applied to this process. Otherwise prints that it is skipped and exits 0.

- slurm-hog: `submit --file` then `monitor --command-prefix "srun -N1 --exclusive -t 10"
  --hogs 4 --once --idle-timeout 2s --heartbeat 2s`, timed from the submit to the monitor's exit.
- sbatch: `sbatch --wrap true` 2,000 times (one after another, as a user's loop would), then
  `squeue` polled until none of those jobs is left; timed from the first sbatch.

Goal (issue 5): slurm-hog at least 20x faster end to end.

    .venv/bin/python scripts/bench_slurm.py [--quick] [--tasks N]
"""

import getpass
import os
import shlex
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

GOAL = 20.0
CLUSTER = os.path.join(bc.ROOT, "scripts", "slurm-cluster.sh")
PREFIX = "srun -N1 --exclusive -t 10"
BUSY_WAIT_S = 120


def main() -> None:
    args = bc.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--tasks", type=int, default=None))
    tasks = args.tasks or (100 if args.quick else 2_000)
    reps = args.reps or (2 if args.quick else 3)
    reason = cluster_problem()
    if reason:
        print(f"bench_slurm: skipped: {reason}")
        bc.save("slurm", args.quick, {"skipped": reason}, [])
        return
    bc.byte_compile()
    print(subprocess.run(["sinfo", "-N"], capture_output=True, text=True).stdout.rstrip())
    wait_for_idle_cluster()
    folder = bc.workdir("slurm")
    task_file = os.path.join(folder, "tasks.txt")
    bc.write_lines(task_file, tasks, "true")

    runners = {"slurm-hog monitor": run_hogs, "sbatch --wrap": run_sbatch}
    samples = bc.run_interleaved(runners, reps, folder, task_file, tasks, digits=1)

    medians = {name: bc.median([r["seconds"] for r in runs]) for name, runs in samples.items()}
    hog_s, sbatch_s = medians["slurm-hog monitor"], medians["sbatch --wrap"]
    print(f"\n{tasks:,} tasks of `true` on the local cluster, median of {reps} interleaved runs")
    bc.print_table(
        ("runner", "end-to-end s", "tasks/s", "x sbatch"),
        [(name, s, tasks / s, sbatch_s / s) for name, s in medians.items()],
    )
    hog_runs = samples["slurm-hog monitor"]
    print(
        f"\nslurm-hog details (medians): submit {bc.median([r['submit_s'] for r in hog_runs]):.2f} s, "
        f"monitor start to: first hog running {bc.median([r['first_hog_start_s'] for r in hog_runs]):.2f} s, "
        f"last task end {bc.median([r['to_last_end_s'] for r in hog_runs]):.2f} s, "
        f"last hog end {bc.median([r['last_hog_end_s'] for r in hog_runs]):.2f} s, "
        f"monitor exit {bc.median([r['monitor_s'] for r in hog_runs]):.2f} s; "
        f"hogs started {bc.median([r['hogs'] for r in hog_runs]):.0f}, "
        f"{bc.median([len(r['per_node']) for r in hog_runs]):.0f} nodes used; "
        f"sbatch submit loop {bc.median([r['submit_s'] for r in samples['sbatch --wrap']]):.1f} s"
    )
    # End to end as a user sees it: from the submit until every task is done (when `slurm-hog
    # wait` returns, and when the last sbatch job has left squeue). Giving the nodes back takes
    # the hogs' idle timeout longer: reported too.
    done_s = bc.median([r["submit_s"] + r["to_last_end_s"] for r in hog_runs])
    ratio = sbatch_s / done_s
    summary = [
        bc.goal_line(
            f"{tasks:,} x `true` on local SLURM, submit to all done: hogs {done_s:.1f} s vs sbatch "
            f"{sbatch_s:.1f} s",
            ratio,
            "x faster",
            f">= {GOAL:g}x",
            ratio >= GOAL if not args.quick else None,
        ),
        bc.goal_line(
            f"the same until the monitor exits, nodes given back (hogs {hog_s:.1f} s, 2 s idle timeout)",
            sbatch_s / hog_s,
            "x faster",
            "report",
            None,
        ),
    ]
    bc.print_goals(summary)
    bc.save(
        "slurm",
        args.quick,
        {"tasks": tasks, "reps": reps, "prefix": PREFIX, "median_s": medians, "runs": samples},
        summary,
    )
    bc.remove(folder)


def cluster_problem() -> str | None:
    """None when the local cluster is up (and its environment applied), else why not."""
    if not os.path.exists(CLUSTER):
        return f"{os.path.relpath(CLUSTER, bc.ROOT)} does not exist yet"
    try:
        status = subprocess.run([CLUSTER, "status"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`slurm-cluster.sh status` failed: {error}"
    if status.returncode != 0:
        message = (status.stderr.strip() or status.stdout.strip()).splitlines()
        return (
            f"no local SLURM cluster ({message[-1] if message else 'status ' + str(status.returncode)}); "
            "start one with scripts/slurm-cluster.sh start"
        )
    env = subprocess.run([CLUSTER, "env"], capture_output=True, text=True, timeout=60)
    if env.returncode != 0:
        return f"`slurm-cluster.sh env` failed: {env.stderr.strip()}"
    for line in env.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, value = words[1].split("=", 1)
            os.environ[key] = value
    for tool in ("sbatch", "squeue", "srun"):
        if subprocess.run(["which", tool], capture_output=True).returncode:
            return f"{tool} not on PATH"
    return None


def queued_jobs(name: str | None = None) -> list[str]:
    argv = ["squeue", "-h", "-u", getpass.getuser(), "-o", "%i"]
    if name:
        argv += ["-n", name]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode:
        raise SystemExit(f"bench: squeue failed: {result.stderr.strip()}")
    return result.stdout.split()


def wait_for_idle_cluster() -> None:
    """Other people's jobs would make both sides slower: wait a while for them to end."""
    deadline = time.monotonic() + BUSY_WAIT_S
    jobs = queued_jobs()
    if jobs:
        print(f"waiting up to {BUSY_WAIT_S} s for {len(jobs)} queued job(s) of others to end")
    while jobs and time.monotonic() < deadline:
        time.sleep(2)
        jobs = queued_jobs()
    if jobs:
        print(f"warning: {len(jobs)} other job(s) still queued: the figures are disturbed")


def run_hogs(folder: str, task_file: str, tasks: int) -> dict:
    import apsw

    bc.byte_compile()  # hog/ may have been edited since the last run
    db = os.path.join(folder, "queue.sqlite")
    bc.new_queue(db)
    began = time.time()
    submit_s, _, status = bc.timed_run(bc.hog_argv(db, "submit", "--file", task_file), cwd=folder)
    if status:
        raise SystemExit("bench: submit failed")
    monitor_started = time.time()
    argv = bc.hog_argv(
        db, "monitor", "--command-prefix", PREFIX, "--hogs", "4", "--once",
        "--idle-timeout", "2s", "--heartbeat", "2s",
    )  # fmt: skip
    with open(os.path.join(folder, "monitor.out"), "wb") as out:
        wall, _, status = bc.timed_run(argv, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
    ended = time.time()
    if status:
        raise SystemExit(f"bench: the monitor exited {status}; see {folder}/monitor.out")
    connection = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    done = connection.execute("SELECT tasks FROM state_counts WHERE state = 'done'").fetchall()[0][0]
    last_end = connection.execute("SELECT max(ended_at) FROM attempts").fetchall()[0][0]
    per_node = dict(connection.execute("SELECT host, count(*) FROM attempts GROUP BY host"))
    hogs, first_hog, last_hog = connection.execute(
        "SELECT count(*), min(started_at), max(ended_at) FROM hogs"
    ).fetchall()[0]
    connection.close()
    if done != tasks:
        raise SystemExit(f"bench: {done} of {tasks} tasks done; see {folder}/monitor.out")
    return {
        "seconds": ended - began,
        "submit_s": submit_s,
        "monitor_s": wall,
        "to_last_end_s": last_end - monitor_started,
        "first_hog_start_s": first_hog - monitor_started,
        "last_hog_end_s": last_hog - monitor_started,
        "hogs": hogs,
        "per_node": per_node,
    }


def run_sbatch(folder: str, task_file: str, tasks: int) -> dict:
    name = f"hogbench-{os.getpid()}"
    out_dir = os.path.join(folder, "sbatch-out")
    bc.remove(out_dir)
    os.makedirs(out_dir)
    began = time.perf_counter()
    for _ in range(tasks):
        result = subprocess.run(
            ["sbatch", "--parsable", "-J", name, "--wrap", "true"],
            cwd=out_dir,
            capture_output=True,
            text=True,
        )
        if result.returncode:
            raise SystemExit(f"bench: sbatch failed: {result.stderr.strip()}")
    submitted = time.perf_counter()
    while queued_jobs(name):
        time.sleep(0.2)
    ended = time.perf_counter()
    return {"seconds": ended - began, "submit_s": submitted - began, "drain_s": ended - submitted}


if __name__ == "__main__":
    main()
