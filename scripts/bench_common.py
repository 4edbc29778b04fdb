"""Shared helpers for the scripts/bench_*.py benchmarks (not a benchmark itself).

Every benchmark prints a small table of medians and ratios and writes bench-results/NAME.json with
the raw samples and a "summary" list that scripts/bench_summary.py turns into one README table.
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench-results")
PYTHON = sys.executable


def parse_args(description: str, extra=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke check in well under a minute"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default: the script's own)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def workdir(name: str) -> str:
    """An empty scratch folder bench-results/tmp/NAME on the local disk (git-ignored)."""
    path = os.path.join(RESULTS, "tmp", name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def byte_compile() -> None:
    """As scripts/install.sh does: this environment may forbid writing .pyc files at run time."""
    subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(ROOT, "hog")], check=True)


def hog_argv(db: str, *args: str) -> list[str]:
    """`slurm-hog --db DB ARGS` with this interpreter (never a pyenv shim)."""
    return [PYTHON, "-m", "hog", "--db", db, *args]


def hog(db: str, *args: str, stdin=None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(hog_argv(db, *args), stdin=stdin, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SystemExit(
            f"bench: `slurm-hog {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result


def remove_queue(db: str) -> None:
    """The queue file and every file beside it."""
    from hog.store.paths import QueueFiles

    files = QueueFiles(db)
    for path in (db, files.lock, db + "-journal"):
        if os.path.exists(path):
            os.unlink(path)
    remove(files.logs)


def new_queue(db: str) -> None:
    remove_queue(db)
    hog(db, "init")


def write_lines(path: str, count: int, template: str) -> None:
    """A task file of `count` lines; `template` may use {i}."""
    with open(path, "w") as handle:
        step = 100_000
        for start in range(1, count + 1, step):
            handle.write(
                "".join(template.format(i=i) + "\n" for i in range(start, min(count, start + step - 1) + 1))
            )


def timed_run(argv: Sequence[str], **popen_args) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child and its children, exit status) of one command."""
    popen_args.setdefault("stdout", subprocess.DEVNULL)
    popen_args.setdefault("stderr", subprocess.DEVNULL)
    started = time.perf_counter()
    process = subprocess.Popen(argv, **popen_args)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, process.returncode


def run_local_hog(db: str, folder: str) -> tuple[float, float, float]:
    """`hog --cores 2 --idle-timeout 1s` until the queue is empty: (epoch it started, wall s, CPU s)."""
    started = time.time()
    wall, cpu, status = timed_run(hog_argv(db, "hog", "--cores", "2", "--idle-timeout", "1s"), cwd=folder)
    if status:
        raise SystemExit(f"bench: the hog exited with status {status}")
    return started, wall, cpu


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile (fraction in 0..1)."""
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits}f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence]) -> None:
    texts = [[fmt(cell) for cell in row] for row in rows]
    widths = [
        max(len(h), *(len(row[i]) for row in texts)) if texts else len(h) for i, h in enumerate(headers)
    ]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in texts:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def goal_line(metric: str, value, unit: str, goal: str, ok: bool | None) -> dict:
    """One row of the combined summary (scripts/bench_summary.py)."""
    return {"metric": metric, "value": value, "unit": unit, "goal": goal, "ok": ok}


def machine() -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", ROOT, "status", "--porcelain", "hog"], capture_output=True, text=True
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "", False
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "executable": PYTHON,
        "load_average": os.getloadavg(),
        "commit": commit + ("+dirty hog/" if dirty else ""),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def result_path(name: str, quick: bool) -> str:
    """bench-results/NAME.json, or NAME.quick.json for --quick runs (never over the real figures)."""
    return os.path.join(RESULTS, f"{name}.quick.json" if quick else f"{name}.json")


def save(name: str, quick: bool, data: dict, summary: list[dict]) -> str:
    os.makedirs(RESULTS, exist_ok=True)
    path = result_path(name, quick)
    document = {"benchmark": name, "quick": quick, "machine": machine(), "summary": summary, **data}
    with open(path, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")
    print(f"\nwrote {os.path.relpath(path, ROOT)}")
    return path


def print_goals(summary: list[dict]) -> None:
    print()
    print_table(
        ("goal", "measured", "target", "met"),
        [
            (
                row["metric"],
                f"{fmt(row['value'])} {row['unit']}".strip(),
                row["goal"],
                {True: "yes", False: "NO", None: "-"}[row["ok"]],
            )
            for row in summary
        ],
    )


def run_interleaved(runners: dict, reps: int, *args: object, digits: int = 2) -> dict[str, list[dict]]:
    """Each runner `reps` times, in a new random order each round, so drift hits all alike."""
    import random

    tasks = args[-1]
    samples: dict[str, list[dict]] = {name: [] for name in runners}
    for rep in range(reps):
        order = list(runners)
        random.shuffle(order)
        for name in order:
            result = runners[name](*args)
            samples[name].append(result)
            print(
                f"  rep {rep + 1}: {name}: {result['seconds']:.{digits}f} s = "
                f"{tasks / result['seconds']:,.1f} tasks/s"
            )
    return samples
