"""The queue seen pool by pool: what one pool's waiting tasks need, for its monitor to size its
hogs by, and how each pool stands (its waiting and running tasks, its live hogs), for `status`.

A pool's waiting tasks are a range of the index tasks_pool_waiting, whose condition names the
state as written here: reading one pool costs nothing for the tasks of the others.
"""

import time
from typing import NamedTuple

from hog.store import states
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS, Resources
from hog.store.queue import chunks, placeholders

_WAITING = f"t.state = '{states.WAITING}'"


class Demand(NamedTuple):
    waiting: int  # tasks of the pool waiting to be claimed
    needs: list[tuple[Resources, int]]  # what the first of them ask for: (cores, GPUs, memory), count


def demand(db: Database, pool: str, limit: int) -> Demand:
    """Tasks of `pool` waiting to be claimed, and what the first `limit` of them (in claim order)
    need: the one place that reads the cores, GPUs and memory the monitor sizes its hogs by."""
    with db.snapshot() as connection:
        waiting = connection.execute(f"SELECT count(*) FROM tasks t WHERE t.pool = ? AND {_WAITING}", (pool,))
        count = waiting.fetchall()[0][0]
        needs = connection.execute(
            "SELECT cores, gpus, mem_bytes, count(*) FROM ("
            f" SELECT s.cores, {SUBMISSION_GPU_UNITS} AS gpus, coalesce(s.mem_bytes, 0) AS mem_bytes"
            " FROM tasks t JOIN submissions s ON s.id = t.submission_id"
            f" WHERE t.pool = ? AND {_WAITING} ORDER BY t.priority DESC, t.id LIMIT ?"
            ") GROUP BY cores, gpus, mem_bytes",
            (pool, limit),
        ).fetchall()
    return Demand(count, [(Resources(*shape), count) for *shape, count in needs])


class PoolCounts(NamedTuple):
    pool: str
    waiting: int
    running: int
    hogs: int  # pending, or running with a heartbeat within their lease


def pool_counts(
    db: Database,
    task_ids: list[int] | None = None,
    pools: tuple[str, ...] | None = None,
    now: float | None = None,
) -> list[PoolCounts]:
    """Each pool with tasks waiting or running (of `task_ids`, or all) or with live hogs, by name;
    only those of `pools` when given."""
    now = time.time() if now is None else now
    counts: dict[str, list[int]] = {}
    only = "" if pools is None else f" AND pool IN ({placeholders(pools)})"
    with db.snapshot() as connection:
        for column, condition, params in ((0, _WAITING, ()), (1, "t.state = ?", (states.RUNNING,))):
            select = f"SELECT t.pool, count(*) FROM tasks t WHERE {condition}{only}"
            params += pools or ()
            groups = [(select + " GROUP BY t.pool", params)]
            if task_ids is not None:
                groups = [
                    (select + f" AND t.id IN ({placeholders(chunk)}) GROUP BY t.pool", (*params, *chunk))
                    for chunk in chunks(sorted(set(task_ids)), 500)
                ]
            for sql, values in groups:
                for pool, number in connection.execute(sql, values):
                    counts.setdefault(pool, [0, 0, 0])[column] += number
        hogs = connection.execute(
            "SELECT pool, count(*) FROM hogs"
            f" WHERE (state = ? OR (state = ? AND heartbeat_at + lease_s >= ?)){only} GROUP BY pool",
            (states.HOG_PENDING, states.HOG_RUNNING, now, *(pools or ())),
        )
        for pool, number in hogs:
            counts.setdefault(pool, [0, 0, 0])[2] += number
    return [PoolCounts(pool, *numbers) for pool, numbers in sorted(counts.items())]
