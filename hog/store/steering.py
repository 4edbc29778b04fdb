"""Steering hogs through the queue file: a user asks chosen hogs to drain or to stop now.

The request is a column of the hog's row (schema.SCHEMA_HOG_STOPS). A running hog reads it in its
next exchange, which comes at least once a heartbeat (once a paced spacing, up to 10 minutes,
when many hogs share a slow file: pacing.py), notes when it saw it (its answer) and claims
nothing more. A pending hog has not started yet: its row is cancelled at once, and the hog leaves
as it starts. What happens to a hog that does not answer in time is the fleet's business
(fleet/steering.py): it is signalled through its backend.
"""

import time
from typing import NamedTuple

import apsw

from hog.errors import NotFoundError
from hog.store import states
from hog.store.db import Database
from hog.store.queue import placeholders

DRAIN = "drain"  # running tasks finish, nothing new starts, then the hog leaves
NOW = "now"  # running tasks are stopped and go back to the queue, then the hog leaves
STOP_MODES = (DRAIN, NOW)
# The end reason of a pending hog a user stopped: not a hog that failed to start (the monitor
# backs off after a few of those).
STOPPED_PENDING = "stopped before it started (hogs stop)"


class StopTarget(NamedTuple):
    """A hog a stop was asked of, with what it takes to reach it another way."""

    id: int
    state: str  # before the request
    host: str | None
    pid: int | None
    slurm_job_id: str | None
    backend: str  # manual, prefix, sbatch
    backend_id: str | None
    lease_s: float
    created_at: float
    started_at: float | None


class StopRequests(NamedTuple):
    asked: list[StopTarget]  # running hogs now asked to drain or stop
    cancelled: list[StopTarget]  # pending hogs, cancelled before they started
    skipped: list[tuple[int, str]]  # (id, state) of hogs that had already ended


_TARGET_SELECT = (
    "SELECT id, state, host, pid, slurm_job_id, backend, backend_id, lease_s, created_at, started_at"
    " FROM hogs"
)


def request_stops(
    db: Database,
    hog_ids: list[int] | None,
    mode: str,
    backends: tuple[str, ...] | None = None,
    now: float | None = None,
) -> StopRequests:
    """Ask the hogs `hog_ids` (None: every live hog, of `backends` if given) to drain or stop.

    Unknown ids change nothing: NotFoundError names them. A request for `now` replaces one to
    drain, never the other way round; a hog must see a changed request anew.
    """
    if mode not in STOP_MODES:
        raise RuntimeError(f"a stop is one of {', '.join(STOP_MODES)}, not {mode}")
    now = time.time() if now is None else now
    with db.transaction() as connection:
        if hog_ids is None:
            sql = _TARGET_SELECT + f" WHERE state IN ({placeholders(states.HOG_LIVE_STATES)})"
            params: tuple = states.HOG_LIVE_STATES
            if backends is not None:
                sql += f" AND backend IN ({placeholders(backends)})"
                params += backends
            rows = connection.execute(sql + " ORDER BY id", params).fetchall()
        else:
            rows = connection.execute(
                _TARGET_SELECT + f" WHERE id IN ({placeholders(hog_ids)}) ORDER BY id", tuple(hog_ids)
            ).fetchall()
            missing = sorted(set(hog_ids) - {row[0] for row in rows})
            if missing:
                shown = ", ".join(map(str, missing[:10]))
                raise NotFoundError(f"no hog {shown} in {db.path}: `slurm-hog show -H` lists them")
        result = StopRequests([], [], [])
        for target in map(StopTarget._make, rows):
            if target.state == states.HOG_PENDING:
                if _cancel_pending(connection, target.id, mode, now):
                    result.cancelled.append(target)
                    continue
                target = target._replace(state=states.HOG_RUNNING)  # it started meanwhile
            if target.state != states.HOG_RUNNING:
                result.skipped.append((target.id, target.state))
                continue
            connection.execute(
                "UPDATE hogs SET stop_request = ?, stop_requested_at = ?, stop_seen_at = NULL"
                " WHERE id = ? AND state = ? AND (stop_request IS NULL OR stop_request = ?)",
                (mode, now, target.id, states.HOG_RUNNING, DRAIN),
            )
            result.asked.append(target)
    return result


def _cancel_pending(connection: apsw.Connection, hog_id: int, mode: str, now: float) -> bool:
    """Cancel a hog that has not started; False if it started meanwhile. It holds no tasks."""
    assert states.can_move(states.HOG_TRANSITIONS, states.HOG_PENDING, states.HOG_CANCELLED)
    connection.execute(
        "UPDATE hogs SET state = ?, ended_at = ?, end_reason = ?, stop_request = ?, stop_requested_at = ?"
        " WHERE id = ? AND state = ?",
        (states.HOG_CANCELLED, now, STOPPED_PENDING, mode, now, hog_id, states.HOG_PENDING),
    )
    return connection.changes() == 1


def take_stop_request(connection: apsw.Connection, hog_id: int, now: float) -> str | None:
    """In a hog's exchange: the stop asked of it, if any, noted as seen (its answer)."""
    rows = connection.execute(
        "SELECT stop_request, stop_seen_at FROM hogs WHERE id = ?", (hog_id,)
    ).fetchall()
    if not rows or rows[0][0] is None:
        return None
    request, seen_at = rows[0]
    if seen_at is None:
        connection.execute("UPDATE hogs SET stop_seen_at = ? WHERE id = ?", (now, hog_id))
    return request


class Answer(NamedTuple):
    state: str
    stop_request: str | None
    stop_seen_at: float | None

    @property
    def answered(self) -> bool:
        """The hog saw the request, or has ended anyway."""
        return self.stop_seen_at is not None or self.state in states.HOG_ENDED_STATES


def answers(db: Database, hog_ids: list[int]) -> dict[int, Answer]:
    """Where each hog stands with the stop asked of it."""
    rows = db.query(
        f"SELECT id, state, stop_request, stop_seen_at FROM hogs WHERE id IN ({placeholders(hog_ids)})",
        tuple(hog_ids),
    )
    return {row[0]: Answer(*row[1:]) for row in rows}
