"""Deleting ended tasks, and the output files beside the queue that belong to no task any more.

Files a user named with -o/-e are the user's and stay. The queue's own files
(FILE.logs/tasks/NNNNNN/ID.ATTEMPT.out|err) are removed after the rows, outside the write lock:
unlinking thousands of files must not stop the hogs' writes, and a cleanup killed in between
leaves files without rows, never rows without their files.
"""

import contextlib
import os
import re
import time
from typing import NamedTuple

from hog.errors import UsageError
from hog.store import states
from hog.store.counts import count_tasks
from hog.store.db import Database
from hog.store.paths import SUBFOLDERS, TASKS_PER_FOLDER
from hog.store.queue import placeholders

_OUTPUT_NAME = re.compile(r"(\d+)\.\d+\.(?:out|err)")
# Files that could not be removed, named in the report: the first few say enough.
FAILURES_SHOWN = 5


class Cleaned(NamedTuple):
    tasks: int  # deleted
    files: int  # output files removed
    bytes: int  # their size
    failures: list[str]  # "PATH: why" of the first files that could not be removed
    failed: int  # how many files could not be removed


def cleanup(
    db: Database,
    state_filter: tuple[str, ...] = (),
    older_than_s: float | None = None,
    now: float | None = None,
    keep_output: bool = False,
) -> Cleaned:
    """Delete ended tasks (never waiting or running ones) and, unless `keep_output`, the files
    beside the queue of tasks that are gone."""
    now = time.time() if now is None else now
    active = [state for state in state_filter if state not in states.ENDED_STATES]
    if active:
        raise UsageError(
            f"cleanup deletes only ended tasks, not {', '.join(active)} ones: "
            "cancel them first, or leave out --state"
        )
    wanted = state_filter or states.ENDED_STATES
    marks = placeholders(wanted)
    cutoff = now - older_than_s if older_than_s is not None else now + 1
    with db.transaction() as connection:
        folders = []
        if not keep_output:
            folders = [
                folder
                for (folder,) in connection.execute(
                    f"SELECT DISTINCT id / ? FROM tasks WHERE state IN ({marks}) AND ended_at <= ?",
                    (TASKS_PER_FOLDER, *wanted, cutoff),
                )
            ]
        deleted = 0
        for state in wanted:
            connection.execute(
                f"DELETE FROM tasks WHERE state = ? AND ended_at <= ? AND state IN ({marks})",
                (state, cutoff, *wanted),
            )
            number = connection.changes()
            count_tasks(connection, state, -number)
            deleted += number
        if deleted:
            connection.execute(
                "DELETE FROM submissions WHERE id NOT IN (SELECT DISTINCT submission_id FROM tasks)"
            )
            connection.execute(
                "DELETE FROM environments WHERE id NOT IN (SELECT DISTINCT environment_id FROM submissions)"
            )
        # Ids are never reused (AUTOINCREMENT): a file of a higher id is a task's submitted since.
        last_id = sum(
            row[0] for row in connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'tasks'")
        )
    files = size = 0
    failures: list[str] = []
    for folder in folders:
        removed, removed_bytes, failed = _clean_folder(db, folder, last_id)
        files, size = files + removed, size + removed_bytes
        failures += failed
    return Cleaned(deleted, files, size, failures[:FAILURES_SHOWN], len(failures))


def _clean_folder(db: Database, folder: int, last_id: int) -> tuple[int, int, list[str]]:
    """Remove the files in one output folder (its subfolders, then the folder itself, where
    older hogs wrote) of tasks no longer in the queue (up to `last_id`), and each folder once it
    is empty and no task, now or to come, has its ids. Returns the files removed, their bytes,
    and "PATH: why" for each file that could not be removed."""
    first_id = folder * TASKS_PER_FOLDER
    last_of_folder = first_id + TASKS_PER_FOLDER - 1
    base = db.files.task_folder(first_id)
    kept = {
        row[0]
        for row in db.query("SELECT id FROM tasks WHERE id BETWEEN ? AND ?", (first_id, last_of_folder))
    }
    finished = not kept and last_of_folder <= last_id
    files = size = 0
    failures: list[str] = []
    for path in [*(os.path.join(base, str(number)) for number in range(SUBFOLDERS)), base]:
        removed, removed_bytes, left, failed = _clean_files(path, kept, last_id)
        files, size = files + removed, size + removed_bytes
        failures += failed
        if not left and finished:
            with contextlib.suppress(OSError):
                os.rmdir(path)
    return files, size, failures


def _clean_files(path: str, kept: set[int], last_id: int) -> tuple[int, int, int, list[str]]:
    """Remove the output files in `path` of tasks not `kept` (up to `last_id`): the files
    removed, their bytes, the entries left (a subfolder is one) and what could not be removed."""
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return 0, 0, 0, []
    except OSError as error:
        return 0, 0, 1, [f"{path}: {error.strerror}"]
    files = size = left = 0
    failures = []
    for entry in entries:
        match = _OUTPUT_NAME.fullmatch(entry.name)
        task_id = int(match.group(1)) if match else None
        if task_id is None or task_id in kept or task_id > last_id:
            left += 1
            continue
        try:
            length = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except FileNotFoundError:
            continue  # removed meanwhile by another cleanup
        except OSError as error:
            left += 1
            failures.append(f"{entry.path}: {error.strerror}")
            continue
        files, size = files + 1, size + length
    return files, size, left, failures
