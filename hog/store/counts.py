"""The count of tasks in each state (`state_counts`), which every change of a task's state moves.

`status` reads the counts instead of counting a million rows; the doorbell hears what moved.
"""

import apsw

from hog.store import doorbell, states


def count_tasks(connection: apsw.Connection, state: str, delta: int) -> None:
    if delta:
        connection.execute("UPDATE state_counts SET tasks = tasks + ? WHERE state = ?", (delta, state))
        doorbell.note_counted(connection, state, delta)


def move_counts(connection: apsw.Connection, old: str, new: str, number: int = 1) -> None:
    """Every change of state passes here, so the transition table guards them all."""
    if number and old != new:
        if not states.can_move(states.TASK_TRANSITIONS, old, new):
            # A bug, not a user mistake: the transaction rolls back and nothing changes.
            raise RuntimeError(f"no task may go from {old} to {new}")
        count_tasks(connection, old, -number)
        count_tasks(connection, new, number)
