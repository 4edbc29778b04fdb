"""The core API of the queue for its users: read, cancel, retry, clean up.

Tasks come in through submitting.py; the hog side (registration, claims and results, reaping) is
in claims.py; every SQL write of the domain lives in the store's modules.

Each change of a task's state is one guarded UPDATE (`WHERE id = ? AND state = ? AND attempt = ?`)
whose row count is checked, and every change also moves the matching counts in `state_counts`
(counts.py).
"""

import time
from collections.abc import Iterator, Sequence, Sized

import apsw

from hog.errors import NotFoundError
from hog.records import NamedTuple
from hog.store import doorbell, states
from hog.store.counts import move_counts
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS
from hog.store.submitting import decode_argv, stored_text

# -- reading ---------------------------------------------------------------------------------


class TaskRow(NamedTuple):
    """One line of a task listing: the task and its latest attempt."""

    id: int
    state: str
    name: str | None
    cores: int
    gpus: int  # GPU units (hog.gpushare)
    priority: int
    attempt: int
    exit_code: int | None
    signal: int | None
    host: str | None
    started_at: float | None
    ended_at: float | None
    command: str
    pool: str


TASK_COLUMNS = TaskRow._fields

# In TaskRow's order: TaskRow._make is its row-to-record function.
_TASK_SELECT = f"""
SELECT t.id, t.state, s.name, s.cores, {SUBMISSION_GPU_UNITS}, t.priority, t.attempt, t.exit_code,
       t.signal, a.host, a.started_at, coalesce(t.ended_at, a.ended_at), t.command, t.pool
FROM tasks t
JOIN submissions s ON s.id = t.submission_id
LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt
"""


def iter_tasks(
    db: Database,
    state_filter: tuple[str, ...] = (),
    name: str | None = None,
    limit: int | None = None,
    ids: tuple[int, ...] = (),
    pool: str | None = None,
) -> Iterator[TaskRow]:
    """Tasks oldest first, streamed."""
    conditions: dict[str, Sequence] = {} if pool is None else {"t.pool = ?": (pool,)}
    if state_filter:
        conditions[f"t.state IN ({placeholders(state_filter)})"] = state_filter
    if name is not None:
        conditions["s.name = ?"] = (name,)
    if ids:
        conditions[f"t.id IN ({placeholders(ids)})"] = ids
    return map(TaskRow._make, db.stream(*filtered(_TASK_SELECT, conditions, "t.id", limit)))


class Attempt(NamedTuple):
    """One run of a task by one hog."""

    task_id: int
    attempt: int
    hog_id: int | None
    host: str | None
    claimed_at: float
    started_at: float | None
    ended_at: float | None
    cores: str | None  # the CPU ids it was pinned to, comma-separated
    gpus: str | None
    exit_code: int | None
    signal: int | None
    reason: str | None  # one of states.REASON_*; None while it runs
    max_rss_kib: int | None
    cpu_user_s: float | None
    cpu_system_s: float | None
    stderr_tail: str | None


# In Attempt's order: Attempt._make is its row-to-record function.
_ATTEMPT_SELECT = """
SELECT task_id, attempt, hog_id, host, claimed_at, started_at, ended_at, cores, gpus, exit_code,
       signal, reason, max_rss_kib, cpu_user_s, cpu_system_s, stderr_tail
FROM attempts
"""


class TaskDetail(NamedTuple):
    """Everything about one task: what was asked for, where it stands, and its attempts."""

    id: int
    state: str
    name: str | None
    command: str
    cores: int
    gpus: int  # GPU units (hog.gpushare)
    mem_bytes: int | None
    time_limit_s: float | None
    priority: int
    max_retries: int
    retries_used: int
    attempt: int
    exit_code: int | None
    signal: int | None
    submitted_at: float
    ended_at: float | None
    cwd: str
    stdout_pattern: str | None
    stderr_pattern: str | None
    argv: list[str] | None
    cancel_requested: bool
    attempts: list[Attempt]  # oldest first


# In TaskDetail's order, up to argv and cancel_requested, which _task_detail decodes.
_DETAIL_SELECT = f"""
SELECT t.id, t.state, s.name, t.command, s.cores, {SUBMISSION_GPU_UNITS}, s.mem_bytes, s.time_limit_s,
       t.priority, s.max_retries, t.retries_used, t.attempt, t.exit_code, t.signal, s.submitted_at,
       t.ended_at, s.cwd, s.stdout_pattern, s.stderr_pattern, t.argv, t.cancel_requested
FROM tasks t JOIN submissions s ON s.id = t.submission_id
"""


def _task_detail(row: tuple) -> TaskDetail:
    """A _DETAIL_SELECT row; its attempts are added as they are read."""
    *copied, argv, cancel_requested = row
    return TaskDetail(*map(stored_text, copied), decode_argv(argv), bool(cancel_requested), [])


def get_tasks(db: Database, task_ids: list[int], missing_ok: bool = False) -> list[TaskDetail]:
    """Details of each id, in the order asked; NotFoundError names the ids that do not exist.

    With `missing_ok`, unknown ids are left out instead.
    """
    found: dict[int, TaskDetail] = {}
    with db.snapshot() as connection:
        for chunk in chunks(sorted(set(task_ids)), 500):
            marks = placeholders(chunk)
            for row in connection.execute(_DETAIL_SELECT + f" WHERE t.id IN ({marks})", tuple(chunk)):
                found[row[0]] = _task_detail(row)
            for row in connection.execute(
                _ATTEMPT_SELECT + f" WHERE task_id IN ({marks}) ORDER BY task_id, attempt", tuple(chunk)
            ):
                attempt = Attempt._make(row)
                found[attempt.task_id].attempts.append(attempt)
    missing = [task_id for task_id in task_ids if task_id not in found]
    if missing and not missing_ok:
        raise NotFoundError(f"no task {_id_list(missing)} in {db.path}: `slurm-hog show` lists them")
    return [found[task_id] for task_id in task_ids if task_id in found]


def _rows_for_ids(
    connection: apsw.Connection, columns: str, task_ids: list[int], db_path: str, consequence: str
) -> list[tuple]:
    """`columns` of the tasks with these ids; NotFoundError naming the unknown ones."""
    rows: list[tuple] = []
    for chunk in chunks(sorted(set(task_ids)), 500):
        marks = placeholders(chunk)
        rows.extend(connection.execute(f"SELECT {columns} FROM tasks WHERE id IN ({marks})", tuple(chunk)))
    missing = sorted(set(task_ids) - {row[0] for row in rows})
    if missing:
        raise NotFoundError(f"no task {_id_list(missing)} in {db_path}: {consequence}")
    return rows


def placeholders(values: Sized) -> str:
    """One placeholder per value, for `IN (...)`; NULL, which matches nothing, for none."""
    return ",".join("?" * len(values)) or "NULL"


def filtered(
    select: str, conditions: dict[str, Sequence], order_by: str, limit: int | None
) -> tuple[str, tuple]:
    """`select` with every condition (SQL: its values) AND-ed, ordered, at most `limit` rows."""
    sql = select + (" WHERE " + " AND ".join(conditions) if conditions else "") + f" ORDER BY {order_by}"
    params = tuple(value for values in conditions.values() for value in values)
    if limit is not None:
        sql += " LIMIT ?"
        params += (limit,)
    return sql, params


def chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _id_list(ids: list[int]) -> str:
    shown = ", ".join(str(task_id) for task_id in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def task_states(db: Database, task_ids: list[int]) -> dict[int, str]:
    result: dict[int, str] = {}
    with db.snapshot() as connection:
        for chunk in chunks(sorted(set(task_ids)), 500):
            marks = placeholders(chunk)
            result.update(
                connection.execute(f"SELECT id, state FROM tasks WHERE id IN ({marks})", tuple(chunk))
            )
    return result


def require_ids_exist(db: Database, task_ids: list[int]) -> None:
    known = task_states(db, task_ids)
    missing = [task_id for task_id in task_ids if task_id not in known]
    if missing:
        raise NotFoundError(f"no task {_id_list(missing)} in {db.path}: `slurm-hog show` lists them")


class Status(NamedTuple):
    tasks: dict[str, int]
    hogs: dict[str, int]
    finished_last_minute: int
    seconds_to_empty: float | None

    @property
    def active(self) -> int:
        return self.tasks.get(states.WAITING, 0) + self.tasks.get(states.RUNNING, 0)

    @property
    def to_go(self) -> int:
        """Every task still to end: active ones and those waiting for their parents or a release."""
        return self.active + self.tasks.get(states.BLOCKED, 0) + self.tasks.get(states.HELD, 0)


def status(db: Database, now: float | None = None, stuck: int = 0) -> Status:
    """Counts and the recent rate; the time to empty leaves out `stuck` waiting tasks, which no
    hog can run (outlook.misfits), and is None when only those remain or no task ended lately."""
    now = time.time() if now is None else now
    with db.snapshot() as connection:
        counts = dict(connection.execute("SELECT state, tasks FROM state_counts"))
        hogs = dict(connection.execute("SELECT state, count(*) FROM hogs GROUP BY state"))
        recent = connection.execute("SELECT count(*) FROM tasks WHERE ended_at > ?", (now - 60,)).fetchall()[
            0
        ][0]
    tasks = {state: counts.get(state, 0) for state in states.TASK_STATES}
    result = Status(tasks, {s: hogs.get(s, 0) for s in states.HOG_STATES}, recent, None)
    # Blocked and held tasks are work still to do: the queue is empty only once they have run.
    remaining = max(0, result.to_go - stuck)
    seconds = (
        remaining / (recent / 60.0) if recent and remaining > 0 else (None if remaining or stuck else 0.0)
    )
    return result._replace(seconds_to_empty=seconds)


# -- user edits ------------------------------------------------------------------------------


class CancelOutcome(NamedTuple):
    cancelled: list[int]  # were waiting, blocked or held: cancelled now
    killing: list[int]  # were running: their hogs kill them
    skipped: list[tuple[int, str]]  # had already ended
    cancelled_from: dict[str, int]  # how many of `cancelled` were in each state


def cancel(
    db: Database,
    task_ids: list[int] | None = None,
    state_filter: tuple[str, ...] = (),
    now: float | None = None,
) -> CancelOutcome:
    """Cancel the given ids, or every task in `state_filter` (all active ones when both empty)."""
    now = time.time() if now is None else now
    cancelled: list[int] = []
    killing: list[int] = []
    skipped: list[tuple[int, str]] = []
    with db.transaction() as connection:
        if task_ids:
            rows = _rows_for_ids(connection, "id, state, attempt", task_ids, db.path, "nothing was cancelled")
        else:
            wanted = state_filter or states.ACTIVE_STATES
            marks = placeholders(wanted)
            rows = list(
                connection.execute(
                    f"SELECT id, state, attempt FROM tasks WHERE state IN ({marks})", tuple(wanted)
                )
            )
        moved: dict[str, int] = {}
        for task_id, state, attempt in rows:
            if state in (states.WAITING, states.BLOCKED, states.HELD):
                connection.execute(
                    "UPDATE tasks SET state = ?, ended_at = ? WHERE id = ? AND state = ? AND attempt = ?",
                    (states.CANCELLED, now, task_id, state, attempt),
                )
                cancelled.append(task_id)
                moved[state] = moved.get(state, 0) + 1
            elif state == states.RUNNING:
                connection.execute(
                    "UPDATE tasks SET cancel_requested = 1 WHERE id = ? AND state = ? AND attempt = ?",
                    (task_id, states.RUNNING, attempt),
                )
                killing.append(task_id)
                doorbell.note(connection, doorbell.CANCEL)
            else:
                skipped.append((task_id, state))
        for state, number in moved.items():
            move_counts(connection, state, states.CANCELLED, number)
        from hog.store.dependencies import settle  # imports this module

        settle(connection, cancelled, now)
    return CancelOutcome(cancelled, killing, skipped, moved)


def retry(db: Database, task_ids: list[int] | None = None) -> tuple[list[int], list[tuple[int, str]]]:
    """Put failed, timed-out or cancelled tasks back to waiting, with a fresh retry budget.

    With no ids, every failed and timed-out task. Returns (requeued, skipped with their state).
    """
    requeued: list[int] = []
    skipped: list[tuple[int, str]] = []
    moved: dict[str, int] = {}
    with db.transaction() as connection:
        if task_ids:
            rows = _rows_for_ids(connection, "id, state", task_ids, db.path, "nothing was retried")
        else:
            ended_badly = (states.FAILED, states.TIMEOUT)
            rows = list(
                connection.execute(
                    f"SELECT id, state FROM tasks WHERE state IN ({placeholders(ended_badly)})", ended_badly
                )
            )
        for task_id, state in rows:
            if state not in states.RETRYABLE_STATES:
                skipped.append((task_id, state))
                continue
            connection.execute(
                "UPDATE tasks SET state = ?, retries_used = 0, crashes = 0,"
                " cancel_requested = 0, exit_code = NULL, signal = NULL, ended_at = NULL"
                " WHERE id = ? AND state = ?",
                (states.WAITING, task_id, state),
            )
            requeued.append(task_id)
            moved[state] = moved.get(state, 0) + 1
        for state, number in moved.items():
            move_counts(connection, state, states.WAITING, number)
        from hog.store.dependencies import rearm  # imports this module

        rearm(connection, requeued)
    return requeued, skipped


# -- monitor ownership -----------------------------------------------------------------------


def set_meta(db: Database, key: str, value: str | None) -> None:
    with db.transaction() as connection:
        connection.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


def get_meta(db: Database, key: str) -> str | None:
    row = db.query_one("SELECT value FROM meta WHERE key = ?", (key,))
    return row[0] if row else None
