#!/usr/bin/env python3
"""Workflows (issue 14): what dependencies and arrays cost, against the same work without them.

(a) graph: 100,000 `true` tasks as 900 chains of 100 plus a fan-in of 10,000 tasks to one summary
    task (100,001 in all), run by one local hog (`hog --cores 2`, -o/-e /dev/null), against as
    many independent tasks (`submit --array`), interleaved. Rate = tasks / (last task's ended_at -
    hog start). Goal: the graph at least 0.8x the independent rate. --quick: 90 chains of 100 plus
    a fan-in of 1,000 (10,001 tasks): the same depth, a tenth of the width.
(b) release: one parent with 10,000 children (`submit --array 1-10000 --after P`); the one
    transaction that records the parent's end (claims.exchange) and releases them all. Goal < 0.5 s.
(c) claim: one-task claims (claims.exchange, limit 1) on a queue of 1,000 waiting tasks, with and
    without 1,000,000 blocked ones behind a held parent (--quick: 100,000). Goal: within 1.3x.
(d) submit: `submit --array 1-1000000` against `submit --file` of 1,000,000 lines, fresh queue each,
    interleaved (--quick: 100,000). Goal: the array at least as fast.

    .venv/bin/python scripts/bench_workflows.py [--quick] [--reps N]
"""

import json
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

GRAPH_GOAL = 0.8
RELEASE_GOAL_S = 0.5
CLAIM_GOAL = 1.3
NO_OUTPUT = ("-o", "/dev/null", "-e", "/dev/null")


def main() -> None:
    args = bc.parse_args(__doc__.splitlines()[0])
    quick = args.quick
    reps = args.reps or (1 if quick else 2)
    bc.byte_compile()
    folder = bc.workdir("workflows")
    summary: list[dict] = []
    data: dict = {"reps": reps}

    chains, length, fan = (90, 100, 1_000) if quick else (900, 100, 10_000)
    graph_file = os.path.join(folder, "graph.json")
    tasks = write_graph(graph_file, chains, length, fan)
    print(f"(a) {tasks:,} tasks: {chains} chains of {length} + fan-in of {fan:,}; {reps} interleaved rounds")
    runs = bc.run_interleaved(
        {"graph": run_graph, "independent": run_independent}, reps, folder, graph_file, tasks
    )
    rates = {name: bc.median([tasks / run["seconds"] for run in samples]) for name, samples in runs.items()}
    graph_ratio = rates["graph"] / rates["independent"]
    data["graph"] = {"tasks": tasks, "chains": chains, "length": length, "fan_in": fan, "runs": runs}
    bc.print_table(("run", "median tasks/s"), [(name, rate) for name, rate in rates.items()])
    summary.append(
        bc.goal_line(
            f"graph of {tasks:,} tasks / independent rate",
            graph_ratio,
            "x",
            f">= {GRAPH_GOAL}x",
            None if quick else graph_ratio >= GRAPH_GOAL,
        )
    )

    release_times = [release_children(folder, 10_000) for _ in range(reps * 2 + 1)]
    data["release_10000_s"] = release_times
    release = bc.median(release_times)
    print(f"\n(b) releasing 10,000 children: median {release:.3f} s ({len(release_times)} runs)")
    summary.append(
        bc.goal_line(
            "release 10,000 children (one transaction)",
            release,
            "s",
            f"< {RELEASE_GOAL_S} s",
            release < RELEASE_GOAL_S,
        )
    )

    blocked = 100_000 if quick else 1_000_000
    claims = claim_costs(folder, blocked, 200 if quick else 300, 3)
    data["claim_ms"] = claims
    claim_ratio = bc.ratio(bc.median(claims["blocked"]), bc.median(claims["empty"]))
    print(
        f"\n(c) one-task claim, ms (medians of 3 copies): empty {bc.median(claims['empty']):.3f}, "
        f"behind {blocked:,} blocked {bc.median(claims['blocked']):.3f}: {claim_ratio:.2f}x"
    )
    summary.append(
        bc.goal_line(
            f"claim with {blocked:,} blocked / empty queue",
            claim_ratio,
            "x",
            f"<= {CLAIM_GOAL}x",
            None if quick else claim_ratio <= CLAIM_GOAL,
        )
    )

    size = 100_000 if quick else 1_000_000
    submits = submit_times(folder, size, max(3, reps))
    data["submit_s"] = submits
    array_s, file_s = bc.median(submits["array"]), bc.median(submits["file"])
    print(
        f"\n(d) {size:,} tasks, median of {len(submits['array'])}: --array {array_s:.2f} s "
        f"({size / array_s:,.0f}/s), --file {file_s:.2f} s ({size / file_s:,.0f}/s), "
        f"--each-line {bc.median(submits['each_line']):.2f} s"
    )
    summary.append(
        bc.goal_line(
            f"`submit --array` {size:,} / `--file` rate",
            file_s / array_s,
            "x",
            ">= 1x",
            None if quick else array_s <= file_s,
        )
    )
    bc.print_goals(summary)
    bc.save("workflows", quick, data, summary)
    bc.remove(folder)


def write_graph(path: str, chains: int, length: int, fan: int) -> int:
    """A workflow file of `chains` chains of `length` and `fan` tasks before one summary."""
    tasks = []
    for chain in range(chains):
        for step in range(length):
            task = {"name": f"c{chain}-{step}", "command": "true"}
            if step:
                task["after"] = [f"c{chain}-{step - 1}"]
            tasks.append(task)
    tasks.extend({"name": f"f{number}", "command": "true"} for number in range(fan))
    tasks.append({"name": "summary", "command": "true", "after": [f"f{number}" for number in range(fan)]})
    with open(path, "w") as handle:
        json.dump({"tasks": tasks}, handle)
    return len(tasks)


def run_graph(folder: str, graph_file: str, tasks: int) -> dict:
    return run_hog(folder, tasks, "--workflow", graph_file)


def run_independent(folder: str, graph_file: str, tasks: int) -> dict:
    return run_hog(folder, tasks, "--array", f"1-{tasks}", "true")


def run_hog(folder: str, tasks: int, *submit_args: str) -> dict:
    import apsw

    db = os.path.join(folder, "run.sqlite")
    bc.new_queue(db)
    submit_s, _, status = bc.timed_run(bc.hog_argv(db, "submit", *NO_OUTPUT, *submit_args), cwd=folder)
    if status:
        raise SystemExit(f"bench: submit {' '.join(submit_args[:1])} failed with status {status}")
    hog_started, _, hog_cpu = bc.run_local_hog(db, folder)
    connection = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
    last_end, count = connection.execute(
        "SELECT max(ended_at), count(*) FROM attempts WHERE exit_code = 0"
    ).fetchall()[0]
    connection.close()
    if count != tasks:
        raise SystemExit(f"bench: {count} tasks done, expected {tasks}")
    bc.remove_queue(db)
    return {"seconds": last_end - hog_started, "submit_s": submit_s, "hog_cpu_s": hog_cpu}


def fake_hog(db, cores: int = 2):
    """A hog registered through the core API, and a claim request for `limit` one-core tasks."""
    from hog.store import claims
    from hog.store.packing import Resources

    mem = 8 << 30
    info = claims.HogInfo("bench", os.getpid(), None, cores, [], mem, None, 3600.0)
    hog_id = claims.start_hog(db, info)

    def request(limit: int) -> claims.ClaimRequest:
        return claims.ClaimRequest(Resources(limit, 0, mem), Resources(limit, 0, mem), [], None, True, limit)

    return hog_id, request


def release_children(folder: str, children: int) -> float:
    """Seconds of the one transaction that records a parent's end and releases its children."""
    from hog.store import claims, states
    from hog.store.db import open_database

    db_path = os.path.join(folder, "release.sqlite")
    bc.new_queue(db_path)
    bc.hog(db_path, "submit", "true")
    bc.hog(db_path, "submit", "--after", "1", "--array", f"1-{children}", "true")
    db = open_database(db_path)
    hog_id, request = fake_hog(db)
    (parent,) = claims.exchange(db, hog_id, "bench", [], request(1), {}).claimed
    now = time.time()
    result = claims.TaskResult(parent.task_id, parent.attempt, states.REASON_EXITED, now, now, 0)
    started = time.perf_counter()
    claims.exchange(db, hog_id, "bench", [result], None, {})
    elapsed = time.perf_counter() - started
    counts = dict(db.query("SELECT state, tasks FROM state_counts"))
    db.close()
    if counts[states.WAITING] != children or counts[states.BLOCKED] != 0:
        raise SystemExit(f"bench: after the parent's end {counts}, expected {children} waiting")
    bc.remove_queue(db_path)
    return elapsed


def claim_costs(folder: str, blocked: int, claims_per_copy: int, copies: int) -> dict[str, list[float]]:
    """Median ms of one-task claims per fresh copy of each queue, copies interleaved."""
    from hog.store import claims
    from hog.store.db import open_database

    pristine = {}
    for name in ("empty", "blocked"):
        path = os.path.join(folder, f"claim-{name}.sqlite")
        bc.new_queue(path)
        if name == "blocked":
            bc.hog(path, "submit", "--hold", "true")
            bc.hog(path, "submit", "--after", "1", "--array", f"1-{blocked}", "true")
        bc.hog(path, "submit", "--array", "1-1000", "true")
        pristine[name] = path
    samples: dict[str, list[float]] = {name: [] for name in pristine}
    plan = list(pristine) * copies
    random.shuffle(plan)
    for name in plan:
        path = os.path.join(folder, "claim.sqlite")
        bc.remove_queue(path)
        shutil.copyfile(pristine[name], path)
        os.chmod(path, 0o600)
        db = open_database(path)
        hog_id, request = fake_hog(db)
        environments: dict = {}
        times = []
        for _ in range(claims_per_copy):
            started = time.perf_counter()
            outcome = claims.exchange(db, hog_id, "bench", [], request(1), environments)
            times.append(time.perf_counter() - started)
            if len(outcome.claimed) != 1:
                raise SystemExit(f"bench: a claim returned {len(outcome.claimed)} tasks, not 1")
        db.close()
        samples[name].append(bc.median(times) * 1000)
    for path in (*pristine.values(), os.path.join(folder, "claim.sqlite")):
        bc.remove_queue(path)
    return samples


def submit_times(folder: str, size: int, reps: int) -> dict[str, list[float]]:
    """Wall seconds of `submit --array`, `--file` and `--each-line` of `size` tasks, interleaved."""
    task_file = os.path.join(folder, "tasks.txt")
    bc.write_lines(task_file, size, "echo task {i}")
    entries = os.path.join(folder, "entries.txt")
    bc.write_lines(entries, size, "{i}")
    variants = {
        "array": ("--array", f"1-{size}", "echo task {index}"),
        "file": ("--file", task_file),
        "each_line": ("--each-line", entries, "echo task {entry}"),
    }
    db = os.path.join(folder, "submit.sqlite")
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        order = list(variants)
        random.shuffle(order)
        for name in order:
            bc.new_queue(db)
            wall, _, status = bc.timed_run(bc.hog_argv(db, "submit", *variants[name]), cwd=folder)
            if status:
                raise SystemExit(f"bench: submit {variants[name][0]} failed with status {status}")
            samples[name].append(wall)
    bc.remove_queue(db)
    return samples


if __name__ == "__main__":
    main()
