"""How pools look to the user: the pools table of `status`, the words for a pool whose tasks
wait with no hog and no monitor to run them, and the note on hogs started by hand beside a monitor."""

from typing import TYPE_CHECKING

import click

from hog.pools import DEFAULT_POOL
from hog.timeutil import counted

if TYPE_CHECKING:  # the store's modules are imported only by the commands that read them
    from hog.store.db import Database
    from hog.store.hoglist import HogRow
    from hog.store.pools import PoolCounts

POOL_COLUMNS = ("pool", "waiting", "running", "hogs", "monitor")


def pool_rows(db: "Database", counts: list["PoolCounts"]) -> list[tuple]:
    """The rows of the pools table: each pool's tasks and live hogs, and whether a monitor serves it."""
    from hog.store.outlook import monitor_alive

    return [(*pool, monitor_alive(db, pool.pool)) for pool in counts]


def unserved_text(pool: str, waiting: int) -> str:
    """Why some waiting tasks never start: their pool has no hog and no monitor."""
    return (
        f"{counted(waiting, 'waiting task')} of pool {pool}: no hog of pool {pool} runs and no monitor "
        f"serves it, so {'it waits' if waiting == 1 else 'they wait'} until one starts "
        f"{_start_one(pool)}"
    )


def _start_one(pool: str) -> str:
    option = "" if pool == DEFAULT_POOL else f" --pool {pool}"
    return f"(`slurm-hog monitor{option} --daemon`, or `slurm-hog hog{option}` in an allocation)"


def warn_if_unserved(db: "Database", pool: str) -> None:
    """At submit: say when nothing serves the pool the tasks were given (a typo, or a monitor
    not started yet); the tasks are in the queue either way. Reads no task: a client may submit
    thousands of times."""
    from hog.store.outlook import hogs_alive, monitor_alive

    if not hogs_alive(db, pool=pool) and not monitor_alive(db, pool):
        click.echo(
            f"submit: no hog of pool {pool} runs and no monitor serves it: the tasks wait until one "
            f"starts {_start_one(pool)}",
            err=True,
        )


def beside_monitor_notes(db: "Database", hogs: list["HogRow"]) -> list[str]:
    """For `show -H`: the live hogs started by hand in a pool that a monitor serves. Allowed (they
    run the pool's tasks, and the monitor counts them against its --hogs), and said."""
    from hog.store import states
    from hog.store.outlook import monitor_alive

    notes = []
    served: dict[str, bool] = {}
    for hog in hogs:
        if hog.backend != "manual" or hog.state not in states.HOG_LIVE_STATES:
            continue
        if hog.pool not in served:
            served[hog.pool] = monitor_alive(db, hog.pool)
        if served[hog.pool]:
            notes.append(
                f"hog {hog.id} of pool {hog.pool} was started by hand while a monitor serves pool "
                f"{hog.pool}: both run its tasks, and the monitor counts it against its --hogs"
            )
    return notes
