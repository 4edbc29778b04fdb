"""The hogs as listings read them: `hogs`, `pools` and the monitor (their rows: claims.py)."""

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from hog.store import states
from hog.store.db import Database
from hog.store.queue import filtered, placeholders


class HogRow(NamedTuple):
    """One line of a hog listing."""

    id: int
    state: str
    host: str | None
    backend: str
    backend_id: str | None
    slurm_job_id: str | None
    pid: int | None
    cores: int | None
    gpus: str | None  # comma-separated GPU ids
    tasks_run: int
    running: int  # its tasks running now
    created_at: float
    started_at: float | None
    heartbeat_at: float | None
    ended_at: float | None
    end_by: float | None
    end_reason: str | None
    log_path: str | None
    pool: str


HOG_COLUMNS = HogRow._fields

# In HogRow's order: HogRow._make is its row-to-record function.
_HOG_SELECT = """
SELECT h.id, h.state, h.host, h.backend, h.backend_id, h.slurm_job_id, h.pid, h.cores, h.gpus,
       h.tasks_run, (SELECT count(*) FROM tasks t WHERE t.hog_id = h.id), h.created_at,
       h.started_at, h.heartbeat_at, h.ended_at, h.end_by, h.end_reason, h.log_path, h.pool
FROM hogs h
"""


def iter_hogs(
    db: Database,
    state_filter: tuple[str, ...] = (),
    limit: int | None = None,
    ended_after: float | None = None,
    pool: str | None = None,
) -> Iterator[HogRow]:
    """Hogs oldest first, streamed: those in `state_filter`, or ended after `ended_after`."""
    conditions: dict[str, Sequence] = {} if pool is None else {"h.pool = ?": (pool,)}
    if state_filter:
        conditions[f"h.state IN ({placeholders(state_filter)})"] = state_filter
    if ended_after is not None:
        conditions["h.ended_at > ?"] = (ended_after,)
    return map(HogRow._make, db.stream(*filtered(_HOG_SELECT, conditions, "h.id", limit)))


def ended_since(db: Database, since: float) -> list[dict]:
    """Hogs that ended after `since` (epoch seconds), for the monitor."""
    return [hog._asdict() for hog in iter_hogs(db, ended_after=since)]


def live_hogs(db: Database) -> list[dict]:
    """Pending and running hogs, for the monitor."""
    return [hog._asdict() for hog in iter_hogs(db, states.HOG_LIVE_STATES)]
