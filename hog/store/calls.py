"""What Python calls returned: written by the call itself as it ends, read by its executor.

A call (hog.HogExecutor) is a task whose command runs `python -m hog.api.worker`; the worker
records its pickled return value or exception here, for its attempt, before it exits. The write
is guarded like every change of a task: a worker whose attempt is no longer the task's current
one (its hog was declared lost, the task runs again elsewhere) writes nothing.
"""

from typing import NamedTuple

from hog.store import states
from hog.store.db import Database


def record_result(
    db: Database, task_id: int, attempt: int, ok: bool, value: bytes | None, path: str | None
) -> bool:
    """Keep what attempt `attempt` of a running task returned (ok) or raised; False when that
    attempt is no longer the task's current running one."""
    with db.transaction() as connection:
        connection.execute(
            "INSERT OR REPLACE INTO call_results(task_id, attempt, ok, value, path)"
            " SELECT ?, ?, ?, ?, ? WHERE EXISTS"
            " (SELECT 1 FROM tasks WHERE id = ? AND attempt = ? AND state = ?)",
            (task_id, attempt, int(ok), value, path, task_id, attempt, states.RUNNING),
        )
        return connection.changes() == 1


class CallOutcome(NamedTuple):
    """An ended task of a call, with what its last attempt recorded (ok None: nothing)."""

    task_id: int
    state: str
    attempt: int
    exit_code: int | None
    signal: int | None
    reason: str | None  # why it was cancelled without running, if it was
    stderr_tail: str | None
    ok: bool | None
    value: bytes | None
    path: str | None


_ENDED = f"""
SELECT t.id, t.state, t.attempt, t.exit_code, t.signal, t.reason, a.stderr_tail, r.ok, r.value, r.path
FROM tasks t
LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt
LEFT JOIN call_results r ON r.task_id = t.id AND r.attempt = t.attempt
WHERE t.state IN ({", ".join("?" * len(states.ENDED_STATES))}) AND t.id IN ({{marks}})
"""


def ended_calls(db: Database, task_ids: list[int]) -> list[CallOutcome]:
    """The tasks among `task_ids` that have ended, with their results; one read per 500 ids."""
    # Here, not at the top: a call's worker imports this module to keep its outcome, and the
    # user side of the store is more than it needs.
    from hog.store.queue import chunks, placeholders

    found: list[CallOutcome] = []
    with db.snapshot() as connection:
        for chunk in chunks(sorted(task_ids), 500):
            rows = connection.execute(
                _ENDED.format(marks=placeholders(chunk)), (*states.ENDED_STATES, *chunk)
            )
            found.extend(
                CallOutcome(*row[:7], None if row[7] is None else bool(row[7]), *row[8:]) for row in rows
            )
    return found
