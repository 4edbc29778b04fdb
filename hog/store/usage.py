"""What a hog's cores did while they ran no task, written with its heartbeat.

The hog integrates its free cores over time by cause (pilot/usage.py); `report` sets the sums
against the core-seconds the hog held and those its tasks ran.
"""

from typing import NamedTuple

import apsw


class HogUsage(NamedTuple):
    """Cumulative since the hog's process started; core-seconds unless named otherwise."""

    launched_at: float  # epoch seconds: when the hog's process started
    idle_startup_core_s: float  # before its first claim came back
    idle_lock_core_s: float  # free while a claim waited for the queue's lock and was written
    idle_empty_core_s: float  # free with no claim under way: nothing (more) it could run
    idle_drain_core_s: float  # free while it drained, stopped or left
    lock_wait_s: float  # seconds its database thread waited for the lock (not per core)


def record(connection: apsw.Connection, hog_id: int, usage: HogUsage) -> None:
    """Inside the hog's exchange transaction: its sums so far replace the last ones."""
    connection.execute(
        "UPDATE hogs SET launched_at = ?, idle_startup_core_s = ?, idle_lock_core_s = ?,"
        " idle_empty_core_s = ?, idle_drain_core_s = ?, lock_wait_s = ? WHERE id = ?",
        (*usage, hog_id),
    )
