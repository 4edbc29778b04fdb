"""What a task was submitted with beyond queue.TaskDetail, for `check --full`: who submitted it
from where, its kind, bundle, pool (on a queue whose submissions have one), array index or entry, and
its parents."""

from typing import NamedTuple

from hog.store.db import Database
from hog.store.queue import chunks, placeholders
from hog.store.submitting import stored_text


class Parent(NamedTuple):
    id: int
    kind: str  # 'ok': it must end done; 'any': it must only end
    state: str


class Submitted(NamedTuple):
    user: str | None
    host: str | None
    kind: str | None  # submit --kind
    bundle: str | None
    pool: str | None
    array_index: int | None
    entry: str | None
    parents: list[Parent]


def submitted(db: Database, task_ids: list[int]) -> dict[int, Submitted]:
    """What each of `task_ids` was submitted with (unknown ids are left out)."""
    found: dict[int, Submitted] = {}
    with db.snapshot() as connection:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(submissions)")}
        pool = "s.pool" if "pool" in columns else "NULL"
        for chunk in chunks(sorted(set(task_ids)), 500):
            marks = placeholders(chunk)
            for task_id, *values in connection.execute(
                f"SELECT t.id, s.user, s.host, s.kind, s.bundle, {pool}, t.array_index, t.entry"
                f" FROM tasks t JOIN submissions s ON s.id = t.submission_id WHERE t.id IN ({marks})",
                tuple(chunk),
            ):
                found[task_id] = Submitted(*map(stored_text, values), [])
            for child, parent, kind, state in connection.execute(
                "SELECT d.child, d.parent, d.kind, t.state FROM dependencies d"
                f" JOIN tasks t ON t.id = d.parent WHERE d.child IN ({marks}) ORDER BY d.child, d.parent",
                tuple(chunk),
            ):
                found[child].parents.append(Parent(parent, kind, state))
    return found
