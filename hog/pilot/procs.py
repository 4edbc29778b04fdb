"""Processes and their files, for the hog and its reaper: how a task ended, its output files made
ahead, killing whole process groups, a process's identity by its start time. (The slot processes
start tasks: slot.py.)
"""

import contextlib
import os
import signal
from typing import NamedTuple

from hog.store.paths import create_file, make_private_dirs


class Exited(NamedTuple):  # a tuple: one is made for every task, on the hog's hot path
    pid: int
    exit_code: int | None
    signal: int | None
    max_rss_kib: int
    cpu_user_s: float
    cpu_system_s: float


class OutputFiles:
    """Creates tasks' output files on a helper thread, ahead of their start.

    Creating a file can cost as much as starting a task (on a parallel filesystem each is a round
    trip to the metadata server; on ext4 without a journal, 20 us here but up to 0.2-0.8 ms in
    the minutes after many files were deleted). The hog asks for a task's files when it claims
    the task; this thread creates them, and their folders, while the loop starts and reaps others
    (os.open releases the GIL), and closes them at once. Kept open, the files of hundreds of
    tasks claimed ahead would be copied into the fd table of every child. The slot that starts a
    task opens them again while the task before it runs (slot.py): on a shared filesystem an
    open is a round trip to its server, which would otherwise sit between one task's end and the
    next start.

    One thread rather than each slot process just before its spawn (as a shell does): measured
    with 5,000 `true` tasks on 2 cores, slots making their tasks' files ran at 0.96-0.98x this
    where creating was cheap and 0.86x where it was slow. There the creating sits between one
    task's end and the next start, and two slots creating in one folder wait on its lock (the
    kernel spins on it); one thread creates without a rival, off the slots' path. Nor each slot
    while the task before runs (one round trip instead of create and open): 0.83x on the local
    disk, where a slot's creates take CPU from the task on its core.

    A file that exists already (a user's -o file from an earlier attempt) is left as it is: the
    child truncates it as it starts, so a task handed back unstarted destroys no earlier output.
    Only files this thread created are removed when their task does not start here, and only
    those of one attempt alone (the queue's logs) are opened before their task starts.
    """

    def __init__(self, folder_mode: int) -> None:
        import queue as queues
        import threading

        self.folder_mode = folder_mode
        self._requests: queues.SimpleQueue = queues.SimpleQueue()
        self._asked: set[tuple[int, int]] = set()
        self._ready: dict[tuple[int, int], OSError | None] = {}
        self._created: dict[tuple[int, int], list[str]] = {}  # made here, so ours to remove
        self._per_attempt: dict[tuple[int, int], tuple[bool, bool]] = {}
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0  # threads in wait(): made files wake them only then
        self._folders: set[str] = set()
        self._thread = threading.Thread(target=self._work, name="output-files", daemon=True)
        self._thread.start()

    def request(
        self,
        key: tuple[int, int],
        paths: tuple[str, str],
        modes: tuple[int, int],
        per_attempt: tuple[bool, bool] = (False, False),
    ) -> None:
        """Make a task's stdout and stderr files (os.devnull: none), each with its mode less the
        umask; `per_attempt`: which are this attempt's alone (no other task writes them)."""
        if paths[0] == paths[1] == os.devnull:
            return  # nothing to make
        self._asked.add(key)
        if any(per_attempt):
            self._per_attempt[key] = per_attempt
        self._requests.put((key, paths, modes))

    def wait(self, key: tuple[int, int]) -> None:
        """Until a requested task's files exist; raises the OSError that creating them met."""
        if key not in self._asked:
            return
        self._asked.discard(key)
        with self._cond:
            while key not in self._ready:
                self._waiting += 1
                self._cond.wait()
                self._waiting -= 1
            error = self._ready.pop(key)
        if error is not None:
            raise error

    def fresh(self, key: tuple[int, int], paths: tuple[str, str]) -> tuple[bool, bool]:
        """Which of a waited-for task's files stay empty until it starts: made here, and its
        attempt's alone. Those may be opened ahead of its start, without truncating them."""
        per_attempt = self._per_attempt.get(key)
        if per_attempt is None:
            return (False, False)
        with self._cond:
            created = self._created.get(key, ())
        return (per_attempt[0] and paths[0] in created, per_attempt[1] and paths[1] in created)

    def started(self, key: tuple[int, int]) -> None:
        """A task whose files were waited for has started: they are its own now."""
        self._per_attempt.pop(key, None)
        with self._cond:
            self._created.pop(key, None)

    def discard(self, key: tuple[int, int]) -> None:
        """A requested task that will not start here: remove the files made for it."""
        with contextlib.suppress(OSError):
            self.wait(key)
        self._per_attempt.pop(key, None)
        with self._cond:
            created = self._created.pop(key, [])
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while (request := self._requests.get()) is not None:
            key, paths, modes = request
            error = None
            created = []
            try:
                for path, mode in zip(paths, modes, strict=True):
                    if path == os.devnull or path in created:
                        continue
                    folder = os.path.dirname(path)
                    if folder not in self._folders:
                        make_private_dirs(folder, self.folder_mode)
                        self._folders.add(folder)
                    try:
                        os.close(create_file(path, os.O_WRONLY | os.O_EXCL, mode))
                    except FileExistsError:
                        continue  # truncated by the child as it starts, not before
                    created.append(path)
            except OSError as failed:
                error = failed
            with self._cond:
                self._ready[key] = error
                if created:
                    self._created[key] = created
                if self._waiting:
                    self._cond.notify_all()


def open_for_writing(path: str, mode: int, append: bool = False):
    """A binary file created with `mode` (kept whatever the umask: `create_file`), truncated
    unless `append`."""
    flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(create_file(path, flags, mode), "ab" if append else "wb")


def exited_from(pid: int, status: int, max_rss_kib: int, cpu_user_s: float, cpu_system_s: float) -> Exited:
    """A wait4 result as an Exited."""
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return Exited(pid, exit_code, signal_number, max_rss_kib, cpu_user_s, cpu_system_s)


def kill_group(process_group: int, signal_number: int = signal.SIGKILL) -> None:
    """Signal a whole process group; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process_group, signal_number)


def read_tail(path: str, size: int) -> str:
    """The last `size` bytes of a file as text ("" if unreadable)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            length = handle.tell()
            handle.seek(max(0, length - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def process_start_ticks(pid: int, zombie_too: bool = False) -> str:
    """The process's start time in clock ticks since boot, or "" if it is gone or (unless
    `zombie_too`) a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return ""
    # After the command: state is field 3, start time field 22 (1-based in proc(5)).
    if fields[0] in (b"Z", b"X") and not zombie_too:
        return ""
    return fields[19].decode()


def kill_recorded_processes(pids_path: str, hog_id: int) -> int:
    """Kill the process groups listed in a dead hog's pid file that are still its tasks.

    A pid is trusted only if its process carries the hog's HOG_HOG_ID in its environment, so a
    recycled pid is never signalled. Returns how many groups were killed; removes the file.
    """
    try:
        with open(pids_path) as handle:
            pids = [int(word) for word in handle.read().split() if word.isdigit()]
    except OSError:
        return 0
    marker = b"\0HOG_HOG_ID=%d\0" % hog_id
    killed = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environment = b"\0" + handle.read()
        except OSError:
            continue
        if marker in environment:
            kill_group(pid, signal.SIGKILL)
            killed += 1
    with contextlib.suppress(OSError):
        os.unlink(pids_path)
    return killed
