#!/usr/bin/env python3
"""Real hogs on the slow filesystem against the local disk, and where the difference goes.

    .venv/bin/python scripts/bench_slowfs.py [--tasks 2000] [--hogs 4] [--reps 2]

The issue's case: 4 one-core hogs run 2,000 tasks of `sleep 0.01` from a queue on the local disk,
on scripts/slowfs.py with 20 ms fsync and 1 ms metadata and lock calls ("lustre"), and with 5 ms
fsync and 0.5 ms ("nfs"); each with the default output files and with -o/-e /dev/null, so that
the cost of the output files shows apart from the commits. Rounds are interleaved. Throughput is
tasks over the span from the first claim to the last end (the hogs' start and idle time left
out). Needs root (FUSE). Writes bench-results/slowfs.json.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = {
    "local": None,
    "nfs": ["--metadata-ms", "0.5", "--fsync-ms", "5", "--lock-ms", "0.5"],
    "lustre": ["--metadata-ms", "1", "--fsync-ms", "20", "--lock-ms", "1"],
}


def _slowfs():
    if "hog_slowfs" in sys.modules:
        return sys.modules["hog_slowfs"]
    spec = importlib.util.spec_from_file_location("hog_slowfs", REPO / "scripts" / "slowfs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hog_slowfs"] = module
    spec.loader.exec_module(module)
    return module


def _hog(db: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "hog", "--db", db, *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        **kwargs,
    )


def _server_cpu_s(mountpoint: str) -> float | None:
    """The FUSE server's CPU seconds so far (it serves every operation on the mount and shares
    this machine's cores with the hogs)."""
    pid = _slowfs().server_pid(mountpoint)
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(case: str, files: bool, tasks: int, hogs: int, keep: str | None = None) -> dict:
    scratch = tempfile.mkdtemp(prefix="hog-bench-slowfs-")
    backing, mountpoint = os.path.join(scratch, "backing"), os.path.join(scratch, "mnt")
    os.mkdir(backing)
    os.mkdir(mountpoint)
    slowfs = _slowfs()
    folder = backing
    try:
        if CASES[case] is not None:
            if slowfs.main(["mount", backing, mountpoint, "--preset", "none", *CASES[case]]) != 0:
                raise SystemExit("bench_slowfs: mounting failed")
            folder = mountpoint
        db = os.path.join(folder, "queue.sqlite")
        _hog(db, "init")
        options = [] if files else ["-o", "/dev/null", "-e", "/dev/null"]
        _hog(db, "submit", *options, "--file", "-", input="sleep 0.01\n" * tasks)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        server_cpu_before = _server_cpu_s(mountpoint) if CASES[case] is not None else None
        started = [
            subprocess.Popen(
                [sys.executable, "-m", "hog", "--db", db, "hog", "--cores", "1", "--idle-timeout", "2s"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(hogs)
        ]
        for hog in started:
            hog.wait(timeout=1800)
        server_cpu_after = _server_cpu_s(mountpoint) if CASES[case] is not None else None
        (status,) = [json.loads(_hog(db, "status", "--json").stdout)]
        done = status["tasks"].get("done", 0)
        import apsw

        connection = apsw.Connection(db, flags=apsw.SQLITE_OPEN_READONLY)
        first, last = connection.execute("SELECT min(claimed_at), max(ended_at) FROM attempts").fetchall()[0]
        connection.close()
        counts = slowfs.read_stats(mountpoint)["counts"] if CASES[case] is not None else {}
        if keep:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(db, os.path.join(keep, f"{case}-{'files' if files else 'nofiles'}.sqlite"))
        return {
            "case": case,
            "files": files,
            "done": done,
            "tasks_per_s": done / (last - first),
            # The server's CPU over the hogs' whole run (their start and end included), per task.
            "server_cpu_ms_per_task": (
                1000 * (server_cpu_after - server_cpu_before) / max(1, done)
                if server_cpu_before is not None and server_cpu_after is not None
                else None
            ),
            "fs_ops_per_task": {name: n / tasks for name, n in counts.items()},
        }
    finally:
        with contextlib.suppress(Exception):
            if os.path.ismount(mountpoint):
                slowfs.unmount(mountpoint)
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tasks", type=int, default=2000, help="tasks of `sleep 0.01` a round (default 2000)"
    )
    parser.add_argument("--hogs", type=int, default=4, help="one-core hogs (default 4)")
    parser.add_argument("--reps", type=int, default=2, help="rounds of every case (default 2)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument(
        "--files",
        choices=["both", "default", "none"],
        default="both",
        help="the tasks' output: default files, -o/-e /dev/null, or both (default both)",
    )
    parser.add_argument(
        "--json", default=str(REPO / "bench-results" / "slowfs.json"), help="write the figures here"
    )
    parser.add_argument("--keep", metavar="FOLDER", help="copy each round's queue file here")
    arguments = parser.parse_args()
    samples: list[dict] = []
    cases = arguments.cases.split(",")
    if unknown := set(cases) - set(CASES):
        parser.error(f"--cases: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    for option in ("tasks", "hogs", "reps"):
        if getattr(arguments, option) < 1:
            parser.error(f"--{option}: give 1 or more")
    if "local" not in cases:
        parser.error("--cases: include local, the figures are relative to it")
    kinds = {"both": (True, False), "default": (True,), "none": (False,)}[arguments.files]
    for _ in range(arguments.reps):
        for files in kinds:
            for case in cases:
                sample = one_round(case, files, arguments.tasks, arguments.hogs, arguments.keep)
                server = sample["server_cpu_ms_per_task"]
                served = f", server CPU {server:.2f} ms a task" if server is not None else ""
                print(f"{case:7} files={files!s:5} {sample['tasks_per_s']:7.1f} tasks/s{served}", flush=True)
                samples.append(sample)
    summary = {}
    for files in kinds:
        local = statistics.median(
            s["tasks_per_s"] for s in samples if s["case"] == "local" and s["files"] == files
        )
        for case in cases:
            rate = statistics.median(
                s["tasks_per_s"] for s in samples if s["case"] == case and s["files"] == files
            )
            key = f"{case} {'default files' if files else 'no files'}"
            summary[key] = {"tasks_per_s": rate, "against_local": rate / local}
            print(f"{key:24} {rate:7.1f} tasks/s  {rate / local:.2f}x local")
    out = Path(arguments.json)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"when": time.time(), "summary": summary, "samples": samples}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
