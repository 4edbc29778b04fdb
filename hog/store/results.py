"""A hog's results and starts, written in its exchange (claims.exchange), under the lock.

A result is written only while its attempt is current (`WHERE id = ? AND state = ? AND attempt
= ? AND hog_id = ?`): a hog declared lost that comes back writes nothing over a newer attempt.
"""

from collections.abc import Sequence
from typing import NamedTuple

import apsw

from hog.store import states
from hog.store.submitting import readable


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


class TaskStart(NamedTuple):
    """When an attempt started, sent before its result for a task that runs on."""

    task_id: int
    attempt: int
    started_at: float


def record_starts(connection: apsw.Connection, hog_id: int, starts: Sequence[TaskStart]) -> None:
    """Write when running tasks started, in one statement; an attempt that is no longer this
    hog's, or has ended, is left alone. A claimed task not started keeps started_at NULL."""
    if starts:
        connection.executemany(
            "UPDATE attempts SET started_at = ?"
            " WHERE task_id = ? AND attempt = ? AND hog_id = ? AND ended_at IS NULL",
            [(start.started_at, start.task_id, start.attempt, hog_id) for start in starts],
        )


def record_results(
    connection: apsw.Connection, hog_id: int, results: list[TaskResult], now: float, moved: dict[str, int]
) -> int:
    """Write the results whose attempts are still current; how many were written.

    `moved` counts the tasks that left `running`, by new state, for one update of the counts.
    Successes, nearly all of them, go in one guarded statement run over all of them, not a call
    from Python each (~5% of a write of 1,800 results and 1,800 claims, scripts/bench_exchange.py);
    the rest one at a time.
    """
    successes: list[TaskResult] = []
    failures: list[TaskResult] = []
    for result in results:
        (successes if _succeeded(result) else failures).append(result)
    written = connection.executemany(
        "UPDATE tasks SET state = ?, hog_id = NULL, exit_code = 0, signal = NULL, ended_at = ?"
        " WHERE id = ? AND state = ? AND attempt = ? AND hog_id = ? RETURNING id, attempt",
        [
            (states.DONE, result.ended_at or now, result.task_id, states.RUNNING, result.attempt, hog_id)
            for result in successes
        ],
    )
    current = set(written)  # (id, attempt) written; the others belong to newer attempts now
    closed = []
    for result in successes:
        if (result.task_id, result.attempt) in current:
            current.remove((result.task_id, result.attempt))  # a result sent twice counts once
            closed.append(result)
    if closed:
        moved[states.DONE] = moved.get(states.DONE, 0) + len(closed)
        connection.executemany(_CLOSE_ATTEMPT, [_attempt_end(result, now) for result in closed])
    return len(closed) + sum(_record_failure(connection, hog_id, result, now, moved) for result in failures)


def _succeeded(result: TaskResult) -> bool:
    """Exited 0: final, whatever else happened (a cancel asked meanwhile, retries left)."""
    return result.reason == states.REASON_EXITED and result.exit_code == 0 and result.signal is None


def _record_failure(
    connection: apsw.Connection, hog_id: int, result: TaskResult, now: float, moved: dict[str, int]
) -> int:
    """Write one result other than success if its attempt is still current; 1 if written, else 0."""
    ended = result.ended_at or now
    row = connection.execute(
        "SELECT t.retries_used, s.max_retries, t.cancel_requested FROM tasks t"
        " JOIN submissions s ON s.id = t.submission_id"
        " WHERE t.id = ? AND t.state = ? AND t.attempt = ? AND t.hog_id = ?",
        (result.task_id, states.RUNNING, result.attempt, hog_id),
    ).fetchall()
    if not row:
        return 0  # no longer ours: a newer attempt owns the task
    retries_used, max_retries, cancel_requested = row[0]
    new_state, retries = _state_after(result, retries_used, max_retries, bool(cancel_requested))
    connection.execute(
        "UPDATE tasks SET state = ?, hog_id = NULL, retries_used = ?, exit_code = ?, signal = ?,"
        " ended_at = ? WHERE id = ? AND state = ? AND attempt = ?",
        (
            new_state,
            retries,
            result.exit_code,
            result.signal,
            None if new_state == states.WAITING else ended,  # a waiting task has not ended
            result.task_id,
            states.RUNNING,
            result.attempt,
        ),
    )
    moved[new_state] = moved.get(new_state, 0) + 1
    connection.execute(_CLOSE_ATTEMPT, _attempt_end(result, now))
    return 0 if result.reason == states.REASON_RELEASED else 1


_CLOSE_ATTEMPT = (
    "UPDATE attempts SET started_at = ?, ended_at = ?, exit_code = ?, signal = ?, reason = ?,"
    " max_rss_kib = ?, cpu_user_s = ?, cpu_system_s = ?, stderr_tail = ?, cores = ?, gpus = ?"
    " WHERE task_id = ? AND attempt = ? AND ended_at IS NULL"
)


def _attempt_end(result: TaskResult, now: float) -> tuple:
    """_CLOSE_ATTEMPT's parameters for this result."""
    return (
        result.started_at,
        result.ended_at or now,
        result.exit_code,
        result.signal,
        result.reason,
        result.max_rss_kib,
        result.cpu_user_s,
        result.cpu_system_s,
        # A start failure names the program, whose name may hold bytes that are not UTF-8.
        None if result.stderr_tail is None else readable(result.stderr_tail),
        result.cores,
        result.gpus,
        result.task_id,
        result.attempt,
    )


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
