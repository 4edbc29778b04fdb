"""Hog rows as users look at them and tidy them: one hog's log, the live hogs' load, and deleting
the rows of hogs that ended long ago with their files beside the queue."""

import contextlib
import os
import time
from typing import NamedTuple

from hog.store import beats, states
from hog.store.db import Database
from hog.store.queue import chunks, placeholders


class HogLog(NamedTuple):
    state: str
    log_path: str | None


def hog_log(db: Database, hog_id: int) -> HogLog | None:
    """Where hog `hog_id`'s log is, and whether it still runs; None when there is no such hog."""
    row = db.query_one("SELECT state, log_path FROM hogs WHERE id = ?", (hog_id,))
    return None if row is None else HogLog(*row)


class HogLoad(NamedTuple):
    """A live hog and what it does now."""

    id: int
    state: str
    host: str | None
    cores: int | None
    end_by: float | None  # when its allocation ends, if known
    heartbeat_at: float | None
    stop_request: str | None  # `hogs stop`: drain or now
    running: int  # tasks started and not ended
    claimed: int  # tasks claimed ahead, not started yet
    cores_busy: int  # cores of the tasks that run


def hog_loads(db: Database) -> list[HogLoad]:
    """Every pending and running hog with its running tasks, oldest first."""
    return [
        HogLoad(*row)
        for row in db.query(
            "SELECT h.id, h.state, h.host, h.cores, h.end_by, h.heartbeat_at, h.stop_request,"
            "  count(a.started_at), count(t.id) - count(a.started_at),"
            "  coalesce(sum(CASE WHEN a.started_at IS NOT NULL THEN s.cores END), 0)"
            " FROM hogs h"
            " LEFT JOIN tasks t ON t.hog_id = h.id"
            " LEFT JOIN submissions s ON s.id = t.submission_id"
            " LEFT JOIN attempts a ON a.task_id = t.id AND a.attempt = t.attempt"
            f" WHERE h.state IN ({placeholders(states.HOG_LIVE_STATES)})"
            " GROUP BY h.id ORDER BY h.id",
            states.HOG_LIVE_STATES,
        )
    ]


class CleanedHogs(NamedTuple):
    hogs: int  # rows deleted
    files: int  # their logs, batch scripts and pid files removed
    bytes: int
    failures: list[str]  # "PATH: why" of files that could not be removed


def cleanup_hogs(db: Database, older_than_s: float | None = None, now: float | None = None) -> CleanedHogs:
    """Delete the rows of ended hogs (that ended longer ago than `older_than_s`, if given) and
    their files in FILE.logs/hogs/. Their attempts keep their host and lose the hog's id."""
    now = time.time() if now is None else now
    cutoff = now - older_than_s if older_than_s is not None else now + 1
    ended = placeholders(states.HOG_ENDED_STATES)
    with db.transaction() as connection:
        rows = connection.execute(
            f"SELECT id, log_path FROM hogs WHERE state IN ({ended}) AND ended_at <= ?",
            (*states.HOG_ENDED_STATES, cutoff),
        ).fetchall()
        for chunk in chunks([hog_id for hog_id, _ in rows], 500):
            marks = placeholders(chunk)
            connection.execute(f"UPDATE attempts SET hog_id = NULL WHERE hog_id IN ({marks})", tuple(chunk))
            connection.execute(f"DELETE FROM hogs WHERE id IN ({marks})", tuple(chunk))
    # The files go after the rows, outside the lock: a cleanup killed in between leaves files
    # without rows, never rows without their files.
    files = size = 0
    failures: list[str] = []
    for hog_id, log_path in rows:
        for path in _files_of(db, hog_id, log_path):
            try:
                length = os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as error:
                failures.append(f"{path}: {error.strerror}")
                continue
            files, size = files + 1, size + length
    return CleanedHogs(len(rows), files, size, failures)


def _files_of(db: Database, hog_id: int, log_path: str | None) -> list[str]:
    """A hog's files beside the queue; a log named elsewhere is not the queue's to remove."""
    folder = db.files.hogs
    paths = [
        db.files.hog_log(hog_id),
        db.files.hog_pids(hog_id),
        beats.beat_path(db.files, hog_id),
        db.files.hog_log(hog_id)[: -len(".log")] + ".sbatch",
    ]
    if log_path:
        with contextlib.suppress(ValueError):
            if os.path.commonpath([os.path.abspath(log_path), folder]) == folder:
                paths.append(log_path)
    return list(dict.fromkeys(paths))
