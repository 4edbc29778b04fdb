"""What the queue remembers of a run, read back for `report` and `stats`: nothing here writes.

Everything is read through a Selection (tasks by name, bundle, or submitted since a time).
Per-attempt rows are streamed, never held as a list, so a million attempts cost their arrays of
floats and not a million tuples; counts over time are grouped by sqlite itself.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from hog.errors import NotFoundError
from hog.store import states
from hog.store.db import Database
from hog.store.queue import placeholders

_FAILED_RUN = (
    f"(a.reason IN ('{states.REASON_TIMEOUT}', '{states.REASON_START_FAILED}')"
    f" OR (a.reason = '{states.REASON_EXITED}' AND (a.exit_code <> 0 OR a.signal IS NOT NULL)))"
)
# An attempt that ran to an end of its own: the runs whose time and memory say what a task needs.
_RAN = (
    f"a.started_at IS NOT NULL AND a.ended_at IS NOT NULL"
    f" AND a.reason IN ('{states.REASON_EXITED}', '{states.REASON_TIMEOUT}')"
)


@dataclass(frozen=True)
class Selection:
    """Which tasks: those with this name, in this bundle, submitted with this kind, submitted at
    or after `since` (all that are given must hold)."""

    name: str | None = None
    bundle: str | None = None
    since: float | None = None
    kind: str | None = None

    @property
    def everything(self) -> bool:
        return self.name is None and self.bundle is None and self.since is None and self.kind is None

    def where(self) -> tuple[str, tuple]:
        """SQL over the submissions `s`, and its values."""
        conditions, values = ["1"], []
        for sql, value in (
            ("s.name = ?", self.name),
            ("s.bundle = ?", self.bundle),
            ("s.kind = ?", self.kind),
            ("s.submitted_at >= ?", self.since),
        ):
            if value is not None:
                conditions.append(sql)
                values.append(value)
        return " AND ".join(conditions), tuple(values)

    def describe(self) -> str:
        parts = []
        if self.name is not None:
            parts.append(f"named {self.name!r}")
        if self.bundle is not None:
            parts.append(f"in bundle {self.bundle!r}")
        if self.kind is not None:
            parts.append(f"of kind {self.kind!r}")
        if self.since is not None:
            parts.append("submitted since " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)))
        return "tasks " + " and ".join(parts) if parts else "every task"


_TASKS = "tasks t JOIN submissions s ON s.id = t.submission_id"
_ATTEMPTS = "attempts a JOIN tasks t ON t.id = a.task_id JOIN submissions s ON s.id = t.submission_id"


def check(db: Database, selection: Selection) -> None:
    """Refuse a name or a bundle that no task bears (a typo should not give an empty page)."""
    for column, value in (("name", selection.name), ("bundle", selection.bundle), ("kind", selection.kind)):
        if (
            value is not None
            and db.query_one(f"SELECT 1 FROM submissions WHERE {column} = ?", (value,)) is None
        ):
            raise NotFoundError(
                f"no task has the {column} {value!r}: `slurm-hog show` lists the tasks with their names"
            )


def task_states(db: Database, selection: Selection) -> dict[str, int]:
    counts = dict.fromkeys(states.TASK_STATES, 0)
    if selection.everything:
        counts.update(db.query("SELECT state, tasks FROM state_counts"))
        return counts
    where, values = selection.where()
    counts.update(db.query(f"SELECT t.state, count(*) FROM {_TASKS} WHERE {where} GROUP BY t.state", values))
    return counts


class Span(NamedTuple):
    """The run's time: from the first submission or hog start to the last end (epoch)."""

    first: float | None
    last: float | None


def span(db: Database, selection: Selection, hog_ids: list[int], now: float) -> Span:
    where, values = selection.where()
    submitted = db.query_one(
        f"SELECT min(s.submitted_at), max(max(s.submitted_at), coalesce(max(t.ended_at), 0)) FROM {_TASKS}"
        f" WHERE {where}",
        values,
    )
    ran = db.query_one(
        f"SELECT min(a.claimed_at), max(coalesce(a.ended_at, ?)) FROM {_ATTEMPTS} WHERE {where}",
        (now, *values),
    )
    hogs = db.query_one(
        "SELECT min(coalesce(launched_at, started_at)), max(coalesce(ended_at, ?)) FROM hogs"
        f" WHERE id IN ({placeholders(hog_ids)})",
        (now, *hog_ids),
    )
    firsts = [value for value in (submitted[0], ran[0], hogs[0]) if value is not None]  # type: ignore[index]
    lasts = [value for value in (submitted[1], ran[1], hogs[1]) if value is not None]  # type: ignore[index]
    return Span(min(firsts) if firsts else None, max(lasts) if lasts else None)


class HogSummary(NamedTuple):
    id: int
    state: str
    host: str | None
    cores: int
    launched_at: float  # or its start, for a hog of an older slurm-hog
    ended_at: float | None  # None while it runs
    heartbeat_at: float | None
    end_reason: str | None
    idle_startup_core_s: float
    idle_lock_core_s: float
    idle_empty_core_s: float
    idle_drain_core_s: float
    lock_wait_s: float
    busy_core_s: float  # every attempt it ran, selected or not
    attempts: int
    split_recorded: bool  # it wrote its idle time by cause (hogs before schema 3 did not)


def hogs(db: Database, selection: Selection, now: float) -> list[HogSummary]:
    """The hogs that ran a selected task; with no name, bundle or kind also those that ran none
    (they cost as much), started since `since` if given."""
    where, values = selection.where()
    chosen = f"SELECT DISTINCT a.hog_id FROM {_ATTEMPTS} WHERE {where} AND a.hog_id IS NOT NULL"
    if selection.name is None and selection.bundle is None and selection.kind is None:
        since = selection.since if selection.since is not None else float("-inf")
        chosen += " UNION SELECT id FROM hogs WHERE started_at IS NOT NULL AND started_at >= ?"
        values = (*values, since)
    rows = db.query(
        "SELECT h.id, h.state, h.host, coalesce(h.cores, 0),"
        " coalesce(h.launched_at, h.started_at, h.created_at), h.ended_at, h.heartbeat_at, h.end_reason,"
        " h.idle_startup_core_s, h.idle_lock_core_s, h.idle_empty_core_s, h.idle_drain_core_s,"
        " h.lock_wait_s, coalesce(b.busy, 0), coalesce(b.attempts, 0), h.launched_at IS NOT NULL"
        " FROM hogs h LEFT JOIN (SELECT a.hog_id, count(*) AS attempts,"
        "   sum((coalesce(a.ended_at, ?) - a.started_at) * s.cores) AS busy"
        f"   FROM {_ATTEMPTS} WHERE a.started_at IS NOT NULL GROUP BY a.hog_id) b ON b.hog_id = h.id"
        f" WHERE h.id IN ({chosen}) ORDER BY h.id",
        (now, *values),
    )
    return [HogSummary._make(row) for row in rows]


class AttemptRow(NamedTuple):
    hog_id: int | None
    claimed_at: float
    started_at: float | None
    ended_at: float | None  # None while it runs
    reason: str | None
    failed: bool
    cores: int
    cpu_labels: str | None  # the hog's CPUs it ran on, "2,3"
    name: str
    task_id: int
    attempt: int


def iter_attempts(db: Database, selection: Selection) -> Iterator[AttemptRow]:
    """Every attempt of the selected tasks, in no order (streamed: sorting a million costs)."""
    where, values = selection.where()
    sql = (
        f"SELECT a.hog_id, a.claimed_at, a.started_at, a.ended_at, a.reason, {_FAILED_RUN}, s.cores, a.cores,"
        " coalesce(s.name, ''), a.task_id, a.attempt"
        f" FROM {_ATTEMPTS} WHERE {where}"
    )
    return map(AttemptRow._make, db.stream(sql, values))


def attempt_count(db: Database, selection: Selection) -> int:
    where, values = selection.where()
    return db.query_one(f"SELECT count(*) FROM {_ATTEMPTS} WHERE {where}", values)[0]  # type: ignore[index]


def attempt_outcomes(db: Database, selection: Selection, now: float) -> dict[str, tuple[int, float]]:
    """Attempts and the core-seconds they ran, by how they ended (done, failed, lost, ...)."""
    where, values = selection.where()
    rows = db.query(
        f"SELECT CASE WHEN a.ended_at IS NULL THEN '{states.RUNNING}'"
        f" WHEN {_FAILED_RUN} THEN '{states.FAILED}'"
        f" WHEN a.reason = '{states.REASON_EXITED}' THEN '{states.DONE}' ELSE a.reason END AS outcome,"
        " count(*), coalesce(sum((coalesce(a.ended_at, ?) - a.started_at) * s.cores), 0)"
        f" FROM {_ATTEMPTS} WHERE {where} GROUP BY outcome",
        (now, *values),
    )
    return {outcome: (count, core_s) for outcome, count, core_s in rows}


def cpu_seconds(db: Database, selection: Selection) -> float:
    where, values = selection.where()
    row = db.query_one(
        f"SELECT coalesce(sum(a.cpu_user_s + a.cpu_system_s), 0) FROM {_ATTEMPTS} WHERE {where}", values
    )
    return row[0]  # type: ignore[index]


class Binned(NamedTuple):
    """Counts per time bin: bin i covers [first + i x width, first + (i + 1) x width)."""

    submitted: dict[int, int]
    gone_unrun: dict[int, int]  # cancelled while they waited
    claimed: dict[int, int]
    started: dict[int, int]
    ended: dict[int, int]
    requeued: dict[int, int]  # attempts after which the task waited again
    done: dict[int, int]  # tasks that ended done


# A task that waits again after an attempt: a later attempt followed, it waits now, or it was
# cancelled after that attempt had ended (a cancel that kills a running task ends both at once).
_REQUEUED = (
    f"(a.attempt < t.attempt OR t.state IN ('{states.WAITING}', '{states.BLOCKED}', '{states.HELD}')"
    f" OR (t.state = '{states.CANCELLED}' AND t.ended_at > a.ended_at))"
)
_CANCELLED_WAITING = (
    f"t.state = '{states.CANCELLED}' AND (t.attempt = 0 OR t.ended_at >"
    " (SELECT l.ended_at FROM attempts l WHERE l.task_id = t.id AND l.attempt = t.attempt))"
)


def binned(db: Database, selection: Selection, first: float, width: float) -> Binned:
    where, values = selection.where()

    def per_bin(column: str, table: str, condition: str = "1") -> dict[int, int]:
        return dict(
            db.query(
                f"SELECT CAST(({column} - ?) / ? AS INTEGER) AS bin, count(*) FROM {table}"
                f" WHERE {where} AND {column} IS NOT NULL AND {condition} GROUP BY bin",
                (first, width, *values),
            )
        )

    return Binned(
        submitted=per_bin("s.submitted_at", _TASKS),
        gone_unrun=per_bin("t.ended_at", _TASKS, _CANCELLED_WAITING),
        claimed=per_bin("a.claimed_at", _ATTEMPTS),
        started=per_bin("a.started_at", _ATTEMPTS),
        ended=per_bin("a.ended_at", _ATTEMPTS, "a.started_at IS NOT NULL"),
        requeued=per_bin("a.ended_at", _ATTEMPTS, _REQUEUED),
        done=per_bin("t.ended_at", _TASKS, f"t.state = '{states.DONE}'"),
    )


class Run(NamedTuple):
    """One attempt that ran to an end of its own, as `stats` and the per-name charts see it."""

    name: str
    runtime_s: float
    max_rss_kib: int | None
    cpu_s: float | None
    cores: int
    failed: bool
    timed_out: bool


def iter_runs(db: Database, selection: Selection) -> Iterator[Run]:
    """Attempts that ran to their end (exited however, or killed at their time limit), in no order."""
    where, values = selection.where()
    sql = (
        "SELECT coalesce(s.name, ''), a.ended_at - a.started_at, a.max_rss_kib,"
        f" a.cpu_user_s + a.cpu_system_s, s.cores, {_FAILED_RUN}, a.reason = '{states.REASON_TIMEOUT}'"
        f" FROM {_ATTEMPTS} WHERE {where} AND {_RAN}"
    )
    return map(Run._make, db.stream(sql, values))


def task_tallies(db: Database, selection: Selection) -> dict[str, tuple[int, int, int, int]]:
    """Per name: tasks, done, retries (attempts that failed, timed out or were lost and were
    followed by another), and attempts lost with their hog."""
    where, values = selection.where()
    tasks = db.query(
        f"SELECT coalesce(s.name, ''), count(*), sum(t.state = '{states.DONE}') FROM {_TASKS}"
        f" WHERE {where} GROUP BY 1",
        values,
    )
    retried = dict(
        (name, (retries, lost))
        for name, retries, lost in db.query(
            f"SELECT coalesce(s.name, ''), sum(a.attempt < t.attempt AND ({_FAILED_RUN} OR a.reason = ?)),"
            f" sum(a.reason = ?) FROM {_ATTEMPTS} WHERE {where} GROUP BY 1",
            (states.REASON_LOST, states.REASON_LOST, *values),
        )
    )
    return {name: (count, done, *retried.get(name, (0, 0))) for name, count, done in tasks}


class Failure(NamedTuple):
    name: str
    task_id: int
    attempt: int
    host: str | None
    ended_at: float | None
    reason: str | None
    exit_code: int | None
    signal: int | None
    stderr_tail: str | None


def failures(db: Database, selection: Selection, per_name: int) -> tuple[list[Failure], dict[str, int]]:
    """The latest `per_name` failed attempts of each name with their stderr tails, and how many
    failed in all per name."""
    where, values = selection.where()
    totals = dict(
        db.query(
            f"SELECT coalesce(s.name, ''), count(*) FROM {_ATTEMPTS}"
            f" WHERE {where} AND {_FAILED_RUN} GROUP BY 1",
            values,
        )
    )
    rows = db.query(
        "SELECT name, task_id, attempt, host, ended_at, reason, exit_code, signal, stderr_tail FROM ("
        " SELECT coalesce(s.name, '') AS name, a.task_id, a.attempt, a.host, a.ended_at, a.reason,"
        " a.exit_code, a.signal, a.stderr_tail,"
        " row_number() OVER (PARTITION BY coalesce(s.name, '') ORDER BY a.ended_at DESC) AS rank"
        f" FROM {_ATTEMPTS} WHERE {where} AND {_FAILED_RUN}) WHERE rank <= ? ORDER BY name, ended_at DESC",
        (*values, per_name),
    )
    return [Failure._make(row) for row in rows], totals
