"""What stands between waiting tasks and their end, as `status` and `wait` tell a user.

Tasks that fit none of the hogs seen lately, claimed tasks that have not started, and whether
any hog or monitor is alive to run anything. Reads only.
"""

import fcntl
import os
import time
from typing import NamedTuple

from hog.gpushare import GPU_UNITS
from hog.pools import DEFAULT_POOL
from hog.store import beats, states
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS, Resources
from hog.store.pools import pool_counts
from hog.store.queue import chunks, placeholders

# Hogs whose size says what can run: live ones, and those that ended within this long (a queue's
# hogs come and go with its work; one from last month says little about today's pool).
HOGS_SEEN_S = 86400.0

# The GPUs of a hog row in units, whose `gpus` holds the ids: "0,1" is two, "" none.
_HOG_GPUS = (
    "CASE WHEN coalesce(gpus, '') = '' THEN 0"
    f" ELSE (length(gpus) - length(replace(gpus, ',', '')) + 1) * {GPU_UNITS} END"
)


class Misfits(NamedTuple):
    """Waiting tasks that fit none of the hogs seen: no hog seen will ever claim them."""

    count: int
    first: int | None  # the lowest id among them
    needs: Resources | None  # what the first asks for
    largest: Resources  # the most of each that a hog seen had


def hog_sizes(db: Database, now: float | None = None) -> dict[str, list[Resources]]:
    """The sizes of the hogs seen (running, or ended within HOGS_SEEN_S) per pool, none smaller
    than another of its pool."""
    now = time.time() if now is None else now
    rows = db.query(
        f"SELECT DISTINCT pool, cores, {_HOG_GPUS}, coalesce(mem_bytes, 0) FROM hogs"
        " WHERE cores IS NOT NULL AND (state = ? OR ended_at > ?)",
        (states.HOG_RUNNING, now - HOGS_SEEN_S),
    )
    pools: dict[str, list[Resources]] = {}
    for pool, *size in rows:
        pools.setdefault(pool, []).append(Resources(*size))
    return {
        pool: [size for size in sizes if not any(size != other and size.fits_in(other) for other in sizes)]
        for pool, sizes in pools.items()
    }


def misfits(db: Database, task_ids: list[int] | None = None, now: float | None = None) -> Misfits | None:
    """The waiting tasks (of `task_ids`, or all) that fit none of the hogs of their pool seen;
    None when no hog was seen, so that nothing can be told. A pool with no hog seen is left out
    (unserved_pools speaks of it)."""
    pools = hog_sizes(db, now)
    if not pools:
        return None
    # A task fits when its pool has no hog seen, or one of its pool's hogs is as large.
    fits = [f"s.pool NOT IN ({placeholders(pools)})"]
    fits_params: list = list(pools)
    fit = f"(s.cores <= ? AND {SUBMISSION_GPU_UNITS} <= ? AND coalesce(s.mem_bytes, 0) <= ?)"
    for pool, sizes in pools.items():
        fits.append(f"(s.pool = ? AND ({' OR '.join([fit] * len(sizes))}))")
        fits_params += [pool, *(value for size in sizes for value in size)]
    fits_one = " OR ".join(fits)
    # Sizes belong to submissions, which are far fewer than tasks in most queues: only when one
    # fits no hog are the waiting tasks read.
    if not db.query_one(f"SELECT 1 FROM submissions s WHERE NOT ({fits_one}) LIMIT 1", tuple(fits_params)):
        return Misfits(0, None, None, _largest([size for sizes in pools.values() for size in sizes]))
    rows = _rows_for(
        db,
        "SELECT count(*), min(t.id) FROM tasks t JOIN submissions s ON s.id = t.submission_id"
        f" WHERE t.state = ? AND NOT ({fits_one})",
        (states.WAITING, *fits_params),
        task_ids,
    )
    count = sum(row[0] for row in rows)
    first = min((row[1] for row in rows if row[1] is not None), default=None)
    needs = None
    largest = _largest([size for sizes in pools.values() for size in sizes])
    if first is not None:
        row = db.query_one(
            f"SELECT s.cores, {SUBMISSION_GPU_UNITS}, coalesce(s.mem_bytes, 0), s.pool FROM tasks t"
            " JOIN submissions s ON s.id = t.submission_id WHERE t.id = ?",
            (first,),
        )
        if row:
            needs, largest = Resources(*row[:3]), _largest(pools[row[3]])
    return Misfits(count, first, needs, largest)


def _largest(sizes: list[Resources]) -> Resources:
    """The most of each resource that one of these sizes has."""
    return Resources(*(max(size[field] for size in sizes) for field in range(3)))


def claimed_ahead(db: Database, task_ids: list[int] | None = None) -> int:
    """Running tasks (of `task_ids`, or all) that a hog has claimed but not started yet: a hog
    takes a few tasks ahead per core, and records a start when the task's process runs."""
    rows = _rows_for(
        db,
        "SELECT count(*) FROM tasks t JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt"
        " WHERE t.state = ? AND a.started_at IS NULL",
        (states.RUNNING,),
        task_ids,
    )
    return sum(row[0] for row in rows)


def _rows_for(db: Database, select: str, params: tuple, task_ids: list[int] | None) -> list[tuple]:
    """The rows of `select` (an aggregate over tasks `t`) for all tasks, or per 500 of `task_ids`."""
    if task_ids is None:
        return db.query(select, params)
    return [
        db.query(select + f" AND t.id IN ({placeholders(chunk)})", (*params, *chunk))[0]
        for chunk in chunks(sorted(set(task_ids)), 500)
    ]


def hogs_alive(db: Database, now: float | None = None, pool: str | None = None) -> int:
    """Hogs (of `pool`, or all) that may run tasks: pending ones (their monitor started them) and
    running ones whose row beat within their lease (or, as they may beat a file instead, not long past
    it: beats.ALIVE_SQL)."""
    now = time.time() if now is None else now
    row = db.query_one(
        f"SELECT count(*) FROM hogs WHERE (state = ? OR {beats.ALIVE_SQL})"
        + ("" if pool is None else " AND pool = ?"),
        (states.HOG_PENDING, states.HOG_RUNNING, now, *(() if pool is None else (pool,))),
    )
    return row[0] if row else 0


def unserved_pools(db: Database, task_ids: list[int] | None = None) -> list[tuple[str, int]]:
    """(pool, waiting tasks) of each pool whose tasks (of `task_ids`, or all) wait while no hog
    of it is alive and no monitor serves it: nothing runs them until one starts."""
    return [
        (counts.pool, counts.waiting)
        for counts in pool_counts(db, task_ids)
        if counts.waiting and not counts.hogs and not monitor_alive(db, counts.pool)
    ]


def monitor_alive(db: Database, pool: str = DEFAULT_POOL) -> bool:
    """Whether a monitor of `pool` holds its lock on this queue (on this machine's view of the file).

    A lock file that cannot be opened for another reason than its absence counts as held: the
    caller warns only when sure. The probe holds a shared lock for a moment; a monitor starting
    in that very moment would find its lock taken, so callers probe only when no hog is alive.
    """
    try:
        fd = os.open(db.files.monitor_file(pool, ".lock"), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # no monitor ever ran beside this queue
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False  # closing the file lets go of the lock at once
    except OSError:  # BlockingIOError: a monitor holds it; any other: cannot tell
        return True
    finally:
        os.close(fd)
