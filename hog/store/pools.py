"""The queue seen pool by pool: what one pool's waiting tasks need, for its monitor to size its
hogs by, and how each pool stands (its waiting and running tasks, its live hogs), for `status`.

A pool's waiting tasks are a range of the index tasks_pool_waiting, whose condition names the
state as written here: reading one pool costs nothing for the tasks of the others.
"""

import time
from typing import NamedTuple

import apsw

from hog.pools import DEFAULT_POOL
from hog.store import beats, states
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS, Resources
from hog.store.queue import chunks, placeholders

_WAITING = f"t.state = '{states.WAITING}'"
# The pools that have waiting tasks, one index seek each (a skip scan of tasks_pool_waiting).
_WAITING_POOLS = f"""
WITH RECURSIVE seen(pool) AS (
    SELECT (SELECT pool FROM tasks t INDEXED BY tasks_pool_waiting WHERE {_WAITING} ORDER BY pool LIMIT 1)
    UNION ALL
    SELECT (
        SELECT pool FROM tasks t INDEXED BY tasks_pool_waiting
        WHERE {_WAITING} AND t.pool > seen.pool ORDER BY pool LIMIT 1
    ) FROM seen WHERE seen.pool IS NOT NULL
)
SELECT pool FROM seen WHERE pool IS NOT NULL
"""


def waiting_by_pool(connection: apsw.Connection) -> dict[str, int]:
    """Waiting tasks per pool, for the cost of counting those of the pools other than the default:
    the default pool's are the rest of the count kept in state_counts. Counting a million waiting
    tasks took 0.4-1.2 s here; a queue whose big pool is the default costs nothing more."""
    pools = [row[0] for row in connection.execute(_WAITING_POOLS)]
    counts = {
        pool: connection.execute(
            f"SELECT count(*) FROM tasks t WHERE t.pool = ? AND {_WAITING}", (pool,)
        ).fetchall()[0][0]
        for pool in pools
        if pool != DEFAULT_POOL
    }
    if DEFAULT_POOL in pools:
        total = connection.execute("SELECT tasks FROM state_counts WHERE state = ?", (states.WAITING,))
        counts[DEFAULT_POOL] = total.fetchall()[0][0] - sum(counts.values())
    return counts


class Demand(NamedTuple):
    waiting: int  # tasks of the pool waiting to be claimed
    needs: list[tuple[Resources, int]]  # what the first of them ask for: (cores, GPUs, memory), count


def demand(db: Database, pool: str, limit: int) -> Demand:
    """Tasks of `pool` waiting to be claimed, and what the first `limit` of them (in claim order)
    need: the one place that reads the cores, GPUs and memory the monitor sizes its hogs by."""
    with db.snapshot() as connection:
        count = waiting_by_pool(connection).get(pool, 0)
        needs = connection.execute(
            "SELECT cores, gpus, mem_bytes, count(*) FROM ("
            f" SELECT s.cores, {SUBMISSION_GPU_UNITS} AS gpus, coalesce(s.mem_bytes, 0) AS mem_bytes"
            " FROM tasks t JOIN submissions s ON s.id = t.submission_id"
            f" WHERE t.pool = ? AND {_WAITING} ORDER BY t.priority DESC, t.id LIMIT ?"
            ") GROUP BY cores, gpus, mem_bytes",
            (pool, limit),
        ).fetchall()
    return Demand(count, [(Resources(*shape), count) for *shape, count in needs])


def claim_pool(connection: apsw.Connection, hog_id: int, bundle: str | None) -> str:
    """The pool whose tasks a hog claims: its own; a hog of `tune`, which runs a sample (`bundle`),
    the pool the sample's tasks come from."""
    if bundle is None:
        pools = connection.execute("SELECT pool FROM hogs WHERE id = ?", (hog_id,))
    else:
        pools = connection.execute("SELECT pool FROM submissions WHERE bundle = ? LIMIT 1", (bundle,))
    return next(iter(pools), (DEFAULT_POOL,))[0]


class PoolCounts(NamedTuple):
    pool: str
    waiting: int
    running: int
    hogs: int  # pending, or running and not long past their lease (beats.ALIVE_SQL)


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
        if task_ids is None:
            for pool, number in waiting_by_pool(connection).items():
                if pools is None or pool in pools:
                    counts[pool] = [number, 0, 0]
        for column, condition, params in ((0, _WAITING, ()), (1, "t.state = ?", (states.RUNNING,))):
            if column == 0 and task_ids is None:
                continue  # counted above
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
            f"SELECT pool, count(*) FROM hogs WHERE (state = ? OR {beats.ALIVE_SQL}){only} GROUP BY pool",
            (states.HOG_PENDING, states.HOG_RUNNING, now, *(pools or ())),
        )
        for pool, number in hogs:
            counts.setdefault(pool, [0, 0, 0])[2] += number
    return [PoolCounts(pool, *numbers) for pool, numbers in sorted(counts.items())]
