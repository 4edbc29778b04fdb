"""Healing the queue: hogs that died are declared lost and their tasks go back to the queue.

Any process that opens the database may do it; the monitor does it every pass and hogs now and
then, so the queue heals even with no monitor running.
"""

import logging
import time
from collections.abc import Iterable

from hog.pilot.procs import kill_recorded_processes
from hog.store import reaping
from hog.store.db import Database

log = logging.getLogger(__name__)


def heal(db: Database, host: str, also_lost: Iterable[int] = (), now: float | None = None) -> list[int]:
    """Declare lost the hogs whose lease ran out, in their row and their beat file (beats.py),
    and `also_lost`; return their ids.

    Before their tasks are requeued, the processes those hogs left behind on this host are
    killed, so that a task never runs twice at once.
    """
    now = time.time() if now is None else now
    also_lost = list(also_lost)
    candidates = reaping.hogs_to_reap(db, now, also_lost)
    if not candidates:
        return []  # the usual case: a read, no write lock
    for hog_id, hog_host in candidates:
        if hog_host == host:
            killed = kill_recorded_processes(db.files.hog_pids(hog_id), hog_id)
            if killed:
                log.warning("killed %d task process groups left behind by hog %d", killed, hog_id)
    return reaping.reap_lost_hogs(db, now, also_lost, judged=[hog_id for hog_id, _ in candidates])
