#!/usr/bin/env python3
"""Start-up cost of one `slurm-hog check ID` and one `slurm-hog submit true`.

Compared with `python -c "import click, apsw"` (the floor: the CLI needs both) and bare Python,
all with this interpreter, interleaved in random order, 20+ runs each. Goal (issue 2): check and
submit within 1.15x the click+apsw floor. Also lists what `check` imports (python -X importtime).

    .venv/bin/python scripts/bench_startup.py [--quick]
"""

import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

GOAL = 1.15


def main() -> None:
    args = bc.parse_args(__doc__.splitlines()[0])
    runs = args.reps or (8 if args.quick else 30)
    bc.byte_compile()
    folder = bc.workdir("startup")
    db = os.path.join(folder, "queue.sqlite")
    bc.new_queue(db)
    task_file = os.path.join(folder, "tasks.txt")
    bc.write_lines(task_file, 100, "echo task {i}")
    bc.hog(db, "submit", "--file", task_file)

    commands = {
        "python -c pass": [bc.PYTHON, "-c", "pass"],
        "python -c 'import click, apsw'": [bc.PYTHON, "-c", "import click, apsw"],
        "slurm-hog check 7": bc.hog_argv(db, "check", "7"),
        "slurm-hog submit true": bc.hog_argv(db, "submit", "true"),
    }
    for argv in commands.values():  # warm the page cache
        bc.timed_run(argv)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    failures: dict[str, int] = {name: 0 for name in commands}
    for _ in range(runs):
        # hog/ may be edited meanwhile: a stale .pyc would be recompiled (and not written) on
        # every start under PYTHONDONTWRITEBYTECODE, which is not what users see.
        bc.byte_compile()
        order = list(commands)
        random.shuffle(order)
        for name in order:
            wall, cpu, status = bc.timed_run(commands[name], cwd=folder)
            walls[name].append(wall)
            cpus[name].append(cpu)
            failures[name] += status != 0
    if any(failures.values()):
        print(f"warning: non-zero exits: {failures}", file=sys.stderr)

    floor = bc.median(walls["python -c 'import click, apsw'"])
    floor_cpu = bc.median(cpus["python -c 'import click, apsw'"])
    rows, results = [], {}
    for name in commands:
        wall, cpu = bc.median(walls[name]), bc.median(cpus[name])
        results[name] = {
            "wall_s": walls[name],
            "cpu_s": cpus[name],
            "median_wall_s": wall,
            "median_cpu_s": cpu,
            "min_wall_s": min(walls[name]),
            "ratio_wall": bc.ratio(wall, floor),
            "ratio_cpu": bc.ratio(cpu, floor_cpu),
            "failures": failures[name],
        }
        rows.append(
            (
                name,
                wall * 1000,
                min(walls[name]) * 1000,
                cpu * 1000,
                bc.ratio(wall, floor),
                bc.ratio(cpu, floor_cpu),
            )
        )
    print(f"start-up, {runs} interleaved runs each, {bc.PYTHON}")
    bc.print_table(
        ("command", "median ms", "min ms", "cpu ms", "x floor (wall)", "x floor (cpu)"),
        rows,
    )

    bc.byte_compile()
    imports = import_profile(db, folder, ["check", "7"], repeat=3 if args.quick else 5)
    baseline = import_profile(None, folder, None, repeat=3 if args.quick else 5)
    extra = {module: t for module, t in imports["self_us"].items() if module not in baseline["self_us"]}
    print(
        f"\n`check` imports {len(imports['self_us'])} modules "
        f"({len(extra)} beyond `import click, apsw`); top self times (median of runs):"
    )
    top = sorted(imports["self_us"].items(), key=lambda item: -item[1])[:15]
    bc.print_table(
        ("module", "self ms", "beyond floor"),
        [(module, us / 1000, "yes" if module in extra else "") for module, us in top],
    )
    top_extra = sorted(extra.items(), key=lambda item: -item[1])
    print(
        f"\nmodules beyond the floor: {sum(extra.values()) / 1000:.1f} ms self in total; largest: "
        + ", ".join(f"{module} {us / 1000:.1f} ms" for module, us in top_extra[:12])
    )

    summary = []
    for name in ("slurm-hog check 7", "slurm-hog submit true"):
        value = results[name]["ratio_wall"]
        summary.append(
            bc.goal_line(
                f"`{name.removeprefix('slurm-hog ')}` start-up vs `import click, apsw` "
                f"({results[name]['median_wall_s'] * 1000:.0f} vs {floor * 1000:.0f} ms)",
                value,
                "x",
                f"<= {GOAL}x",
                value <= GOAL if not args.quick else None,
            )
        )
    bc.print_goals(summary)
    bc.save(
        "startup",
        args.quick,
        {
            "runs": runs,
            "commands": {name: " ".join(argv) for name, argv in commands.items()},
            "results": results,
            "importtime_check": {
                "self_us": imports["self_us"],
                "cumulative_us": imports["cumulative_us"],
                "beyond_floor_self_us": extra,
            },
        },
        summary,
    )
    bc.remove(folder)


def import_profile(db: str | None, folder: str, words: list[str] | None, repeat: int) -> dict:
    """Median self and cumulative import times (µs) per module over `repeat` runs."""
    selfs: dict[str, list[int]] = {}
    cumulatives: dict[str, list[int]] = {}
    for _ in range(repeat):
        if words is None:
            argv = [bc.PYTHON, "-X", "importtime", "-c", "import click, apsw"]
        else:
            argv = [bc.PYTHON, "-X", "importtime", "-m", "hog", "--db", db, *words]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=folder)
        for line in result.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
            module = name.strip()
            selfs.setdefault(module, []).append(int(self_us))
            cumulatives.setdefault(module, []).append(int(cumulative_us))
    return {
        "self_us": {module: bc.median(values) for module, values in selfs.items()},
        "cumulative_us": {module: bc.median(values) for module, values in cumulatives.items()},
    }


if __name__ == "__main__":
    main()
