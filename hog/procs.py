"""Starting tasks in their own process groups and killing whole groups."""

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class Exited:
    pid: int
    exit_code: int | None
    signal: int | None
    max_rss_kib: int
    cpu_user_s: float
    cpu_system_s: float


def spawn(
    argv: list[str],
    cwd: str,
    env: dict[str, str],
    stdout_path: str,
    stderr_path: str,
    cpu_ids: list[int] | None,
    file_mode: int = 0o666,
) -> subprocess.Popen:
    """Start `argv` in a new session (so its whole group can be killed), pinned to `cpu_ids`.

    The child is pinned as soon as it exists, while its program is still loading, long before it
    can start processes of its own. A preexec_fn would pin it before exec but forbids vfork and
    costs two thirds of the spawn rate; pinning the hog itself around the fork migrates the hog
    on every task, which is slow on a busy node.
    """
    with (
        open_for_writing(stdout_path, file_mode) as stdout,
        open_for_writing(stderr_path, file_mode) as stderr,
    ):
        process = _popen(argv, cwd, env, stdout, stderr)
    if cpu_ids is not None:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(process.pid, cpu_ids)
    return process


def open_for_writing(path: str, mode: int, append: bool = False):
    """A binary file created with `mode` (less the umask), truncated unless `append`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, mode), "ab" if append else "wb")


def _popen(argv: list[str], cwd: str, env: dict[str, str], stdout, stderr) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        close_fds=True,
    )


def reap_any() -> Exited | None:
    """One exited child, if any, with its resource use; None when none has exited."""
    try:
        pid, status, usage = os.wait4(-1, os.WNOHANG)
    except ChildProcessError:
        return None
    if pid == 0:
        return None
    exit_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    return Exited(pid, exit_code, signal_number, usage.ru_maxrss, usage.ru_utime, usage.ru_stime)


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


def process_start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot, or "" if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return ""
    # After the command: state is field 3, start time field 22 (1-based in proc(5)).
    if fields[0] in (b"Z", b"X"):
        return ""
    return fields[19].decode()


def record_task_process(fd: int, pid: int) -> None:
    """Note a task's process group in the hog's pid file, so a reaper on this host can kill it
    if the hog dies without cleaning up (kill -9, the OOM killer)."""
    os.write(fd, b"%d\n" % pid)


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
