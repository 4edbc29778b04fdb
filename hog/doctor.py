"""Does locking work on the database's filesystem? Contend from several processes and count.

Each worker adds one to a counter file many times, each time under the same exclusive flock the
queue uses, with a pause between reading and writing. With coherent locks no increment is lost;
without them (some network filesystems, or a misconfigured mount) the final count falls short, and
the queue would be corrupted silently. The check uses scratch files beside the database, never the
queue itself. Then it times write transactions shaped as the queue's: their latency is the
ceiling of one queue file on this filesystem.
"""

import fcntl
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

import apsw

INCREMENTS_PER_WORKER = 50
COMMITS_MEASURED = 20
# What a thousand 64-core hogs with 10 s tasks need from one file (issue 18); each task costs one
# claim and one result, each batched with others of its hog.
TASKS_PER_TRANSACTION = 100


@dataclass(frozen=True)
class LockingReport:
    ok: bool
    text: str


def check_locking(db_path: str, processes: int = 4, prefix: str | None = None) -> LockingReport:
    folder = os.path.dirname(os.path.abspath(db_path)) or "."
    base = os.path.join(folder, f".{os.path.basename(db_path)}.doctor-{os.getpid()}")
    counter_path, lock_path, sqlite_path = base + ".counter", base + ".lock", base + ".sqlite"
    try:
        with open(counter_path, "w") as counter:
            counter.write("0")
        connection = apsw.Connection(sqlite_path)
        connection.execute("CREATE TABLE IF NOT EXISTS counter(n INTEGER); INSERT INTO counter VALUES (0)")
        connection.close()
    except OSError as error:
        return LockingReport(False, f"cannot write scratch files in {folder}: {error.strerror}")
    worker = [
        sys.executable,
        "-m",
        "hog.doctor",
        counter_path,
        lock_path,
        sqlite_path,
        str(INCREMENTS_PER_WORKER),
    ]
    commands = [worker] * processes
    if prefix:
        commands.append(shlex.split(prefix) + worker)
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = package_root + os.pathsep + env.get("PYTHONPATH", "")
    started = time.monotonic()
    children = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for command in commands
    ]
    reported = 0
    problems = []
    for command, child in zip(commands, children, strict=True):
        out, err = child.communicate(timeout=600)
        if child.returncode != 0:
            problems.append(f"{shlex.join(command[:3])}... exited {child.returncode}: {err.strip()[-300:]}")
        reported += sum(int(line.split()[1]) for line in out.splitlines() if line.startswith("done "))
    elapsed = time.monotonic() - started
    with open(counter_path) as counter:
        counted = int(counter.read() or 0)
    connection = apsw.Connection(sqlite_path)
    in_sqlite = connection.execute("SELECT n FROM counter").fetchall()[0][0]
    connection.close()
    commits = measure_commits(sqlite_path, lock_path)
    for path in (counter_path, lock_path, sqlite_path, sqlite_path + "-journal"):
        if os.path.exists(path):
            os.unlink(path)
    lines = [
        f"locking check in {folder}: {len(children)} launches, "
        f"{reported} locked increments in {elapsed:.1f} s",
        f"counter file: {counted} of {reported}; sqlite counter: {in_sqlite} of {reported}",
    ]
    ok = not problems and counted == reported and in_sqlite == reported and reported > 0
    lines.extend(problems)
    lines.append(commits.text)
    lines.append(
        "locking works here"
        if ok
        else "LOCKING IS BROKEN here: do not put a queue on this filesystem (or fix its lock support)"
    )
    return LockingReport(ok, "\n".join(lines))


@dataclass(frozen=True)
class CommitReport:
    median_s: float
    p90_s: float
    text: str


def measure_commits(sqlite_path: str, lock_path: str, count: int = COMMITS_MEASURED) -> CommitReport:
    """Time write transactions shaped as the queue's (flock, BEGIN IMMEDIATE, write, COMMIT).

    On a shared filesystem each one costs its lock round trips and fsyncs: their rate is the
    ceiling of one queue file, whatever the number of hogs.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    connection = apsw.Connection(sqlite_path)
    connection.set_busy_timeout(60_000)
    connection.execute("PRAGMA synchronous = FULL")
    times: list[float] = []
    try:
        for _ in range(count):
            started = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                connection.execute("BEGIN IMMEDIATE")
                # A real change: an UPDATE that leaves the row as it was writes nothing and
                # commits without a journal or an fsync (14 ms here on NFS against 50 ms).
                connection.execute("UPDATE counter SET n = n + 1")
                connection.execute("COMMIT")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            times.append(time.monotonic() - started)
    finally:
        connection.close()
        os.close(fd)
    times.sort()
    median, p90 = times[len(times) // 2], times[int(len(times) * 0.9)]
    per_second = 1.0 / median if median > 0 else float("inf")
    text = (
        f"commit latency: {median * 1000:.1f} ms median, {p90 * 1000:.1f} ms p90 over {count} write "
        f"transactions; predicted ceiling: {per_second:,.0f} transactions/s, so about "
        f"{per_second * TASKS_PER_TRANSACTION / 2:,.0f} tasks/s with {TASKS_PER_TRANSACTION} tasks per "
        "claim and per result batch"
    )
    return CommitReport(median, p90, text)


def _worker(counter_path: str, lock_path: str, sqlite_path: str, increments: int) -> None:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    connection = apsw.Connection(sqlite_path)
    connection.set_busy_timeout(60_000)
    # Lets the test suite show that the check catches a filesystem whose locks do nothing.
    lock = fcntl.LOCK_EX if not os.environ.get("SLURM_HOG_DOCTOR_IGNORE_LOCKS") else fcntl.LOCK_UN
    for _ in range(increments):
        fcntl.flock(fd, lock)
        try:
            with open(counter_path, "r+") as counter:
                value = int(counter.read() or 0)
                time.sleep(0.001)  # widen the window in which a broken lock lets others in
                counter.seek(0)
                counter.write(str(value + 1))
                counter.truncate()
                counter.flush()
                os.fsync(counter.fileno())
            connection.execute("BEGIN IMMEDIATE")
            (value,) = connection.execute("SELECT n FROM counter").fetchall()[0]
            connection.execute("UPDATE counter SET n = ?", (value + 1,))
            connection.execute("COMMIT")
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    print(f"done {increments}")


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
