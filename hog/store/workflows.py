"""Submitting graphs of tasks: dependencies, arrays, entries, held bundles; releasing them.

One call submits every step of a workflow in one transaction (all or nothing). A step is one
submission: one command per task, or one command expanded per array index or input line.
"""

import time
from collections.abc import Iterable
from typing import NamedTuple

import apsw

from hog import gpushare
from hog.errors import UsageError
from hog.store import dependencies, states
from hog.store.counts import count_tasks, move_counts
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS
from hog.store.queue import chunks, placeholders
from hog.store.submitting import SubmitOptions, add_submission, encode_environment


class NewTask(NamedTuple):
    """One task of a step; plain tuples in this order do as well (a million are cheaper so)."""

    command: str
    argv: str | None = None  # JSON list when run without a shell
    array_index: int | None = None
    entry: str | None = None


class ArrayTasks(NamedTuple):
    """One task per index for each command, {index} replaced in its text and argv: sqlite makes
    the rows itself, so an array of a million costs no Python per task."""

    commands: Iterable[tuple[str, str | None]]
    indexes: range


class Step(NamedTuple):
    """One submission of a workflow."""

    options: SubmitOptions
    tasks: Iterable[NewTask] | ArrayTasks
    after: tuple[tuple[int | str, str], ...] = ()  # queue ids or names, with their kind
    after_steps: tuple[tuple[int, str], ...] = ()  # earlier steps of this call, with their kind
    hold: bool = False
    bundle: str | None = None


def submit_steps(db: Database, steps: list[Step], now: float | None = None) -> list[tuple[int, int]]:
    """Add every step in one transaction; the (first, last) ids of each, in order.

    A step whose parents have not all ended is `blocked`, a held one `held`. Nothing is added
    when any step is refused (an unknown parent, a parent that already can never succeed).
    """
    now = time.time() if now is None else now
    ranges: list[tuple[int, int]] = []
    with db.transaction() as connection:
        for step in steps:
            parents = dependencies.resolve(connection, step.after, db.path)
            unmet = dependencies.unmet_parents(connection, parents)
            for index, kind in step.after_steps:
                first, last = ranges[index]
                for parent in range(first, last + 1):
                    parents[parent] = dependencies.stricter(parents.get(parent), kind)
                    unmet[parent] = True
            waiting_for = sum(unmet.values())
            state = states.HELD if step.hold else states.BLOCKED if waiting_for else states.WAITING
            first, last = _insert(connection, step, state, waiting_for, now)
            dependencies.add_edges(connection, range(first, last + 1), parents, unmet)
            count_tasks(connection, state, last - first + 1)
            ranges.append((first, last))
    return ranges


# The indexes of an array, made by sqlite (a recursive query yields them in order, so the ids
# follow the indexes); {index} is replaced as Python would (an integer becomes its decimal text).
_ARRAY_INSERT = """
WITH RECURSIVE indexes(i) AS (SELECT ?1 UNION ALL SELECT i + ?2 FROM indexes WHERE i + ?2 <= ?3)
INSERT INTO tasks(command, argv, array_index, entry, submission_id, priority, state, unmet, pool)
SELECT replace(?4, '{{index}}', i), replace(?5, '{{index}}', i), i, NULL, {shared} FROM indexes
"""


def _insert(connection: apsw.Connection, step: Step, state: str, unmet: int, now: float) -> tuple[int, int]:
    variables = encode_environment(step.options.environment or {})
    submission_id = add_submission(connection, step.options, variables, now, step.bundle)
    # What every row shares is written into the statement (integers, a word of states.py and the
    # pool's name, which add_submission has checked), so a row binds only its own values and
    # executemany reads the tasks as they come: 1,000,000 rows of an --each-line file went in
    # faster than `submit --file` adds its lines.
    shared = f"{int(submission_id)}, {int(step.options.priority)}, '{state}', {int(unmet)}"
    shared += f", '{step.options.pool}'"
    before = connection.total_changes()
    if isinstance(step.tasks, ArrayTasks):
        indexes = step.tasks.indexes
        for command, argv in step.tasks.commands:
            connection.execute(
                _ARRAY_INSERT.format(shared=shared), (indexes[0], indexes.step, indexes[-1], command, argv)
            )
    else:
        connection.executemany(
            "INSERT INTO tasks(command, argv, array_index, entry, submission_id, priority, state, unmet,"
            f" pool) VALUES (?, ?, ?, ?, {shared})",
            step.tasks,
        )
    count = connection.total_changes() - before
    if not count:
        raise UsageError("no command to submit: give a command, or a file with at least one")
    # Under the write lock the new ids are contiguous.
    last = connection.last_insert_rowid()
    return last - count + 1, last


# -- held tasks ------------------------------------------------------------------------------


def find_tasks(
    connection: apsw.Connection, ids: Iterable[int] = (), names: Iterable[str] = (), bundle: str | None = None
) -> list[int]:
    """The ids that exist among `ids`, with every task bearing one of `names` or in `bundle`."""
    found: set[int] = set()
    for chunk in chunks(sorted(set(ids)), 500):
        found.update(
            row[0]
            for row in connection.execute(
                f"SELECT id FROM tasks WHERE id IN ({placeholders(chunk)})", tuple(chunk)
            )
        )
    for column, value in [("name", name) for name in names] + ([("bundle", bundle)] if bundle else []):
        found.update(
            row[0]
            for row in connection.execute(
                f"SELECT t.id FROM submissions s JOIN tasks t ON t.submission_id = s.id WHERE s.{column} = ?",
                (value,),
            )
        )
    return sorted(found)


def release(
    db: Database, ids: Iterable[int] = (), names: Iterable[str] = (), bundle: str | None = None
) -> tuple[list[int], int]:
    """Let held tasks go: blocked while parents remain, else waiting. (Released, others found)."""
    ids, names = list(ids), list(names)
    with db.transaction() as connection:
        found = find_tasks(connection, ids, names, bundle)
        missing = sorted(set(ids) - set(found))
        if missing:
            raise UsageError(
                f"no task {', '.join(map(str, missing[:10]))} in {db.path}: nothing was released"
            )
        if not found:
            what = f"bundle {bundle!r}" if bundle else f"name {names[0]!r}" if names else "these ids"
            raise UsageError(f"no task in {what} in {db.path}: nothing was released")
        released: list[int] = []
        for chunk in chunks(found, 500):
            marks = placeholders(chunk)
            for new_state, test in ((states.BLOCKED, "unmet > 0"), (states.WAITING, "unmet = 0")):
                moved = [
                    row[0]
                    for row in connection.execute(
                        f"UPDATE tasks SET state = ? WHERE id IN ({marks}) AND state = ? AND {test}"
                        " RETURNING id",
                        (new_state, *chunk, states.HELD),
                    )
                ]
                move_counts(connection, states.HELD, new_state, len(moved))
                released += moved
    return sorted(released), len(found) - len(released)


def array_place(db: Database, task_id: int) -> tuple[int | None, str | None]:
    """A task's array index and entry (None when it has none)."""
    row = db.query_one("SELECT array_index, entry FROM tasks WHERE id = ?", (task_id,))
    return (row[0], row[1]) if row else (None, None)


def waiting_reasons(db: Database, task_ids: list[int]) -> dict[int, str]:
    """Why each of these tasks waits for its parents or was cancelled by one (others left out)."""
    found: dict[int, str] = {}
    for chunk in chunks(sorted(set(task_ids)), 500):
        for task_id, state, unmet, reason in db.query(
            f"SELECT id, state, unmet, reason FROM tasks WHERE id IN ({placeholders(chunk)})"
            " AND (reason IS NOT NULL OR unmet > 0)",
            tuple(chunk),
        ):
            if reason is not None:
                found[task_id] = reason
            elif state in (states.BLOCKED, states.HELD):
                found[task_id] = f"{unmet} parent{'s' if unmet != 1 else ''} still to end"
    return found


# -- export ----------------------------------------------------------------------------------


def tasks_for(
    db: Database, ids: Iterable[int] = (), names: Iterable[str] = (), bundle: str | None = None
) -> list[int]:
    """The tasks picked by ids, names or a bundle; refuses picks that find nothing."""
    ids, names = list(ids), list(names)
    with db.snapshot() as connection:
        found = find_tasks(connection, ids, names, bundle)
    missing = sorted(set(ids) - set(found))
    if missing:
        raise UsageError(f"no task {', '.join(map(str, missing[:10]))} in {db.path}")
    if not found:
        what = f"bundle {bundle!r}" if bundle else f"named {names[0]!r}" if names else "given"
        raise UsageError(f"no task {what} in {db.path}: `slurm-hog show` lists them")
    return found


def export(db: Database, task_ids: list[int], with_environment: bool = False) -> list[dict]:
    """The tasks as workflow-file entries, with what each was submitted with and its parents
    among them; names are made unique (`NAME-ID`) where several tasks share one."""
    from hog.store.dependencies import AFTER_OK, edges_among
    from hog.store.submitting import decode_argv, decode_environment

    rows: list[tuple] = []
    for chunk in chunks(sorted(set(task_ids)), 500):
        rows.extend(
            db.query(
                f"SELECT t.id, s.name, t.command, t.argv, s.cores, {SUBMISSION_GPU_UNITS}, s.mem_bytes,"
                " s.time_limit_s, s.max_retries, t.priority, s.stdout_pattern, s.stderr_pattern, s.cwd,"
                " e.variables, s.pool"
                " FROM tasks t JOIN submissions s ON s.id = t.submission_id"
                " JOIN environments e ON e.id = s.environment_id"
                f" WHERE t.id IN ({placeholders(chunk)}) ORDER BY t.id",
                tuple(chunk),
            )
        )
    uses: dict[str | None, int] = {}
    for row in rows:
        uses[row[1]] = uses.get(row[1], 0) + 1
    names = {
        row[0]: row[1] if row[1] and uses[row[1]] == 1 else f"{row[1] or 'task'}-{row[0]}" for row in rows
    }
    parents: dict[int, dict[str, list[str]]] = {}
    for edge in edges_among(db, list(names)):
        if edge.parent in names:
            kind = "after" if edge.kind == AFTER_OK else "after_any"
            parents.setdefault(edge.child, {}).setdefault(kind, []).append(names[edge.parent])
    entries = []
    for (
        task_id,
        _,
        command,
        argv,
        cores,
        gpus,
        mem,
        time_s,
        retries,
        priority,
        out,
        err,
        cwd,
        env,
        pool,
    ) in rows:
        entry: dict = {"name": names[task_id]}
        entry.update({"argv": decode_argv(argv)} if argv else {"command": command})
        entry.update(
            cores=cores, gpus=gpushare.value(gpus), mem=mem, time=time_s, retries=retries, priority=priority
        )
        entry.update(stdout=out, stderr=err, cwd=cwd, pool=pool)
        if with_environment:
            entry["environment"] = decode_environment(env)
        entry.update(parents.get(task_id, {}))
        entries.append({key: value for key, value in entry.items() if value is not None})
    return entries
