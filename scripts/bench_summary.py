#!/usr/bin/env python3
"""One table of every benchmark's goals from bench-results/*.json, to paste into the README.

Usage: .venv/bin/python scripts/bench_summary.py [--md] [--quick]
Default: an RST simple table (README.rst); --md: Markdown; --quick: the --quick runs' files.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc

ORDER = ("startup", "submit", "queue_size", "throughput", "lock", "workflows", "slurm")


def main() -> None:
    markdown = "--md" in sys.argv[1:]
    quick = "--quick" in sys.argv[1:]
    rows, notes, machines = [], [], set()
    for name in ORDER:
        path = bc.result_path(name, quick)
        if not os.path.exists(path):
            notes.append(f"{name}: not run")
            continue
        with open(path) as handle:
            document = json.load(handle)
        machine = document.get("machine", {})
        machines.add(
            f"{machine.get('cpus')} CPUs, Python {machine.get('python')}, commit {machine.get('commit')}"
        )
        if document.get("skipped"):
            notes.append(f"{name}: skipped ({document['skipped']})")
            continue
        if document.get("quick"):
            notes.append(f"{name}: --quick sizes (a smoke check, not the real figures)")
        for row in document.get("summary", []):
            value = f"{bc.fmt(row['value'])} {row['unit']}".strip()
            met = {True: "yes", False: "NO", None: "-"}[row["ok"]]
            rows.append((name, row["metric"], value, row["goal"], met))
    headers = ("benchmark", "measure", "result", "goal", "met")
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "|".join("---" for _ in headers) + "|")
        for row in rows:
            print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
        rule = "  ".join("=" * w for w in widths)
        print(rule)
        print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
        print(rule)
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        print(rule)
    print()
    for machine in sorted(machines):
        print(f"measured on: {machine}")
    for note in notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
