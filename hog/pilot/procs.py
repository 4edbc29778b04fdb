"""Processes and their files, for the hog and its reaper: how a task ended, killing whole process
groups, a process's identity by its start time. (The slot processes start tasks and make their
output files: slot.py.)
"""

import contextlib
import os
import signal
from typing import NamedTuple

from hog.store.paths import create_file


class Exited(NamedTuple):  # a tuple: one is made for every task, on the hog's hot path
    pid: int
    exit_code: int | None
    signal: int | None
    max_rss_kib: int
    cpu_user_s: float
    cpu_system_s: float


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
