"""The soak test (scripts/soak.py), short: tasks through a monitor while hogs are killed -9.

The full run (20,000 tasks, 8 hogs) is `.venv/bin/python scripts/soak.py`; this one calls the same
code with fewer tasks and hogs, and asserts the same invariants. Nothing here depends on timings.
"""

import importlib.util
import sys
import time
from pathlib import Path

import pytest
from helpers import cli

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "soak.py"


def load_soak():
    """scripts/soak.py as a module (scripts/ is not a package)."""
    if "hog_soak" in sys.modules:
        return sys.modules["hog_soak"]
    spec = importlib.util.spec_from_file_location("hog_soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["hog_soak"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_soak_short(tmp_path: Path) -> None:
    soak = load_soak()
    tasks = 1500
    summary = soak.run(
        [
            "--tasks",
            str(tasks),
            "--hogs",
            "4",
            "--slots",
            "2",
            "--kill-every",
            "2",
            "--submitters",
            "2",
            "--db",
            str(tmp_path / "queue.sqlite"),
            "--max-seconds",
            "600",  # only against a hang: a healthy run takes a small part of it
        ]
    )
    report = soak.format_summary(summary)
    assert summary["ok"], report
    assert all(check["ok"] for check in summary["checks"]), report
    figures = summary["figures"]
    assert figures["tasks"] == tasks, report
    assert figures["done"] + figures["cancelled"] == tasks, report
    assert not figures["other_states"], report
    # The killer ran while there was work: otherwise this test proves nothing about faults.
    assert figures["kills"] >= 1, report
    assert figures["hogs"].get("lost", 0) >= 1, report


def test_shares_add_up() -> None:
    soak = load_soak()
    for total in (1, 7, 1500, 20000):
        for parts in (1, 2, 3, 4, 8):
            shares = [soak.share(total, parts, index) for index in range(parts)]
            assert sum(shares) == total
            assert max(shares) - min(shares) <= 1


def test_verify_catches_a_broken_queue(tmp_path: Path) -> None:
    """The checks are not vacuous: a done task run twice, a cancelled task that succeeded and a
    wrong state count are each reported."""
    from hog.store import claims, queue, submitting
    from hog.store.db import open_database
    from hog.store.packing import Resources

    soak = load_soak()
    path = tmp_path / "queue.sqlite"
    options = soak.parse_args(["--tasks", "3", "--submitters", "1", "--db", str(path)])
    assert cli(path, "init").returncode == 0
    db = open_database(str(path))
    try:
        submitting.submit(db, [("true", None), ("true", None)], submitting.SubmitOptions(cwd=str(tmp_path)))
        size = Resources(2, 0, 1 << 30)
        hog_id = claims.start_hog(db, claims.HogInfo("test", 1, None, 2, [], 1 << 30, None, 60.0))
        assert hog_id is not None
        claim = claims.ClaimRequest(size, size, [], None, True, 2)
        claimed = claims.exchange(db, hog_id, "test", [], claim, {}).claimed
        now = time.time()
        results = [
            claims.TaskResult(task.task_id, task.attempt, "exited", now, now, exit_code=0) for task in claimed
        ]
        claims.exchange(db, hog_id, "test", results, None, {}, finish_reason="idle")
        submitting.submit(db, [("true", None)], submitting.SubmitOptions(cwd=str(tmp_path)))
        queue.cancel(db, [3])
        with db.transaction() as connection:
            # Task 1 "succeeded" twice; cancelled task 3 has a successful attempt; a count is off.
            for task_id, attempt in ((1, 2), (3, 1)):
                connection.execute(
                    "INSERT INTO attempts(task_id, attempt, hog_id, host, claimed_at, ended_at,"
                    " exit_code, reason) VALUES (?, ?, ?, 'test', ?, ?, 0, 'exited')",
                    (task_id, attempt, hog_id, now, now),
                )
                connection.execute("UPDATE tasks SET attempt = ? WHERE id = ?", (attempt, task_id))
            connection.execute("UPDATE state_counts SET tasks = tasks + 1 WHERE state = 'done'")
    finally:
        db.close()

    checker = soak.Soak(options)
    checker.submitter_reports = [{"errors": []}]
    checker.verify(1.0)
    failed = {check["name"] for check in checker.checks if not check["ok"]}
    assert failed == {
        "each done task has exactly one successful attempt, its last",
        "no cancelled task has a successful attempt",
        "state_counts equals the tasks table",
    }, checker.checks
    assert checker.figures["max_attempts"] == 2
