"""Shared helpers: run the real CLI in a subprocess, start hogs, wait for conditions."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import apsw

REPO = Path(__file__).resolve().parents[1]


def cli(
    db: Path | str,
    *args: str,
    input: str | None = None,
    env: dict | None = None,
    cwd: Path | str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    """Run `slurm-hog --db DB ARGS` as a real process; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "hog", "--db", str(db), *args],
        input=input,
        capture_output=True,
        text=True,
        env=env if env is not None else child_env(),
        cwd=cwd,
        timeout=timeout,
    )


def cli_json(db: Path | str, *args: str, **kwargs) -> object:
    result = cli(db, *args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def child_env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SLURM_HOG_DB", None)
    env.update(extra)
    return env


def start_hog(
    db: Path | str, *args: str, log_path: Path | str | None = None, env: dict | None = None
) -> subprocess.Popen:
    """A real hog process; its log goes to `log_path` (default: beside the database)."""
    log_path = log_path or f"{db}.hog-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hog", "--db", str(db), "hog", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env if env is not None else child_env(),
            start_new_session=True,
        )


def wait_until(
    predicate: Callable[[], object], timeout: float = 60, interval: float = 0.05, message: str = "condition"
) -> object:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def holds_for(predicate: Callable[[], object], seconds: float, interval: float = 0.05) -> bool:
    """True if `predicate` stays truthy for `seconds` (something must NOT happen meanwhile)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


def tasks(db: Path | str) -> list[dict]:
    return cli_json(db, "show")  # type: ignore[return-value]


def states_of(db: Path | str) -> dict[int, str]:
    return {task["id"]: task["state"] for task in tasks(db)}


def task_counts(db: Path | str) -> dict[str, int]:
    return cli_json(db, "status")["tasks"]  # type: ignore[index]


def heal_from_elsewhere(db: Path | str) -> None:
    """Reap `db` as a hog on another host would an hour from now: every silent hog is lost and
    its tasks go back."""
    from hog.pilot.healing import heal
    from hog.store.db import open_database

    database = open_database(str(db))
    try:
        heal(database, host="elsewhere", now=time.time() + 3600)
    finally:
        database.close()


def rows_of(db: Path, sql: str) -> list[tuple]:
    """What `sql` reads from the queue file, through a read-only connection of the test's own."""
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return list(connection.execute(sql))
    finally:
        connection.close()
