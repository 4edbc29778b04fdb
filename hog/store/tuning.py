"""`tune`'s side of the queue: a sample of waiting tasks given the share being tried, and what
their attempts measured.

A sample is moved, in one transaction, into a copy of each task's submission that asks for the
setting's cores or GPUs, in a bundle of tune's own: a hog started with `--bundle` claims only
those. The tasks keep their ids, commands and everything else, run like any task and are
recorded like any; the rest of the queue is not touched.
"""

from typing import NamedTuple

import apsw

from hog import gpushare
from hog.store import states
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS, Resources

# Columns of a submission that a sample's copy sets itself; every other column is copied, so
# columns added by later migrations come along.
_SET_BY_COPY = ("id", "cores", "gpus", "gpu_split", "bundle")


class Measured(NamedTuple):
    tasks: int  # in the sample
    done: int
    not_done: int  # ended otherwise (failed, timeout, cancelled) or still not ended
    seconds: float | None  # from the first start to the last end
    peak_rss_kib: int | None  # the most any one task used


def _selector(name: str | None, kind: str | None) -> tuple[str, tuple]:
    if (name is None) == (kind is None):
        raise ValueError("give a name or a kind")
    return ("s.name = ?", (name,)) if name is not None else ("s.kind = ?", (kind,))


def first_needs(db: Database, name: str | None = None, kind: str | None = None) -> Resources | None:
    """What the first waiting task of `name` or `kind` asks for; None if none waits."""
    where, params = _selector(name, kind)
    row = db.query_one(
        f"SELECT s.cores, {SUBMISSION_GPU_UNITS}, coalesce(s.mem_bytes, 0) FROM tasks t"
        f" JOIN submissions s ON s.id = t.submission_id WHERE t.state = ? AND {where}"
        " ORDER BY t.priority DESC, t.id LIMIT 1",
        (states.WAITING, *params),
    )
    return None if row is None else Resources(*row)


def take_sample(
    db: Database,
    count: int,
    cores: int,
    gpus: int,
    bundle: str,
    name: str | None = None,
    kind: str | None = None,
) -> list[int]:
    """Give up to `count` waiting tasks of `name` or `kind` (in claim order) `cores` and `gpus`
    (units) in `bundle`; their ids."""
    where, params = _selector(name, kind)
    with db.transaction() as connection:
        rows = connection.execute(
            "SELECT t.id, t.submission_id FROM tasks t JOIN submissions s ON s.id = t.submission_id"
            f" WHERE t.state = ? AND {where} ORDER BY t.priority DESC, t.id LIMIT ?",
            (states.WAITING, *params, count),
        ).fetchall()
        copies: dict[int, int] = {}
        for task_id, submission_id in rows:
            if submission_id not in copies:
                copies[submission_id] = _copy_submission(connection, submission_id, cores, gpus, bundle)
            connection.execute(
                "UPDATE tasks SET submission_id = ? WHERE id = ? AND state = ?",
                (copies[submission_id], task_id, states.WAITING),
            )
    return [task_id for task_id, _ in rows]


def _copy_submission(
    connection: apsw.Connection, submission_id: int, cores: int, gpus: int, bundle: str
) -> int:
    columns = [
        row[1] for row in connection.execute("PRAGMA table_info(submissions)") if row[1] not in _SET_BY_COPY
    ]
    listed = ", ".join(columns)
    connection.execute(
        f"INSERT INTO submissions({listed}, cores, gpus, gpu_split, bundle)"
        f" SELECT {listed}, ?, ?, ?, ? FROM submissions WHERE id = ?",
        (cores, *gpushare.columns(gpus), bundle, submission_id),
    )
    return connection.last_insert_rowid()


def measure(db: Database, task_ids: list[int]) -> Measured:
    """How the sample's latest attempts went."""
    if not task_ids:
        return Measured(0, 0, 0, None, None)
    marks = ", ".join("?" * len(task_ids))
    row = db.query_one(
        "SELECT sum(t.state = ?), min(a.started_at), max(a.ended_at), max(a.max_rss_kib)"
        " FROM tasks t LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt"
        f" WHERE t.id IN ({marks})",
        (states.DONE, *task_ids),
    )
    done, first_start, last_end, peak = row or (0, None, None, None)
    done = done or 0
    seconds = None if first_start is None or last_end is None else max(0.0, last_end - first_start)
    return Measured(len(task_ids), done, len(task_ids) - done, seconds, peak)
