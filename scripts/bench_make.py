#!/usr/bin/env python3
"""make through hogs: pickup latency, `run` round trips, the shell's start, a 409-recipe Makefile,
64 waiting clients against the hogs' lock, and make on the local SLURM cluster.

- latency: one idle local hog (2 cores). Tasks submitted one at a time, each after a random pause
  (the hog idle, its doorbell at a random phase): pickup = the attempt's start minus the submit
  (both in the queue). Then `sh -c true`, `slurm-hog run true` and `slurm-hog-shell -c true`,
  interleaved: wall p50/p95, the overhead over `sh -c true`, and how long after the task's end
  (in the queue) the client had exited. Goal (issue 15): pickup p50 <= 0.2 s, p95 <= 0.5 s, and
  the end seen within the same.
- startup: `slurm-hog-shell --db MISSING -c true` (every import it needs, then the open that
  fails) against `python -c "import apsw"`, interleaved. Goal: within 1.3x.
- costs: the calls on files of an idle hog (this one, and with --before DIR the hog of an older
  checkout, run from its tree) and of a `run` client whose task runs, each followed by
  `strace -f -y` for STRACE_S seconds: calls per second, by call and file.
- clients: 4 local hogs (2 cores each) through 3,000 `true` tasks and 64 `sleep 2` tasks, the 64
  submitted by `submit` or by 64 `run` clients waiting at once: the hogs' lock waits
  ($SLURM_HOG_LOCK_STATS). Goal: p99 below 1 s with the clients.
- makefile: a generated Makefile of 409 recipes `sleep 0.5; touch $@` in six levels (160, 120, 80,
  40, 8, 1 targets; each depends on 1 to 8 of the level before: fan-in), plain `make -j2` against
  `make -jN SHELL=slurm-hog-shell` through one local hog of 2 cores. Goal: 0.8x plain make's
  recipes per second.
- slurm: on the local cluster (4 nodes x 4 CPUs), that Makefile and one of 1,000 tiny recipes with
  `make -j16`: hogs under a monitor (`srun -N1 --exclusive` prefix, 4 hogs, idle timeout 10 s),
  `SHELL=srun` with `srun -n1 -c1 --exclusive` inside one `salloc -N4 --exclusive`, and one
  `sbatch --wait` per recipe. Goal: hogs at least as fast as srun, 10x one sbatch per recipe.

    .venv/bin/python scripts/bench_make.py [--quick] [--reps N] [--skip latency,startup,...]
"""

import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

SECTIONS = ("latency", "startup", "costs", "clients", "makefile", "slurm")
SHELL = os.path.join(os.path.dirname(bc.PYTHON), "slurm-hog-shell")
WIDTHS = (160, 120, 80, 40, 8, 1)  # targets per level of the generated Makefile: 409 recipes
TINY = 1_000
HOG_IDLE_S = "10s"  # on SLURM: a build's hogs idle between its levels stay (with 2s they came and went)


def main() -> None:
    args = bc.parse_args(
        __doc__.splitlines()[0],
        lambda p: (
            p.add_argument("--skip", default="", help="sections to skip"),
            p.add_argument(
                "--before", help="a checkout of an older slurm-hog, for the costs of its idle hog"
            ),
        ),
    )
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(SECTIONS):
        raise SystemExit(
            f"bench_make: unknown --skip {', '.join(sorted(skip - set(SECTIONS)))}: use {SECTIONS}"
        )
    bc.byte_compile()
    folder = bc.workdir("make")
    data: dict = {}
    summary: list[dict] = []
    for section in SECTIONS:
        if section not in skip:
            print(f"\n== {section} ({time.strftime('%H:%M:%S')}, load {os.getloadavg()[0]:.1f}) ==")
            globals()[f"bench_{section}"](folder, args, data, summary)
    bc.print_goals(summary)
    bc.save("make", args.quick, data, summary)
    bc.remove(folder)


# -- helpers ---------------------------------------------------------------------------------


def local_hog(db: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        bc.hog_argv(db, "hog", "--cores", "2", *args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=os.path.dirname(db),  # not this checkout: PYTHONPATH may name another
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("bench_make: timed out waiting")
        time.sleep(0.05)


def attempts(db: str) -> dict[int, tuple[float, float | None, float | None]]:
    """Per task: (submitted, started, ended) epochs of its first attempt."""
    from hog.store.db import open_database

    database = open_database(db)
    try:
        rows = database.query(
            "SELECT t.id, s.submitted_at, a.started_at, a.ended_at FROM tasks t"
            " JOIN submissions s ON s.id = t.submission_id"
            " LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = 1 ORDER BY t.id"
        )
    finally:
        database.close()
    return {row[0]: tuple(row[1:]) for row in rows}


def hog_running(db: str) -> bool:
    import json

    return any(hog["state"] == "running" for hog in json.loads(bc.hog(db, "show", "-H", "--json").stdout))


def p(values: list[float], fraction: float) -> float | None:
    return bc.percentile(values, fraction)


def write_makefile(path: str, header: str, widths: tuple[int, ...], recipe: str) -> int:
    """A DAG of make targets, `widths` per level: target i of a level depends on the targets j
    of the level before with j % width == i. Returns the number of recipes."""
    lines = [header, "all: " + " ".join(f"L{len(widths) - 1}_{i}" for i in range(widths[-1])), ""]
    for level, width in enumerate(widths):
        for index in range(width):
            parents = (
                [f"L{level - 1}_{j}" for j in range(widths[level - 1]) if j % width == index] if level else []
            )
            lines += [f"L{level}_{index}: {' '.join(parents)}".rstrip(), f"\t{recipe}"]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return sum(widths)


def timed_make(folder: str, env: dict, argv: list[str]) -> float:
    for name in os.listdir(folder):
        if name.startswith("L") and "_" in name:
            os.unlink(os.path.join(folder, name))
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"bench_make: {' '.join(argv)} failed: {result.stderr[-2000:]}")
    return seconds


# -- sections --------------------------------------------------------------------------------


def bench_latency(folder: str, args, data: dict, summary: list[dict]) -> None:
    from hog.store import submitting
    from hog.store.db import open_database

    samples = 10 if args.quick else (args.reps or 40)
    db = os.path.join(folder, "latency.sqlite")
    bc.new_queue(db)
    hog = local_hog(db, "--idle-timeout", "30m")
    try:
        wait_for(lambda: hog_running(db))
        database = open_database(db)
        options = submitting.SubmitOptions(
            cwd=folder, environment={}, stdout_pattern="/dev/null", stderr_pattern="/dev/null"
        )
        for _ in range(samples):
            time.sleep(random.uniform(0.3, 0.8))
            submitting.submit(database, [("true", None)], options)
        database.close()
        wait_for(lambda: all(a[2] is not None for a in attempts(db).values()))
        pickups = [started - submitted for submitted, started, _ in attempts(db).values()]

        clients = {
            "sh -c true": ["sh", "-c", "true"],
            "slurm-hog run true": bc.hog_argv(db, "run", "true"),
            "slurm-hog-shell -c true": [SHELL, "--db", db, "-c", "true"],
        }
        walls: dict[str, list[float]] = {name: [] for name in clients}
        cpus: dict[str, list[float]] = {name: [] for name in clients}
        exits: list[tuple[str, float]] = []  # (client, epoch it had exited), in submit order
        for _ in range(samples):
            order = list(clients)
            random.shuffle(order)
            for name in order:
                time.sleep(random.uniform(0.1, 0.4))
                wall, cpu, status = bc.timed_run(clients[name], cwd=folder)
                if status:
                    raise SystemExit(f"bench_make: {name} exited {status}")
                walls[name].append(wall)
                cpus[name].append(cpu)
                if name != "sh -c true":
                    exits.append((name, time.time()))
        ends = [a[2] for task_id, a in sorted(attempts(db).items())][samples:]
        seen = {name: [] for name in clients if name != "sh -c true"}
        for (name, exited), ended in zip(exits, ends, strict=True):
            seen[name].append(exited - ended)
    finally:
        stop(hog)
    direct = bc.median(walls["sh -c true"])
    print(
        f"pickup of an idle hog, {samples} tasks: "
        f"p50 {p(pickups, 0.5) * 1000:.0f} ms, p95 {p(pickups, 0.95) * 1000:.0f} ms"
    )
    bc.print_table(
        (
            "client",
            "wall p50 ms",
            "wall p95 ms",
            "overhead p50 ms",
            "cpu p50 ms",
            "end seen p50 ms",
            "p95 ms",
        ),
        [
            (
                name,
                p(walls[name], 0.5) * 1000,
                p(walls[name], 0.95) * 1000,
                (p(walls[name], 0.5) - direct) * 1000,
                p(cpus[name], 0.5) * 1000,
                p(seen[name], 0.5) * 1000 if name in seen else None,
                p(seen[name], 0.95) * 1000 if name in seen else None,
            )
            for name in clients
        ],
    )
    data["latency"] = {"pickups_s": pickups, "walls_s": walls, "cpus_s": cpus, "end_seen_s": seen}
    quick = args.quick
    run_seen = seen["slurm-hog run true"]
    summary += [
        bc.goal_line(label, p(values, q), "s", f"<= {limit} s", None if quick else p(values, q) <= limit)
        for label, values, q, limit in (
            ("pickup of an idle hog, p50", pickups, 0.5, 0.2),
            ("pickup of an idle hog, p95", pickups, 0.95, 0.5),
            ("`run true` end seen after the task's end, p50", run_seen, 0.5, 0.2),
            ("`run true` end seen, p95", run_seen, 0.95, 0.5),
        )
    ]
    summary += [
        bc.goal_line(
            "`run true` round trip over `sh -c true`, p50",
            p(walls["slurm-hog run true"], 0.5) - direct,
            "s",
            "report",
            None,
        ),
        bc.goal_line(
            "`slurm-hog-shell -c true` round trip over `sh -c true`, p50",
            p(walls["slurm-hog-shell -c true"], 0.5) - direct,
            "s",
            "report",
            None,
        ),
    ]


def bench_startup(folder: str, args, data: dict, summary: list[dict]) -> None:
    runs = 8 if args.quick else (args.reps or 30)
    missing = os.path.join(folder, "missing.sqlite")
    commands = {
        'python -c "import apsw"': [bc.PYTHON, "-c", "import apsw"],
        "slurm-hog-shell, to its first database access": [SHELL, "--db", missing, "-c", "true"],
    }
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():
        bc.timed_run(argv)  # the page cache
    for _ in range(runs):
        order = list(commands)
        random.shuffle(order)
        for name in order:
            wall, cpu, _ = bc.timed_run(commands[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
    floor, shell = (bc.median(walls[name]) for name in commands)
    floor_cpu, shell_cpu = (bc.median(cpus[name]) for name in commands)
    print(
        f"CPU (user+system) medians: {shell_cpu * 1000:.0f} vs {floor_cpu * 1000:.0f} ms, "
        f"{shell_cpu / floor_cpu:.2f}x"
    )
    bc.print_table(
        ("command", "median ms", "min ms"),
        [(n, bc.median(w) * 1000, min(w) * 1000) for n, w in walls.items()],
    )
    data["startup"] = {"walls_s": walls, "cpus_s": cpus}
    summary.append(
        bc.goal_line(
            f"slurm-hog-shell start vs `import apsw` ({shell * 1000:.0f} vs {floor * 1000:.0f} ms)",
            shell / floor,
            "x",
            "<= 1.3x",
            None if args.quick else shell / floor <= 1.3,
        )
    )


STRACE_S = 10.0
TRACED = "pread64,read,write,pwrite64,openat,fsync,fdatasync,flock,fcntl,unlink,newfstatat,fstat"


def traced_calls(pid: int, db: str, seconds: float) -> dict[str, float]:
    """The calls of process `pid` (its threads too) per second, by `call file` (the queue's files
    by their suffix, the rest by kind)."""
    import re

    out = f"{db}.strace.{pid}"
    tracer = subprocess.Popen(
        ["strace", "-f", "-y", "-qq", "-e", f"trace={TRACED}", "-o", out, "-p", str(pid)],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(seconds)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(timeout=30)
    counts: dict[str, int] = {}
    call = re.compile(r"^(?:\d+\s+)?(\w+)\((?:-?\d+<([^>]*)>)?")
    with open(out) as handle:
        for line in handle:
            match = call.match(line)
            if not match or "resumed>" in line:
                continue
            name, path = match.group(1), match.group(2) or ""
            if path.startswith(db):
                kind = "queue" + path[len(db) :].split("/")[0].replace(".logs", ".logs/...")
            elif path.startswith(("pipe:", "anon_inode")):
                kind = "pipe"
            else:
                kind = "other"
            key = f"{name} {kind}"
            counts[key] = counts.get(key, 0) + 1
    os.unlink(out)
    return {key: number / seconds for key, number in sorted(counts.items())}


def bench_costs(folder: str, args, data: dict, summary: list[dict]) -> None:
    import shutil

    if shutil.which("strace") is None:
        print("skipped: no strace")
        return
    seconds = 3.0 if args.quick else STRACE_S
    results = {}
    trees = {"idle hog": bc.ROOT}
    if args.before:
        trees["idle hog before (" + os.path.basename(args.before.rstrip("/")) + ")"] = args.before
    for name, tree in trees.items():
        db = os.path.join(folder, f"costs-{len(results)}.sqlite")
        bc.new_queue(db)
        bc.hog(db, "submit", "true")  # the doorbell exists, as on any queue in use
        env = {**os.environ, "PYTHONPATH": tree}
        hog = local_hog(db, "--idle-timeout", "10m", env=env)
        try:
            wait_for(lambda db=db: not attempts(db) or all(a[2] for a in attempts(db).values()))
            time.sleep(2.0)
            results[name] = traced_calls(hog.pid, db, seconds)
        finally:
            stop(hog)
    db = os.path.join(folder, "costs-run.sqlite")
    bc.new_queue(db)
    hog = local_hog(db, "--idle-timeout", "10m")
    try:
        wait_for(lambda: hog_running(db))
        client = subprocess.Popen(
            bc.hog_argv(db, "run", "--", "sleep", str(seconds + 4)), stdout=subprocess.DEVNULL
        )
        time.sleep(2.0)
        results["waiting run client"] = traced_calls(client.pid, db, seconds)
        client.wait(timeout=60)
    finally:
        stop(hog)
    for name, calls in results.items():
        print(f"{name}: " + ", ".join(f"{key} {rate:.1f}/s" for key, rate in calls.items()))
    data["costs"] = {"seconds": seconds, "calls_per_s": results}


def bench_clients(folder: str, args, data: dict, summary: list[dict]) -> None:
    tiny = 500 if args.quick else 3_000
    clients = 16 if args.quick else 64
    results = {}
    for mode in ("submit", "run clients"):
        db = os.path.join(folder, f"clients-{mode.split()[0]}.sqlite")
        stats = db + ".waits"
        bc.new_queue(db)
        env = {**os.environ, "SLURM_HOG_LOCK_STATS": stats}
        bc.write_lines(os.path.join(folder, "tiny.txt"), tiny, "true")
        bc.hog(db, "submit", "-o", "/dev/null", "-e", "/dev/null", "--file", os.path.join(folder, "tiny.txt"))
        if mode == "submit":
            bc.write_lines(os.path.join(folder, "sleeps.txt"), clients, "sleep 2")
            bc.hog(db, "submit", "--file", os.path.join(folder, "sleeps.txt"))
            waiting = []
        else:
            waiting = [
                subprocess.Popen(
                    bc.hog_argv(db, "run", "--", "sleep", "2"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for _ in range(clients)
            ]
            wait_for(lambda db=db: len(attempts(db)) == tiny + clients, timeout=120)
        hogs = [local_hog(db, "--idle-timeout", "2s", env=env) for _ in range(4)]
        started = time.perf_counter()
        for process in hogs:
            process.wait(timeout=600)
        seconds = time.perf_counter() - started
        for process in waiting:
            if process.wait(timeout=120):
                raise SystemExit("bench_make: a run client failed")
        with open(stats) as handle:
            waits = [float(line) for line in handle]
        results[mode] = {
            "seconds": seconds,
            "waits": len(waits),
            "p50_s": p(waits, 0.5),
            "p99_s": p(waits, 0.99),
            "max_s": max(waits),
        }
        print(
            f"  {mode}: {seconds:.1f} s, {len(waits)} lock waits, "
            f"p50 {results[mode]['p50_s'] * 1000:.1f} ms, p99 {results[mode]['p99_s'] * 1000:.0f} ms"
        )
    data["clients"] = results
    p99 = results["run clients"]["p99_s"]
    summary.append(
        bc.goal_line(
            f"hogs' lock wait p99 with {clients} `run` clients waiting "
            f"(without: {results['submit']['p99_s']:.2f} s)",
            p99,
            "s",
            "< 1 s",
            None if args.quick else p99 < 1.0,
        )
    )


def bench_makefile(folder: str, args, data: dict, summary: list[dict]) -> None:
    widths = (16, 12, 8, 4, 1) if args.quick else WIDTHS
    reps = 1 if args.quick else (args.reps or 1)
    build = os.path.join(folder, "makefile")
    os.makedirs(build, exist_ok=True)
    db = os.path.join(folder, "makefile.sqlite")
    bc.new_queue(db)
    recipe = "sleep 0.5; touch $@"
    recipes = write_makefile(os.path.join(build, "plain.mk"), "", widths, recipe)
    write_makefile(os.path.join(build, "hogs.mk"), f"SHELL := {SHELL}", widths, recipe)
    env = {**os.environ, "SLURM_HOG_DB": db}
    runners = {
        "make -j2": ["make", "-s", "-j2", "-f", "plain.mk"],
        "make -j2 through 1 hog": ["make", "-s", "-j2", "-f", "hogs.mk"],
        "make -j4 through 1 hog": ["make", "-s", "-j4", "-f", "hogs.mk"],
    }
    hog = local_hog(db, "--idle-timeout", "30m")
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    try:
        wait_for(lambda: hog_running(db))
        for rep in range(reps):
            order = list(runners)
            random.shuffle(order)
            for name in order:
                seconds[name].append(timed_make(build, env, runners[name]))
                print(
                    f"  rep {rep + 1}: {name}: {seconds[name][-1]:.1f} s = "
                    f"{recipes / seconds[name][-1]:.2f} recipes/s"
                )
    finally:
        stop(hog)
    medians = {name: bc.median(values) for name, values in seconds.items()}
    bc.print_table(
        ("runner", "median s", "recipes/s", "x make -j2"),
        [(name, s, recipes / s, medians["make -j2"] / s) for name, s in medians.items()],
    )
    data["makefile"] = {"recipes": recipes, "widths": widths, "seconds": seconds}
    for name in ("make -j2 through 1 hog", "make -j4 through 1 hog"):
        value = medians["make -j2"] / medians[name]
        summary.append(
            bc.goal_line(
                f"{recipes} recipes of sleep 0.5, `{name}` vs plain `make -j2`",
                value,
                "x",
                ">= 0.8x",
                None if args.quick else value >= 0.8,
            )
        )


def bench_slurm(folder: str, args, data: dict, summary: list[dict]) -> None:
    import bench_slurm

    reason = bench_slurm.cluster_problem()
    if reason:
        print(f"skipped: {reason}")
        data["slurm"] = {"skipped": reason}
        return
    bench_slurm.wait_for_idle_cluster()
    reps = 1 if args.quick else (args.reps or 1)
    build = os.path.join(folder, "slurm")
    os.makedirs(build, exist_ok=True)
    jobs = "-j16"
    kinds = {
        "409 x sleep 0.5": ((16, 12, 8, 4, 1) if args.quick else WIDTHS, "sleep 0.5; touch $@"),
        f"{TINY} x touch": (((100,) if args.quick else (TINY,)), "touch $@"),
    }
    shells = {
        "hogs": f"SHELL := {SHELL}",
        "srun": "SHELL := srun\n.SHELLFLAGS := -n1 -c1 --exclusive --quiet /bin/sh -c",
        "sbatch": "SHELL := sbatch\n.SHELLFLAGS := --wait --quiet -n1 -c1 -o /dev/null -e /dev/null --wrap",
    }
    results: dict = {}
    for kind, (widths, recipe) in kinds.items():
        tag = kind.split()[0]
        for shell, header in shells.items():
            recipes = write_makefile(os.path.join(build, f"{tag}-{shell}.mk"), header, widths, recipe)
        for rep in range(reps):
            order = list(shells)
            random.shuffle(order)
            for shell in order:
                run = slurm_make(build, f"{tag}-{shell}.mk", shell, jobs, folder)
                results.setdefault(kind, {}).setdefault(shell, []).append(run)
                print(
                    f"  {kind}, rep {rep + 1}: {shell}: {run['seconds']:.1f} s "
                    f"({recipes / run['seconds']:.1f} recipes/s)"
                    + (f", nodes given back after {run['released_s']:.1f} s" if "released_s" in run else "")
                )
        medians = {shell: bc.median([r["seconds"] for r in runs]) for shell, runs in results[kind].items()}
        summary += [
            bc.goal_line(
                f"local SLURM, {kind}, make {jobs}: hogs {medians['hogs']:.1f} s "
                f"vs SHELL=srun {medians['srun']:.1f} s",
                medians["srun"] / medians["hogs"],
                "x faster",
                ">= 1x",
                None if args.quick else medians["srun"] >= medians["hogs"],
            ),
            bc.goal_line(
                f"local SLURM, {kind}: hogs vs one sbatch --wait per recipe ({medians['sbatch']:.1f} s)",
                medians["sbatch"] / medians["hogs"],
                "x faster",
                ">= 10x",
                None if args.quick else medians["sbatch"] >= 10 * medians["hogs"],
            ),
        ]
    data["slurm"] = results


def slurm_make(build: str, makefile: str, shell: str, jobs: str, folder: str) -> dict:
    db = os.path.join(folder, "slurm.sqlite")
    argv = ["make", "-s", jobs, "-f", makefile]
    env = dict(os.environ)
    if shell == "srun":
        argv = ["salloc", "-N4", "--exclusive", "--quiet", *argv]
    if shell != "hogs":
        return {"seconds": timed_make(build, env, argv)}
    bc.new_queue(db)
    env["SLURM_HOG_DB"] = db
    monitor = subprocess.Popen(
        bc.hog_argv(
            db,
            "monitor",
            "--command-prefix",
            "srun -N1 --exclusive -t 30",
            "--hogs",
            "4",
            "--poll",
            "1s",
            "--idle-timeout",
            HOG_IDLE_S,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        started = time.perf_counter()
        seconds = timed_make(build, env, argv)
        wait_for(lambda: not hogs_alive(db), timeout=300)
        released = time.perf_counter() - started
    finally:
        stop(monitor)
    return {"seconds": seconds, "released_s": released}


def hogs_alive(db: str) -> bool:
    """Whether a hog of `db` still holds its node (pending or running)."""
    import json

    hogs = json.loads(bc.hog(db, "show", "-H", "--json").stdout)
    return any(hog["state"] in ("pending", "running") for hog in hogs)


if __name__ == "__main__":
    main()
