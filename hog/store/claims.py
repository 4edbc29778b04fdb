"""The hog side of the queue: registration and claims, with results (results.py), in one short write.

Each change of a task's state is one guarded UPDATE (`WHERE id = ? AND state = ? AND attempt = ?`)
whose rows written are checked, and every change also moves the matching counts in `state_counts`.
"""

import time
from collections.abc import Sequence
from typing import NamedTuple

import apsw

from hog.gpushare import GPU_UNITS
from hog.pools import DEFAULT_POOL
from hog.store import dependencies, doorbell, states, steering
from hog.store.counts import move_counts
from hog.store.db import Database
from hog.store.packing import SUBMISSION_GPU_UNITS, Busy, Candidate, Resources, choose
from hog.store.pools import claim_pool
from hog.store.queue import placeholders
from hog.store.results import TaskResult, TaskStart, record_results, record_starts
from hog.store.submitting import decode_argv, decode_environment, stored_text
from hog.store.usage import HogUsage, record

# A task whose hogs were lost this many times fails instead of going back to the queue: it may be
# what kills them.
LOST_ATTEMPTS_LIMIT = 5
STDERR_TAIL_BYTES = 4096
# Candidates read per claim beyond what could fit: enough to see past a few big tasks.
CLAIM_WINDOW_EXTRA = 32


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
    pool: str = DEFAULT_POOL


def create_pending_hog(
    db: Database,
    backend: str,
    monitor_host: str,
    lease_s: float,
    now: float | None = None,
    pool: str = DEFAULT_POOL,
) -> int:
    """A row for a hog the monitor is about to start, so the hog takes it over on start-up."""
    now = time.time() if now is None else now
    with db.transaction() as connection:
        connection.execute(
            "INSERT INTO hogs(state, backend, monitor_host, created_at, lease_s, pool) VALUES (?,?,?,?,?,?)",
            (states.HOG_PENDING, backend, monitor_host, now, lease_s, pool),
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
    with db.transaction() as connection:
        return _register(connection, info, hog_id, now)


def _register(connection: apsw.Connection, info: HogInfo, hog_id: int | None, now: float) -> int | None:
    columns = {
        "host": info.host,
        "pid": info.pid,
        "slurm_job_id": info.slurm_job_id,
        "cores": info.cores,
        "gpus": ",".join(info.gpus),
        "mem_bytes": info.mem_bytes,
        "started_at": now,
        "heartbeat_at": now,
        "end_by": info.end_by,
        "lease_s": info.lease_s,
        "pool": info.pool,
    }
    if hog_id is None:
        connection.execute(
            f"INSERT INTO hogs(state, backend, created_at, log_path, {', '.join(columns)})"
            f" VALUES (?, 'manual', ?, ?, {placeholders(columns)})",
            (states.HOG_RUNNING, now, info.log_path, *columns.values()),
        )
        return connection.last_insert_rowid()
    return hog_id if move_hog(connection, hog_id, states.HOG_RUNNING, **columns) else None


def move_hog(connection: apsw.Connection, hog_id: int, new_state: str, **columns: object) -> bool:
    """Move a hog to `new_state` and set `columns`, if its state may move there; True if it moved.

    Every change of a hog's state passes here, so HOG_TRANSITIONS guards them all, as the task
    table guards tasks: a hog whose state may not lead to `new_state` is left as it is.
    """
    sources = states.sources(states.HOG_TRANSITIONS, new_state)
    if not sources:
        # A bug, not a race: the transaction rolls back and nothing changes.
        raise RuntimeError(f"no hog may move to {new_state}")
    assignments = "".join(f", {name} = ?" for name in columns)
    connection.execute(
        f"UPDATE hogs SET state = ?{assignments} WHERE id = ? AND state IN ({placeholders(sources)})",
        (new_state, *columns.values(), hog_id, *sources),
    )
    return connection.changes() == 1


class ClaimedTask(NamedTuple):
    task_id: int
    attempt: int
    command: str
    cores: int
    gpus: int  # GPU units (hog.gpushare)
    mem_bytes: int
    time_limit_s: float | None
    max_retries: int
    cwd: str
    stdout_pattern: str | None
    stderr_pattern: str | None
    name: str | None
    argv: list[str] | None
    environment: dict[str, str]
    array_index: int | None = None  # submit --array
    entry: str | None = None  # submit --each-line

    @property
    def needs(self) -> Resources:
        return Resources(self.cores, self.gpus, self.mem_bytes)


class ClaimRequest(NamedTuple):
    free: Resources  # what the new tasks may use together
    total: Resources  # the hog's whole size: tasks larger than this are never its business
    busy: list[Busy]
    seconds_left: float | None  # until the hog stops; None: no walltime
    unlimited_allowed: bool  # tasks without a time limit may still start
    limit: int  # most tasks to take
    least: int = 0  # tasks to take whatever the hog's fair share (its idle cores): fair_limit
    devices: tuple[int, ...] | None = None  # free GPU units of each device (None: by total only)
    bundle: str | None = None  # only tasks of this bundle (a hog of `tune`); None: any


class Exchange(NamedTuple):
    """What one hog transaction returned."""

    given_up: bool  # the hog was declared lost or cancelled: stop, writing nothing
    claimed: list[ClaimedTask]
    cancel_requested: set[tuple[int, int]]
    queue_has_work: bool  # some waiting task this hog could run (not yet claimed)
    recorded: int  # results that were still current and were written
    hogs_running: int  # hogs sharing the queue (counted when claiming, else 1)
    stop_request: str | None = None  # `hogs stop` asked it to drain or stop now (steering)


def exchange(
    db: Database,
    hog_id: int,
    host: str,
    results: list[TaskResult],
    claim: ClaimRequest | None,
    environments: dict[int, dict[str, str]],
    finish_reason: str | None = None,
    now: float | None = None,
    starts: Sequence[TaskStart] = (),
    usage: HogUsage | None = None,
) -> Exchange:
    """One short write: record starts and results, beat, claim new tasks, learn about cancels;
    maybe finish.

    `environments` is the hog's cache of environment rows, filled in as new ids appear.
    """
    now = time.time() if now is None else now
    with db.transaction() as connection:
        if not _is_running(connection, hog_id):
            # Given up: nothing claimed, nothing recorded, no work to look for.
            return Exchange(True, [], set(), False, 0, 1)
        record_starts(connection, hog_id, starts)
        moved: dict[str, int] = {}
        recorded = record_results(connection, hog_id, results, now, moved)
        for state, number in moved.items():
            move_counts(connection, states.RUNNING, state, number)
        doorbell.note_ended(connection, [result.task_id for result in results])
        dependencies.settle(connection, [result.task_id for result in results], now)
        stop_request = steering.take_stop_request(connection, hog_id, now)
        claimed, queue_has_work, hogs_running = _claim_round(
            connection, hog_id, host, claim, environments, now, stop_request
        )
        cancel_requested = _cancel_requests(connection, hog_id)
        connection.execute(
            "UPDATE hogs SET heartbeat_at = ?, tasks_run = tasks_run + ? WHERE id = ?",
            (now, recorded, hog_id),
        )
        if usage is not None:
            record(connection, hog_id, usage)
        if finish_reason is not None:
            move_hog(connection, hog_id, states.HOG_FINISHED, ended_at=now, end_reason=finish_reason)
    return Exchange(False, claimed, cancel_requested, queue_has_work, recorded, hogs_running, stop_request)


def start_hog_claiming(
    db: Database,
    info: HogInfo,
    hog_id: int | None,
    claim: ClaimRequest,
    environments: dict[int, dict[str, str]],
    now: float | None = None,
) -> tuple[int | None, Exchange]:
    """Register a running hog and make its first claim, in one write transaction: on a slow
    filesystem each is ~110 ms in the lock's line, and every hog of a fleet that starts together
    waits behind the others' (4 hogs on a 20 ms-fsync mount: each hog's first task started up to
    0.9 s after the first claim). The hog's id (None: given up, as start_hog) and what it got."""
    now = time.time() if now is None else now
    with db.transaction() as connection:
        started = _register(connection, info, hog_id, now)
        if started is None:
            return None, Exchange(True, [], set(), False, 0, 1)
        stop_request = steering.take_stop_request(connection, started, now)
        claimed, queue_has_work, hogs_running = _claim_round(
            connection, started, info.host, claim, environments, now, stop_request
        )
    return started, Exchange(False, claimed, set(), queue_has_work, 0, hogs_running, stop_request)


def _claim_round(
    connection: apsw.Connection,
    hog_id: int,
    host: str,
    claim: ClaimRequest | None,
    environments: dict[int, dict[str, str]],
    now: float,
    stop_request: str | None,
) -> tuple[list[ClaimedTask], bool, int]:
    """A write's claim, if it asks one: what it took, whether work waits for this hog, and the
    hogs running on the queue (1 without a claim)."""
    if claim is None:
        return [], True, 1
    pool = claim_pool(connection, hog_id, claim.bundle)
    # All the running hogs share the lock (pacing); those of the pool share its tasks.
    hogs_running, hogs_of_pool = connection.execute(
        "SELECT count(*), coalesce(sum(pool = ?), 0) FROM hogs WHERE state = ?", (pool, states.HOG_RUNNING)
    ).fetchall()[0]
    claim = claim._replace(limit=fair_limit(connection, claim, hogs_of_pool))
    params = _claim_params(claim, pool)
    claimed: list[ClaimedTask] = []
    queue_has_work = True
    if stop_request is None:
        if claim.limit > 0:
            claimed = _claim(connection, hog_id, host, claim, params, environments, now)
        if not claimed:  # nothing fitted, or nothing waits (a share of 0): is there work at all?
            queue_has_work = bool(connection.execute(_CANDIDATES, {**params, "window": 1}).fetchall())
    return claimed, queue_has_work, hogs_running


def fair_limit(connection: apsw.Connection, claim: ClaimRequest, hogs_of_pool: int) -> int:
    """At most this hog's share of the waiting tasks (guided self-scheduling: a claim takes no
    more than what waits over the hogs of its pool, but always what its idle cores start now). A
    claim sized by the hog's horizon alone hands the last tasks of a run to whichever hog claims
    first, and the others idle while it works through them: 4 one-core hogs of 10 ms tasks on a
    20 ms-fsync mount each claimed ~1.4 s of work, and the last of them ended up to 1.2 s after
    the first (of an 8 s run). The share shrinks with what waits, so the hogs run out together.
    The waiting tasks of all pools are counted (state_counts: counting one pool's costs a scan),
    never fewer than the pool's, so the share errs on the large side, as claims did before."""
    if claim.limit <= claim.least:
        return claim.limit
    waiting = connection.execute("SELECT tasks FROM state_counts WHERE state = ?", (states.WAITING,))
    share = -(-waiting.fetchall()[0][0] // max(1, hogs_of_pool))
    return min(claim.limit, max(claim.least, share))


def poll_cancels(db: Database, hog_id: int) -> set[tuple[int, int]] | None:
    """The (task, attempt) pairs of this hog's tasks whose cancel was asked for, without a write;
    None when the hog is no longer running (declared lost or cancelled)."""
    with db.snapshot() as connection:
        if not _is_running(connection, hog_id):
            return None
        return _cancel_requests(connection, hog_id)


def _is_running(connection: apsw.Connection, hog_id: int) -> bool:
    row = connection.execute("SELECT state FROM hogs WHERE id = ?", (hog_id,)).fetchall()
    return bool(row) and row[0][0] == states.HOG_RUNNING


def _cancel_requests(connection: apsw.Connection, hog_id: int) -> set[tuple[int, int]]:
    rows = connection.execute(
        "SELECT id, attempt FROM tasks WHERE hog_id = ? AND cancel_requested = 1", (hog_id,)
    )
    return {(task_id, attempt) for task_id, attempt in rows}


# In ClaimedTask's order, up to argv and the environment's id, which _claimed_task looks up, then
# the array index and entry. The hog's pool's waiting tasks in claim order are an index's range
# (tasks_pool_waiting, whose condition names the state as written here).
_CANDIDATES = f"""
SELECT t.id, t.attempt + 1, t.command, s.cores, {SUBMISSION_GPU_UNITS}, coalesce(s.mem_bytes, 0),
       s.time_limit_s, s.max_retries, s.cwd, s.stdout_pattern, s.stderr_pattern, s.name, t.argv,
       s.environment_id, t.array_index, t.entry
FROM tasks t JOIN submissions s ON s.id = t.submission_id
WHERE t.pool = :pool AND t.state = '{states.WAITING}' AND s.cores <= :cores AND s.gpus <= :devices
  AND coalesce(s.mem_bytes, 0) <= :mem
  AND (:seconds_left IS NULL OR s.time_limit_s <= :seconds_left
       OR (s.time_limit_s IS NULL AND :unlimited))
  AND (:unlimited OR s.time_limit_s IS NOT NULL)
  AND (:bundle IS NULL OR s.bundle = :bundle)
ORDER BY t.priority DESC, t.id
LIMIT :window
"""


def _candidates(rows: list[tuple]) -> list[Candidate]:
    """_CANDIDATES rows as packing sees them, keyed by their index (a few hundred per claim)."""
    candidates = []
    for index, row in enumerate(rows):
        cores, gpus, mem_bytes, time_limit_s = row[3:7]  # after id, attempt and command
        candidates.append(Candidate(index, Resources(cores, gpus, mem_bytes), time_limit_s))
    return candidates


def _claimed_task(
    connection: apsw.Connection,
    row: tuple,
    environments: dict[int, dict[str, str]],
    argvs: dict[str | None, list[str] | None],
) -> ClaimedTask:
    """A _CANDIDATES row as the task its claim hands out: its next attempt, with its environment.
    `argvs` keeps the claim's decoded argvs: an array's tasks share one, decoded once (a claim of
    thousands holds the lock while it decodes)."""
    argv, environment_id, array_index, entry = row[-4:]
    if argv not in argvs:
        argvs[argv] = decode_argv(argv)
    decoded = argvs[argv]
    if environment_id not in environments:
        variables = connection.execute(
            "SELECT variables FROM environments WHERE id = ?", (environment_id,)
        ).fetchall()
        environments[environment_id] = decode_environment(variables[0][0]) if variables else {}
    # The folder and the output patterns are bytes when they are not UTF-8 text (submitting.storable).
    return ClaimedTask(
        *map(stored_text, row[:-4]),
        None if decoded is None else list(decoded),
        environments[environment_id],
        array_index,
        entry,
    )


def _claim_params(claim: ClaimRequest, pool: str) -> dict:
    """_CANDIDATES' parameters: the hog's pool, size and time left, and how many to read."""
    return {
        "pool": pool,
        "cores": claim.total.cores,
        "devices": claim.total.gpus // GPU_UNITS,  # a share touches one device
        "mem": claim.total.mem_bytes,
        "seconds_left": claim.seconds_left,
        "unlimited": 1 if claim.unlimited_allowed else 0,
        "window": claim.limit + CLAIM_WINDOW_EXTRA,
        "bundle": claim.bundle,
    }


def _claim(
    connection: apsw.Connection,
    hog_id: int,
    host: str,
    claim: ClaimRequest,
    params: dict,
    environments: dict[int, dict[str, str]],
    now: float,
) -> list[ClaimedTask]:
    rows = connection.execute(_CANDIDATES, params).fetchall()
    chosen = choose(_candidates(rows), claim.free, claim.busy, now, claim.devices)[: claim.limit]
    argvs: dict[str | None, list[str] | None] = {}
    chosen_tasks = [
        _claimed_task(connection, rows[candidate.key], environments, argvs) for candidate in chosen
    ]
    # One statement run over all of them, not a call from Python each (results.record_results).
    taken = connection.executemany(
        "UPDATE tasks SET state = ?, attempt = ?, hog_id = ? WHERE id = ? AND state = ? AND attempt = ?"
        " RETURNING id",
        [
            (states.RUNNING, task.attempt, hog_id, task.task_id, states.WAITING, task.attempt - 1)
            for task in chosen_tasks
        ],
    )
    ours = {task_id for (task_id,) in taken}
    claimed = [task for task in chosen_tasks if task.task_id in ours]
    connection.executemany(
        "INSERT INTO attempts(task_id, attempt, hog_id, host, claimed_at) VALUES (?,?,?,?,?)",
        [(task.task_id, task.attempt, hog_id, host, now) for task in claimed],
    )
    move_counts(connection, states.WAITING, states.RUNNING, len(claimed))
    return claimed


def requeue_tasks_of_lost_hog(connection: apsw.Connection, hog_id: int, now: float) -> list[int]:
    """Requeue the hog's running tasks (fail or cancel those that must); their ids."""
    rows = connection.execute(
        "SELECT id, attempt, crashes, cancel_requested FROM tasks WHERE hog_id = ? AND state = ?",
        (hog_id, states.RUNNING),
    ).fetchall()
    for task_id, attempt, crashes, cancel_requested in rows:
        if cancel_requested:
            new_state = states.CANCELLED
        elif crashes + 1 >= LOST_ATTEMPTS_LIMIT:
            new_state = states.FAILED
        else:
            new_state = states.WAITING
        connection.execute(
            "UPDATE tasks SET state = ?, hog_id = NULL, crashes = crashes + 1, ended_at = ?"
            " WHERE id = ? AND state = ? AND attempt = ?",
            (new_state, None if new_state == states.WAITING else now, task_id, states.RUNNING, attempt),
        )
        move_counts(connection, states.RUNNING, new_state)
        connection.execute(
            "UPDATE attempts SET ended_at = ?, reason = ?"
            " WHERE task_id = ? AND attempt = ? AND ended_at IS NULL",
            (now, states.REASON_LOST, task_id, attempt),
        )
    return [row[0] for row in rows]


def set_hog_state(db: Database, hog_id: int, new_state: str, reason: str, now: float | None = None) -> bool:
    """Move a pending or running hog to an ended state; its running tasks go back to waiting."""
    if new_state not in states.HOG_ENDED_STATES:
        raise RuntimeError(f"a hog is ended in one of {', '.join(states.HOG_ENDED_STATES)}, not {new_state}")
    now = time.time() if now is None else now
    with db.transaction() as connection:
        if not move_hog(connection, hog_id, new_state, ended_at=now, end_reason=reason):
            return False
        dependencies.settle(connection, requeue_tasks_of_lost_hog(connection, hog_id, now), now)
    return True
