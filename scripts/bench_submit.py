#!/usr/bin/env python3
"""`slurm-hog submit --file` throughput: 10,000 and 1,000,000 lines into a fresh database.

For scale, the same rows are also inserted straight with apsw (`executemany` in one transaction,
same schema and indexes, no file parsing, no process start): the ceiling sqlite allows here.
Goal (issue 2): at least 150,000 tasks/s for 1,000,000 lines.

    .venv/bin/python scripts/bench_submit.py [--quick]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

GOAL_PER_S = 150_000


def main() -> None:
    args = bc.parse_args(__doc__.splitlines()[0])
    reps = args.reps or 3
    sizes = (10_000, 100_000) if args.quick else (10_000, 1_000_000)
    bc.byte_compile()
    folder = bc.workdir("submit")
    db = os.path.join(folder, "queue.sqlite")
    results = {}
    rows = []
    for size in sizes:
        task_file = os.path.join(folder, f"tasks-{size}.txt")
        bc.write_lines(task_file, size, "echo task {i}")
        cli_times, ceiling_times, sizes_bytes = [], [], []
        for _ in range(reps):
            bc.byte_compile()  # hog/ may have been edited since the last run
            bc.new_queue(db)
            wall, _, status = bc.timed_run(bc.hog_argv(db, "submit", "--file", task_file), cwd=folder)
            if status != 0:
                raise SystemExit(f"bench: submit --file failed with status {status}")
            cli_times.append(wall)
            sizes_bytes.append(os.path.getsize(db))
            count = bc.hog(db, "status", "--json").stdout
            if f'"waiting": {size}' not in count:
                raise SystemExit(f"bench: expected {size} waiting tasks, status says {count}")
            bc.new_queue(db)
            ceiling_times.append(apsw_ceiling(db, size))
        cli, ceiling = bc.median(cli_times), bc.median(ceiling_times)
        results[str(size)] = {
            "submit_file_s": cli_times,
            "apsw_executemany_s": ceiling_times,
            "median_submit_s": cli,
            "median_tasks_per_s": size / cli,
            "median_apsw_rows_per_s": size / ceiling,
            "db_bytes": bc.median(sizes_bytes),
        }
        rows.append(
            (
                f"{size:,}",
                cli,
                size / cli,
                size / ceiling,
                bc.ratio(ceiling, cli),
                bc.median(sizes_bytes) / size,
            )
        )
    print(f"submit --file, median of {reps} runs each, fresh database on {folder}")
    bc.print_table(
        ("lines", "submit s", "tasks/s", "apsw rows/s", "x ceiling", "db bytes/task"),
        rows,
    )
    largest = sizes[-1]
    rate = results[str(largest)]["median_tasks_per_s"]
    summary = [
        bc.goal_line(
            f"`submit --file` {largest:,} lines",
            rate,
            "tasks/s",
            f">= {GOAL_PER_S:,}/s",
            rate >= GOAL_PER_S if not args.quick else None,
        )
    ]
    bc.print_goals(summary)
    bc.save("submit", args.quick, {"reps": reps, "results": results}, summary)
    bc.remove(folder)


def apsw_ceiling(db: str, size: int) -> float:
    """Seconds to insert `size` task rows with executemany in one transaction (schema as made by init)."""
    import apsw

    connection = apsw.Connection(db)
    connection.execute("INSERT INTO environments(variables) VALUES ('{}')")
    connection.execute(
        "INSERT INTO submissions(submitted_at, cwd, environment_id, cores, gpus, max_retries)"
        " VALUES (0, '/', 1, 1, 0, 0)"
    )
    started = time.perf_counter()
    with connection:
        connection.executemany(
            "INSERT INTO tasks(submission_id, command, argv, priority) VALUES (?,?,?,?)",
            ((1, f"echo task {i}", None, 0) for i in range(1, size + 1)),
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


if __name__ == "__main__":
    main()
