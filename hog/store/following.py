"""What a client that follows tasks reads of them (`run`, the make SHELL, `wait`): one row per look."""

from hog.records import NamedTuple
from hog.store.db import Database
from hog.store.submitting import stored_text

MIN_LOOK_S = 0.1  # `wait` looks at its tasks at most this often, however fast they end


class Progress(NamedTuple):
    """Where one task stands, with its current attempt."""

    state: str
    attempt: int  # 0 until a hog first claims it
    exit_code: int | None
    signal: int | None
    reason: str | None  # why the current attempt ended (states.REASON_*); None while it runs
    stderr_tail: str | None  # what the hog kept of a failed attempt's stderr (or why it could not start)


_PROGRESS = """
SELECT t.state, t.attempt, coalesce(t.exit_code, a.exit_code), coalesce(t.signal, a.signal), a.reason,
       a.stderr_tail
FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt
WHERE t.id = ?
"""


def progress(db: Database, task_id: int) -> Progress | None:
    """The task's state and its current attempt's end; None when it is gone (cleaned up)."""
    row = db.query_one(_PROGRESS, (task_id,))
    if row is None:
        return None
    *head, tail = row
    return Progress(*head, None if tail is None else str(stored_text(tail)))
