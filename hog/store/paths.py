"""Where the files beside a queue database are, and the modes that keep them private.

For the queue FILE:

    FILE.lock                                  the flock that serialises writers (db.py)
    FILE.logs/tasks/NNNNNN/ID.ATTEMPT.out|err  a task's default output, a thousand tasks a folder
    FILE.logs/hogs/hog-N.log                   the log of a hog the monitor started
    FILE.logs/hogs/hog-N.pids                  a hog's tasks' process groups, for its reaper
    FILE.monitor.pid, .log, .lock              the monitor's pid file, log and lock
"""

import contextlib
import os
from typing import NamedTuple

# Tasks per output folder: with .out and .err per attempt a folder holds a few thousand files.
TASKS_PER_FOLDER = 1000


class Modes(NamedTuple):
    folder: int
    file: int


OWNER_ONLY = Modes(0o700, 0o600)
OWNER_AND_GROUP = Modes(0o770, 0o660)


class QueueFiles(NamedTuple):
    """The names of the files beside one queue database.

    The lock and the monitor's files keep the database path as given; the logs folder is made
    absolute, because its names are written into the queue and read by tasks in other folders.
    """

    database: str

    @property
    def lock(self) -> str:
        return self.database + ".lock"

    @property
    def logs(self) -> str:
        return os.path.abspath(self.database) + ".logs"

    @property
    def tasks(self) -> str:
        return os.path.join(self.logs, "tasks")

    @property
    def hogs(self) -> str:
        return os.path.join(self.logs, "hogs")

    def task_output(self, task_id: int, attempt: int, stream: str) -> str:
        """The default file for `stream` ("out" or "err") of one attempt."""
        return os.path.join(self.task_folder(task_id), f"{task_id}.{attempt}.{stream}")

    def task_folder(self, task_id: int) -> str:
        """The folder of the default files of `task_id` and its neighbours (TASKS_PER_FOLDER)."""
        return os.path.join(self.tasks, f"{task_id // TASKS_PER_FOLDER:06d}")

    def hog_log(self, hog_id: int) -> str:
        return os.path.join(self.hogs, f"hog-{hog_id}.log")

    def hog_pids(self, hog_id: int) -> str:
        """Where a hog notes its tasks' process groups (each slot process writes, healing reads)."""
        return os.path.join(self.hogs, f"hog-{hog_id}.pids")

    @property
    def monitor_pid(self) -> str:
        return self.database + ".monitor.pid"

    @property
    def monitor_log(self) -> str:
        return self.database + ".monitor.log"

    @property
    def monitor_lock(self) -> str:
        return self.database + ".monitor.lock"

    def private_modes(self) -> Modes:
        """Modes for the logs: owner and group when the database is shared with its group."""
        try:
            shared = os.stat(self.database).st_mode & 0o060 == 0o060
        except OSError:
            shared = False
        return OWNER_AND_GROUP if shared else OWNER_ONLY


def make_private_dirs(path: str, mode: int) -> None:
    """Like os.makedirs, but every folder it creates gets `mode` (makedirs gives only the last)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, mode)
            os.chmod(folder, mode)  # the umask may have taken bits away
