"""The core API of the queue: every SQL write of the domain lives here.

Each change of a task's state is one guarded UPDATE (`WHERE id = ? AND state = ? AND attempt = ?`)
whose row count is checked, and every change also moves the matching counts in `state_counts`.
"""

import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apsw

from . import states
from .db import Database
from .errors import NotFoundError, UsageError
from .packing import Busy, Candidate, Resources, choose

# A task whose hogs were lost this many times fails instead of going back to the queue: it may be
# what kills them.
LOST_ATTEMPTS_LIMIT = 5
STDERR_TAIL_BYTES = 4096
# A reaper that itself waited this long for the lock does not judge heartbeats this time: the
# hogs were probably kept from beating by the same holder, not dead.
REAP_AFTER_LOCK_WAIT_S = 1.0
# Candidates read per claim beyond what could fit: enough to see past a few big tasks.
CLAIM_WINDOW_EXTRA = 32

# Variables that describe the submitting shell's own job or the hog's placement: the hog sets
# its own, so a submit from inside an allocation must not pin tasks to that allocation's devices.
_NOT_CAPTURED_PREFIXES = ("SLURM_", "SLURMD_", "HOG_")
_NOT_CAPTURED = {
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "OMP_NUM_THREADS",
    "SLURM_HOG_DB",
}


# -- submitting ------------------------------------------------------------------------------


class SubmitOptions(NamedTuple):
    cores: int = 1
    gpus: int = 0
    mem_bytes: int | None = None
    time_limit_s: float | None = None
    priority: int = 0
    max_retries: int = 0
    name: str | None = None
    stdout_pattern: str | None = None
    stderr_pattern: str | None = None
    cwd: str = ""
    environment: dict[str, str] | None = None


def captured_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    return {
        key: value
        for key, value in source.items()
        if key not in _NOT_CAPTURED and not key.startswith(_NOT_CAPTURED_PREFIXES)
    }


def submit(
    db: Database,
    commands: Iterable[tuple[str, str | None]],
    options: SubmitOptions,
    now: float | None = None,
) -> tuple[int, int]:
    """Add tasks (command text, JSON argv or None) in one transaction; return first and last id.

    `commands` may raise UsageError part way (a bad line in a file): nothing is then added.
    """
    now = time.time() if now is None else now
    variables = json.dumps(options.environment or {}, sort_keys=True, separators=(",", ":"))
    with db.transaction() as connection:
        environment_id = _environment_id(connection, variables)
        connection.execute(
            "INSERT INTO submissions(submitted_at, user, host, cwd, environment_id, name, cores,"
            " gpus, mem_bytes, time_limit_s, max_retries, stdout_pattern, stderr_pattern)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                now,
                os.environ.get("USER"),
                os.uname().nodename,
                options.cwd,
                environment_id,
                options.name,
                options.cores,
                options.gpus,
                options.mem_bytes,
                options.time_limit_s,
                options.max_retries,
                options.stdout_pattern,
                options.stderr_pattern,
            ),
        )
        submission_id = connection.last_insert_rowid()
        counter = [0]

        def rows() -> Iterator[tuple]:
            for command, argv in commands:
                counter[0] += 1
                yield (submission_id, command, argv, options.priority)

        connection.executemany(
            "INSERT INTO tasks(submission_id, command, argv, priority) VALUES (?,?,?,?)", rows()
        )
        if not counter[0]:
            raise UsageError("no command to submit: give a command, or a file with at least one")
        # Under the write lock the new ids are contiguous.
        last = connection.last_insert_rowid()
        first = last - counter[0] + 1
        _count(connection, states.WAITING, last - first + 1)
    return first, last


def _environment_id(connection: apsw.Connection, variables: str) -> int:
    for (environment_id,) in connection.execute(
        "SELECT id FROM environments WHERE variables = ?", (variables,)
    ):
        return environment_id
    connection.execute("INSERT INTO environments(variables) VALUES (?)", (variables,))
    return connection.last_insert_rowid()


def _count(connection: apsw.Connection, state: str, delta: int) -> None:
    if delta:
        connection.execute("UPDATE state_counts SET tasks = tasks + ? WHERE state = ?", (delta, state))


def _move_counts(connection: apsw.Connection, old: str, new: str, number: int = 1) -> None:
    if number and old != new:
        _count(connection, old, -number)
        _count(connection, new, number)


# -- reading ---------------------------------------------------------------------------------

TASK_COLUMNS = (
    "id",
    "state",
    "name",
    "cores",
    "gpus",
    "priority",
    "attempt",
    "exit_code",
    "signal",
    "host",
    "started_at",
    "ended_at",
    "command",
)

_TASK_SELECT = """
SELECT t.id, t.state, s.name, s.cores, s.gpus, t.priority, t.attempt, t.exit_code, t.signal,
       a.host, a.started_at, coalesce(t.ended_at, a.ended_at), t.command
FROM tasks t
JOIN submissions s ON s.id = t.submission_id
LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt
"""


class TaskDetail(NamedTuple):
    id: int
    state: str
    name: str | None
    command: str
    argv: list[str] | None
    cores: int
    gpus: int
    mem_bytes: int | None
    time_limit_s: float | None
    priority: int
    max_retries: int
    retries_used: int
    attempt: int
    exit_code: int | None
    signal: int | None
    cancel_requested: bool
    submitted_at: float
    ended_at: float | None
    cwd: str
    stdout_pattern: str | None
    stderr_pattern: str | None
    attempts: list[dict]


def iter_tasks(
    db: Database,
    state_filter: tuple[str, ...] = (),
    name: str | None = None,
    limit: int | None = None,
    ids: tuple[int, ...] = (),
) -> Iterator[tuple]:
    """Task rows in TASK_COLUMNS order, oldest first, streamed."""
    where, params = [], []
    if state_filter:
        where.append(f"t.state IN ({','.join('?' * len(state_filter))})")
        params.extend(state_filter)
    if name is not None:
        where.append("s.name = ?")
        params.append(name)
    if ids:
        where.append(f"t.id IN ({','.join('?' * len(ids))})")
        params.extend(ids)
    sql = _TASK_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY t.id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return db.stream(sql, tuple(params))


def get_tasks(db: Database, task_ids: list[int], missing_ok: bool = False) -> list[TaskDetail]:
    """Details of each id, in the order asked; NotFoundError names the ids that do not exist.

    With `missing_ok`, unknown ids are left out instead.
    """
    found: dict[int, TaskDetail] = {}
    with db.snapshot() as connection:
        for chunk in _chunks(sorted(set(task_ids)), 500):
            marks = ",".join("?" * len(chunk))
            for row in connection.execute(
                "SELECT t.id, t.state, s.name, t.command, t.argv, s.cores, s.gpus, s.mem_bytes,"
                " s.time_limit_s, t.priority, s.max_retries, t.retries_used, t.attempt,"
                " t.exit_code, t.signal, t.cancel_requested, s.submitted_at, t.ended_at, s.cwd,"
                " s.stdout_pattern, s.stderr_pattern"
                f" FROM tasks t JOIN submissions s ON s.id = t.submission_id WHERE t.id IN ({marks})",
                tuple(chunk),
            ):
                found[row[0]] = TaskDetail(
                    *row[:4],
                    json.loads(row[4]) if row[4] else None,
                    *row[5:15],
                    bool(row[15]),
                    *row[16:],
                    attempts=[],
                )
            for row in connection.execute(
                "SELECT task_id, attempt, hog_id, host, claimed_at, started_at, ended_at, cores,"
                " gpus, exit_code, signal, reason, max_rss_kib, cpu_user_s, cpu_system_s,"
                f" stderr_tail FROM attempts WHERE task_id IN ({marks})"
                " ORDER BY task_id, attempt",
                tuple(chunk),
            ):
                found[row[0]].attempts.append(dict(zip(ATTEMPT_COLUMNS, row[1:], strict=True)))
    missing = [task_id for task_id in task_ids if task_id not in found]
    if missing and not missing_ok:
        raise NotFoundError(f"no task {_id_list(missing)} in {db.path}: `slurm-hog show` lists them")
    return [found[task_id] for task_id in task_ids if task_id in found]


ATTEMPT_COLUMNS = (
    "attempt",
    "hog_id",
    "host",
    "claimed_at",
    "started_at",
    "ended_at",
    "cores",
    "gpus",
    "exit_code",
    "signal",
    "reason",
    "max_rss_kib",
    "cpu_user_s",
    "cpu_system_s",
    "stderr_tail",
)


def _rows_for_ids(
    connection: apsw.Connection, columns: str, task_ids: list[int], db_path: str, consequence: str
) -> list[tuple]:
    """`columns` of the tasks with these ids; NotFoundError naming the unknown ones."""
    rows: list[tuple] = []
    for chunk in _chunks(sorted(set(task_ids)), 500):
        marks = ",".join("?" * len(chunk))
        rows.extend(connection.execute(f"SELECT {columns} FROM tasks WHERE id IN ({marks})", tuple(chunk)))
    missing = sorted(set(task_ids) - {row[0] for row in rows})
    if missing:
        raise NotFoundError(f"no task {_id_list(missing)} in {db_path}: {consequence}")
    return rows


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _id_list(ids: list[int]) -> str:
    shown = ", ".join(str(task_id) for task_id in ids[:10])
    return shown + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def task_states(db: Database, task_ids: list[int]) -> dict[int, str]:
    result: dict[int, str] = {}
    with db.snapshot() as connection:
        for chunk in _chunks(sorted(set(task_ids)), 500):
            marks = ",".join("?" * len(chunk))
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


def status(db: Database, now: float | None = None) -> Status:
    now = time.time() if now is None else now
    with db.snapshot() as connection:
        counts = dict(connection.execute("SELECT state, tasks FROM state_counts"))
        hogs = dict(connection.execute("SELECT state, count(*) FROM hogs GROUP BY state"))
        recent = connection.execute("SELECT count(*) FROM tasks WHERE ended_at > ?", (now - 60,)).fetchall()[
            0
        ][0]
    tasks = {state: counts.get(state, 0) for state in states.TASK_STATES}
    remaining = tasks[states.WAITING] + tasks[states.RUNNING]
    seconds = remaining / (recent / 60.0) if recent and remaining else (0.0 if not remaining else None)
    return Status(tasks, {s: hogs.get(s, 0) for s in states.HOG_STATES}, recent, seconds)


# -- user edits ------------------------------------------------------------------------------


class CancelOutcome(NamedTuple):
    cancelled: list[int]  # were waiting: cancelled now
    killing: list[int]  # were running: their hogs kill them
    skipped: list[tuple[int, str]]  # had already ended


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
            marks = ",".join("?" * len(wanted))
            rows = list(
                connection.execute(
                    f"SELECT id, state, attempt FROM tasks WHERE state IN ({marks})", tuple(wanted)
                )
            )
        for task_id, state, attempt in rows:
            if state == states.WAITING:
                connection.execute(
                    "UPDATE tasks SET state = 'cancelled', ended_at = ?"
                    " WHERE id = ? AND state = 'waiting' AND attempt = ?",
                    (now, task_id, attempt),
                )
                cancelled.append(task_id)
            elif state == states.RUNNING:
                connection.execute(
                    "UPDATE tasks SET cancel_requested = 1"
                    " WHERE id = ? AND state = 'running' AND attempt = ?",
                    (task_id, attempt),
                )
                killing.append(task_id)
            else:
                skipped.append((task_id, state))
        _move_counts(connection, states.WAITING, states.CANCELLED, len(cancelled))
    return CancelOutcome(cancelled, killing, skipped)


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
            rows = list(
                connection.execute("SELECT id, state FROM tasks WHERE state IN ('failed', 'timeout')")
            )
        for task_id, state in rows:
            if state not in states.RETRYABLE_STATES:
                skipped.append((task_id, state))
                continue
            connection.execute(
                "UPDATE tasks SET state = 'waiting', retries_used = 0, crashes = 0,"
                " cancel_requested = 0, exit_code = NULL, signal = NULL, ended_at = NULL"
                " WHERE id = ? AND state = ?",
                (task_id, state),
            )
            requeued.append(task_id)
            moved[state] = moved.get(state, 0) + 1
        for state, number in moved.items():
            _move_counts(connection, state, states.WAITING, number)
    return requeued, skipped


def cleanup(
    db: Database,
    state_filter: tuple[str, ...] = (),
    older_than_s: float | None = None,
    now: float | None = None,
) -> int:
    """Delete ended tasks (never waiting or running ones); return how many."""
    now = time.time() if now is None else now
    active = [state for state in state_filter if state not in states.ENDED_STATES]
    if active:
        raise UsageError(
            f"cleanup deletes only ended tasks, not {', '.join(active)} ones: "
            "cancel them first, or leave out --state"
        )
    wanted = state_filter or states.ENDED_STATES
    marks = ",".join("?" * len(wanted))
    cutoff = now - older_than_s if older_than_s is not None else now + 1
    with db.transaction() as connection:
        deleted = 0
        for state in wanted:
            connection.execute(
                f"DELETE FROM tasks WHERE state = ? AND ended_at <= ? AND state IN ({marks})",
                (state, cutoff, *wanted),
            )
            number = connection.changes()
            _count(connection, state, -number)
            deleted += number
        if deleted:
            connection.execute(
                "DELETE FROM submissions WHERE id NOT IN (SELECT DISTINCT submission_id FROM tasks)"
            )
            connection.execute(
                "DELETE FROM environments WHERE id NOT IN (SELECT DISTINCT environment_id FROM submissions)"
            )
    return deleted


# -- hogs ------------------------------------------------------------------------------------


class HogInfo(NamedTuple):
    host: str
    pid: int
    slurm_job_id: str | None
    cores: int
    gpus: list[str]
    mem_bytes: int
    end_by: float | None
    lease_s: float
    log_path: str | None = None


def create_pending_hog(
    db: Database,
    backend: str,
    monitor_host: str,
    lease_s: float,
    now: float | None = None,
) -> int:
    """A row for a hog the monitor is about to start, so the hog takes it over on start-up."""
    now = time.time() if now is None else now
    with db.transaction() as connection:
        connection.execute(
            "INSERT INTO hogs(state, backend, monitor_host, created_at, lease_s)"
            " VALUES ('pending', ?, ?, ?, ?)",
            (backend, monitor_host, now, lease_s),
        )
        return connection.last_insert_rowid()


def set_hog_backend(db: Database, hog_id: int, backend_id: str, log_path: str) -> None:
    with db.transaction() as connection:
        connection.execute(
            "UPDATE hogs SET backend_id = ?, log_path = ? WHERE id = ?",
            (backend_id, log_path, hog_id),
        )


def start_hog(db: Database, info: HogInfo, hog_id: int | None = None, now: float | None = None) -> int | None:
    """Register a running hog: take over its pending row, or make a new one.

    Returns None when the pending row was already given up (cancelled or declared lost).
    """
    now = time.time() if now is None else now
    values = (
        info.host,
        info.pid,
        info.slurm_job_id,
        info.cores,
        ",".join(info.gpus),
        info.mem_bytes,
        now,
        now,
        info.end_by,
        info.lease_s,
    )
    with db.transaction() as connection:
        if hog_id is None:
            connection.execute(
                "INSERT INTO hogs(state, backend, host, pid, slurm_job_id, cores, gpus, mem_bytes,"
                " started_at, heartbeat_at, end_by, lease_s, created_at, log_path)"
                " VALUES ('running', 'manual', ?,?,?,?,?,?,?,?,?,?,?,?)",
                (*values, now, info.log_path),
            )
            return connection.last_insert_rowid()
        connection.execute(
            "UPDATE hogs SET state = 'running', host = ?, pid = ?, slurm_job_id = ?, cores = ?,"
            " gpus = ?, mem_bytes = ?, started_at = ?, heartbeat_at = ?, end_by = ?, lease_s = ?"
            " WHERE id = ? AND state = 'pending'",
            (*values, hog_id),
        )
        return hog_id if connection.changes() == 1 else None


class ClaimedTask(NamedTuple):
    task_id: int
    attempt: int
    command: str
    argv: list[str] | None
    cores: int
    gpus: int
    mem_bytes: int
    time_limit_s: float | None
    max_retries: int
    cwd: str
    environment: dict[str, str]
    stdout_pattern: str | None
    stderr_pattern: str | None
    name: str | None

    @property
    def needs(self) -> Resources:
        return Resources(self.cores, self.gpus, self.mem_bytes)


class TaskResult(NamedTuple):
    """How one attempt ended, as the hog saw it."""

    task_id: int
    attempt: int
    reason: str  # one of states.REASON_*
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    signal: int | None = None
    max_rss_kib: int | None = None
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    stderr_tail: str | None = None
    cores: str | None = None
    gpus: str | None = None


class ClaimRequest(NamedTuple):
    free: Resources  # what the new tasks may use together
    total: Resources  # the hog's whole size: tasks larger than this are never its business
    busy: list[Busy]
    seconds_left: float | None  # until the hog stops; None: no walltime
    unlimited_allowed: bool  # tasks without a time limit may still start
    limit: int  # most tasks to take


class Exchange:
    """What one hog transaction returned."""

    def __init__(self) -> None:
        self.given_up = False  # the hog was declared lost or cancelled: stop, writing nothing
        self.claimed: list[ClaimedTask] = []
        self.cancel_requested: set[tuple[int, int]] = set()
        self.queue_has_work = True  # some waiting task this hog could run (not yet claimed)
        self.recorded = 0  # results that were still current and were written


def exchange(
    db: Database,
    hog_id: int,
    host: str,
    results: list[TaskResult],
    claim: ClaimRequest | None,
    environments: dict[int, dict[str, str]],
    finish_reason: str | None = None,
    now: float | None = None,
) -> Exchange:
    """One short write: record results, beat, claim new tasks, learn about cancels; maybe finish.

    `environments` is the hog's cache of environment rows, filled in as new ids appear.
    """
    now = time.time() if now is None else now
    outcome = Exchange()
    with db.transaction() as connection:
        row = connection.execute("SELECT state FROM hogs WHERE id = ?", (hog_id,)).fetchall()
        if not row or row[0][0] != states.HOG_RUNNING:
            outcome.given_up = True
            outcome.queue_has_work = False
            return outcome
        outcome.recorded = sum(_record_result(connection, hog_id, result, now) for result in results)
        if claim is not None and claim.limit > 0:
            outcome.claimed = _claim(connection, hog_id, host, claim, environments, now)
            if not outcome.claimed:
                outcome.queue_has_work = _has_fitting_work(connection, claim)
        for task_id, attempt in connection.execute(
            "SELECT id, attempt FROM tasks WHERE hog_id = ? AND cancel_requested = 1", (hog_id,)
        ):
            outcome.cancel_requested.add((task_id, attempt))
        if finish_reason is None:
            connection.execute(
                "UPDATE hogs SET heartbeat_at = ?, tasks_run = tasks_run + ? WHERE id = ?",
                (now, outcome.recorded, hog_id),
            )
        else:
            connection.execute(
                "UPDATE hogs SET heartbeat_at = ?, tasks_run = tasks_run + ?, state = 'finished',"
                " ended_at = ?, end_reason = ? WHERE id = ? AND state = 'running'",
                (now, outcome.recorded, now, finish_reason, hog_id),
            )
    return outcome


def _record_result(connection: apsw.Connection, hog_id: int, result: TaskResult, now: float) -> int:
    """Write one result if its attempt is still current; 1 if written, else 0."""
    row = connection.execute(
        "SELECT t.retries_used, s.max_retries, t.cancel_requested FROM tasks t"
        " JOIN submissions s ON s.id = t.submission_id"
        " WHERE t.id = ? AND t.state = 'running' AND t.attempt = ? AND t.hog_id = ?",
        (result.task_id, result.attempt, hog_id),
    ).fetchall()
    if not row:
        return 0  # no longer ours: a newer attempt owns the task
    retries_used, max_retries, cancel_requested = row[0]
    new_state, retries = _state_after(result, retries_used, max_retries, bool(cancel_requested))
    ended = result.ended_at or now
    if new_state == states.WAITING:
        connection.execute(
            "UPDATE tasks SET state = 'waiting', hog_id = NULL, retries_used = ?,"
            " exit_code = ?, signal = ? WHERE id = ? AND state = 'running' AND attempt = ?",
            (retries, result.exit_code, result.signal, result.task_id, result.attempt),
        )
    else:
        connection.execute(
            "UPDATE tasks SET state = ?, hog_id = NULL, retries_used = ?, exit_code = ?,"
            " signal = ?, ended_at = ? WHERE id = ? AND state = 'running' AND attempt = ?",
            (
                new_state,
                retries,
                result.exit_code,
                result.signal,
                ended,
                result.task_id,
                result.attempt,
            ),
        )
    _move_counts(connection, states.RUNNING, new_state)
    connection.execute(
        "UPDATE attempts SET started_at = ?, ended_at = ?, exit_code = ?, signal = ?, reason = ?,"
        " max_rss_kib = ?, cpu_user_s = ?, cpu_system_s = ?, stderr_tail = ?, cores = ?, gpus = ?"
        " WHERE task_id = ? AND attempt = ? AND ended_at IS NULL",
        (
            result.started_at,
            ended,
            result.exit_code,
            result.signal,
            result.reason,
            result.max_rss_kib,
            result.cpu_user_s,
            result.cpu_system_s,
            result.stderr_tail,
            result.cores,
            result.gpus,
            result.task_id,
            result.attempt,
        ),
    )
    return 0 if result.reason == states.REASON_RELEASED else 1


def _state_after(
    result: TaskResult, retries_used: int, max_retries: int, cancel_requested: bool
) -> tuple[str, int]:
    if result.reason == states.REASON_RELEASED:
        return (states.CANCELLED if cancel_requested else states.WAITING), retries_used
    if result.reason == states.REASON_CANCELLED:
        return states.CANCELLED, retries_used
    if result.reason == states.REASON_EXITED and result.exit_code == 0 and result.signal is None:
        return states.DONE, retries_used
    if cancel_requested:
        return states.CANCELLED, retries_used
    if retries_used < max_retries:
        return states.WAITING, retries_used + 1
    return (states.TIMEOUT if result.reason == states.REASON_TIMEOUT else states.FAILED), retries_used


_CANDIDATES = """
SELECT t.id, t.attempt, t.command, t.argv, s.cores, s.gpus, coalesce(s.mem_bytes, 0),
       s.time_limit_s, s.max_retries, s.cwd, s.environment_id, s.stdout_pattern,
       s.stderr_pattern, s.name
FROM tasks t JOIN submissions s ON s.id = t.submission_id
WHERE t.state = 'waiting' AND s.cores <= :cores AND s.gpus <= :gpus
  AND coalesce(s.mem_bytes, 0) <= :mem
  AND (:seconds_left IS NULL OR s.time_limit_s <= :seconds_left
       OR (s.time_limit_s IS NULL AND :unlimited))
  AND (:unlimited OR s.time_limit_s IS NOT NULL)
ORDER BY t.priority DESC, t.id
LIMIT :window
"""


def _claim_params(claim: ClaimRequest, window: int) -> dict:
    return {
        "cores": claim.total.cores,
        "gpus": claim.total.gpus,
        "mem": claim.total.mem_bytes,
        "seconds_left": claim.seconds_left,
        "unlimited": 1 if claim.unlimited_allowed else 0,
        "window": window,
    }


def _claim(
    connection: apsw.Connection,
    hog_id: int,
    host: str,
    claim: ClaimRequest,
    environments: dict[int, dict[str, str]],
    now: float,
) -> list[ClaimedTask]:
    window = claim.limit + CLAIM_WINDOW_EXTRA
    rows = connection.execute(_CANDIDATES, _claim_params(claim, window)).fetchall()
    candidates = [
        Candidate(index, Resources(row[4], row[5], row[6]), row[7]) for index, row in enumerate(rows)
    ]
    chosen = choose(candidates, claim.free, claim.busy, now)[: claim.limit]
    claimed = []
    for candidate in chosen:
        row = rows[candidate.key]
        task_id, attempt = row[0], row[1] + 1
        connection.execute(
            "UPDATE tasks SET state = 'running', attempt = ?, hog_id = ?"
            " WHERE id = ? AND state = 'waiting' AND attempt = ?",
            (attempt, hog_id, task_id, row[1]),
        )
        if connection.changes() != 1:
            continue
        connection.execute(
            "INSERT INTO attempts(task_id, attempt, hog_id, host, claimed_at) VALUES (?,?,?,?,?)",
            (task_id, attempt, hog_id, host, now),
        )
        environment_id = row[10]
        if environment_id not in environments:
            variables = connection.execute(
                "SELECT variables FROM environments WHERE id = ?", (environment_id,)
            ).fetchall()
            environments[environment_id] = json.loads(variables[0][0]) if variables else {}
        claimed.append(
            ClaimedTask(
                task_id,
                attempt,
                row[2],
                json.loads(row[3]) if row[3] else None,
                row[4],
                row[5],
                row[6],
                row[7],
                row[8],
                row[9],
                environments[environment_id],
                row[11],
                row[12],
                row[13],
            )
        )
    _move_counts(connection, states.WAITING, states.RUNNING, len(claimed))
    return claimed


def _has_fitting_work(connection: apsw.Connection, claim: ClaimRequest) -> bool:
    return bool(connection.execute(_CANDIDATES, _claim_params(claim, 1)).fetchall())


def hogs_to_reap(db: Database, now: float, also_lost: Iterable[int] = ()) -> list[tuple[int, str | None]]:
    """(id, host) of live hogs whose lease ran out, plus `also_lost` ones still live."""
    extra = list(also_lost)
    marks = ",".join("?" * len(extra)) or "NULL"
    return db.query(
        "SELECT id, host FROM hogs WHERE (state = 'running' AND heartbeat_at + lease_s < ?)"
        f" OR (state IN ('pending', 'running') AND id IN ({marks}))",
        (now, *extra),
    )


def reap_lost_hogs(db: Database, now: float | None = None, also_lost: Iterable[int] = ()) -> list[int]:
    """Declare lost the running hogs whose lease ran out (and `also_lost`); requeue their tasks.

    Any process may call this; the guarded updates make a second reaper a no-op.
    """
    now = time.time() if now is None else now
    reaped = []
    with db.transaction() as connection:
        expired = [
            hog_id
            for (hog_id,) in connection.execute(
                "SELECT id FROM hogs WHERE state = 'running' AND heartbeat_at + lease_s < ?",
                (now,),
            )
        ]
        if db.last_lock_wait_s > REAP_AFTER_LOCK_WAIT_S:
            expired = []
        for hog_id in {*expired, *also_lost}:
            connection.execute(
                "UPDATE hogs SET state = 'lost', ended_at = ?, end_reason = ?"
                " WHERE id = ? AND state IN ('pending', 'running')",
                (now, "no heartbeat" if hog_id in expired else "its backend job ended", hog_id),
            )
            if connection.changes() == 1:
                _requeue_tasks_of_lost_hog(connection, hog_id, now)
                reaped.append(hog_id)
    return reaped


def _requeue_tasks_of_lost_hog(connection: apsw.Connection, hog_id: int, now: float) -> None:
    rows = connection.execute(
        "SELECT id, attempt, crashes, cancel_requested FROM tasks WHERE hog_id = ? AND state = 'running'",
        (hog_id,),
    ).fetchall()
    for task_id, attempt, crashes, cancel_requested in rows:
        if cancel_requested:
            new_state = states.CANCELLED
        elif crashes + 1 >= LOST_ATTEMPTS_LIMIT:
            new_state = states.FAILED
        else:
            new_state = states.WAITING
        connection.execute(
            "UPDATE tasks SET state = ?, hog_id = NULL, crashes = crashes + 1,"
            " ended_at = CASE WHEN ? = 'waiting' THEN NULL ELSE ? END"
            " WHERE id = ? AND state = 'running' AND attempt = ?",
            (new_state, new_state, now, task_id, attempt),
        )
        _move_counts(connection, states.RUNNING, new_state)
        connection.execute(
            "UPDATE attempts SET ended_at = ?, reason = 'lost'"
            " WHERE task_id = ? AND attempt = ? AND ended_at IS NULL",
            (now, task_id, attempt),
        )


def set_hog_state(db: Database, hog_id: int, new_state: str, reason: str, now: float | None = None) -> bool:
    """Move a pending or running hog to an ended state; its running tasks go back to waiting."""
    now = time.time() if now is None else now
    with db.transaction() as connection:
        connection.execute(
            "UPDATE hogs SET state = ?, ended_at = ?, end_reason = ?"
            " WHERE id = ? AND state IN ('pending', 'running')",
            (new_state, now, reason, hog_id),
        )
        if connection.changes() != 1:
            return False
        _requeue_tasks_of_lost_hog(connection, hog_id, now)
    return True


HOG_COLUMNS = (
    "id",
    "state",
    "host",
    "backend",
    "backend_id",
    "slurm_job_id",
    "pid",
    "cores",
    "gpus",
    "tasks_run",
    "running",
    "created_at",
    "started_at",
    "heartbeat_at",
    "ended_at",
    "end_by",
    "end_reason",
    "log_path",
)


def iter_hogs(db: Database, state_filter: tuple[str, ...] = (), limit: int | None = None) -> Iterator[tuple]:
    where = f" WHERE h.state IN ({','.join('?' * len(state_filter))})" if state_filter else ""
    sql = (
        "SELECT h.id, h.state, h.host, h.backend, h.backend_id, h.slurm_job_id, h.pid, h.cores,"
        " h.gpus, h.tasks_run, (SELECT count(*) FROM tasks t WHERE t.hog_id = h.id),"
        " h.created_at, h.started_at, h.heartbeat_at, h.ended_at, h.end_by, h.end_reason,"
        f" h.log_path FROM hogs h{where} ORDER BY h.id"
    )
    params: tuple = tuple(state_filter)
    if limit is not None:
        sql += " LIMIT ?"
        params += (limit,)
    return db.stream(sql, params)


def live_hogs(db: Database) -> list[dict]:
    """Pending and running hogs, for the monitor."""
    return [dict(zip(HOG_COLUMNS, row, strict=True)) for row in iter_hogs(db, states.HOG_LIVE_STATES)]


def demand(db: Database) -> int:
    """Tasks waiting to be claimed."""
    row = db.query_one("SELECT tasks FROM state_counts WHERE state = 'waiting'")
    return row[0] if row else 0


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
