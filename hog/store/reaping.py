"""Reaping: hogs whose lease ran out (no heartbeat in their row nor in their beat file) are
declared lost, and their tasks go back to the queue, in one write.

Any process may reap; the guarded updates make a second reaper a no-op. A hog declared lost that
comes back finds its row no longer running and writes nothing (claims.exchange).
"""

import time
from collections.abc import Iterable

from hog.store import beats, dependencies, states
from hog.store.claims import move_hog, requeue_tasks_of_lost_hog
from hog.store.db import Database
from hog.store.queue import placeholders

# A reaper that itself waited this long for the lock does not judge heartbeats this time: the
# hogs were probably kept from beating by the same holder, not dead.
REAP_AFTER_LOCK_WAIT_S = 1.0

_EXPIRED = "state = ? AND heartbeat_at + lease_s < ?"


def hogs_to_reap(db: Database, now: float, also_lost: Iterable[int] = ()) -> list[tuple[int, str | None]]:
    """(id, host) of running hogs whose lease ran out in their row and in their beat file, plus
    `also_lost` ones still live. A read, then one small file read per hog past its row's lease."""
    extra = list(also_lost)
    rows = db.query(
        f"SELECT id, host, lease_s FROM hogs WHERE ({_EXPIRED})"
        f" OR (state IN ({placeholders(states.HOG_LIVE_STATES)}) AND id IN ({placeholders(extra)}))",
        (states.HOG_RUNNING, now, *states.HOG_LIVE_STATES, *extra),
    )
    return [
        (hog_id, host)
        for hog_id, host, lease_s in rows
        if hog_id in extra or not beats.beating(db.files, hog_id, lease_s, now)
    ]


def reap_lost_hogs(
    db: Database,
    now: float | None = None,
    also_lost: Iterable[int] = (),
    judged: Iterable[int] | None = None,
) -> list[int]:
    """Declare lost the running hogs whose lease ran out (and `also_lost`); requeue their tasks.

    `judged`: the hogs that `hogs_to_reap` found lost, read before the lock was taken; only
    those are looked at again here, so that the lock is not held while the beat files of every
    hog past its row's lease are read (without it, all of them are read).
    """
    now = time.time() if now is None else now
    also_lost = set(also_lost)
    only = None if judged is None else set(judged)
    reaped = []
    with db.transaction() as connection:
        expired = [
            hog_id
            for hog_id, lease_s in connection.execute(
                f"SELECT id, lease_s FROM hogs WHERE {_EXPIRED}", (states.HOG_RUNNING, now)
            )
            if (only is None or hog_id in only) and not beats.beating(db.files, hog_id, lease_s, now)
        ]
        if db.last_lock_wait_s > REAP_AFTER_LOCK_WAIT_S:
            expired = []
        ended: list[int] = []
        for hog_id in {*expired, *also_lost}:
            reason = "no heartbeat" if hog_id in expired else "its backend job ended"
            if move_hog(connection, hog_id, states.HOG_LOST, ended_at=now, end_reason=reason):
                ended += requeue_tasks_of_lost_hog(connection, hog_id, now)
                reaped.append(hog_id)
        dependencies.settle(connection, ended, now)
    return reaped
