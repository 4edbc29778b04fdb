"""Starting tasks in their own process groups and killing whole groups."""

import contextlib
import errno
import os
import re
import signal
from typing import NamedTuple

from .db import make_private_dirs


class Exited(NamedTuple):  # a tuple: one is made for every task, on the hog's hot path
    pid: int
    exit_code: int | None
    signal: int | None
    max_rss_kib: int
    cpu_user_s: float
    cpu_system_s: float


# A command made of plain words runs without a shell: one exec instead of two (dash forks even
# for a single command), unless its first word is something only the shell knows.
_PLAIN_WORDS = re.compile(r"[A-Za-z0-9_@%+=:,./-]+(?:[ \t]+[A-Za-z0-9_@%+=:,./-]+)*")
_SHELL_WORDS = frozenset(
    (  # noqa: SIM905 (a list of 58 words, one per line, would hide the code around it)
        "! { } case do done elif else esac fi for if in then until while . : [ alias bg break cd "
        "command continue echo eval exec exit export false fc fg getopts hash jobs kill local printf "
        "pwd read readonly return set shift test times trap true type ulimit umask unalias unset wait"
    ).split()
)


def direct_argv(command: str) -> list[str] | None:
    """The words of `command` to run without a shell, or None when it needs one (expansions,
    quotes, redirections, operators, an assignment, a builtin or keyword first)."""
    text = command.strip(" \t")
    if not _PLAIN_WORDS.fullmatch(text):
        return None
    words = text.split()
    if words[0] in _SHELL_WORDS or "=" in words[0]:
        return None
    return words


class Spawner:
    """Starts tasks with posix_spawn: each in a new session, with its files.

    posix_spawn (vfork underneath) converts the environment in C and needs no helper objects,
    which makes it the cheapest way to start a process from Python. The child inherits the CPUs
    of the calling thread. There is no working-folder action, so the folder of the process is
    changed around the spawn (the hog's other threads use absolute paths only), under a lock as
    threads spawn at once, and only when it differs from the last task's.
    """

    # The hog ignores SIGHUP and Python ignores SIGPIPE; ignored signals survive exec, so reset
    # them for the task as a shell would have them.
    RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP)

    def __init__(self) -> None:
        import threading

        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.home = os.getcwd()
        self.cwd = self.home
        self._folder_lock = threading.Lock()
        self._programs: dict[tuple[str, str | None], str] = {}

    def spawn(self, task: list[str] | str, cwd: str, env: dict[str, str], outputs: tuple[str, str]) -> int:
        """Start `task` (an argv, or a shell command) with these files, made empty ahead by
        OutputFiles, as its stdout and stderr; return its pid (= its process group). Raises
        OSError if it cannot start. (Opening without O_CREAT spares the child the folder's lock,
        which the thread making other tasks' files holds often.)

        A shell command of plain words starts directly; if that fails (not found, not
        executable, a script without #!) or it has shell syntax, /bin/sh -c runs it or says why.
        """
        file_actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0)] + [
            (os.POSIX_SPAWN_DUP2, self.devnull, fd)
            if path == os.devnull
            else (os.POSIX_SPAWN_OPEN, fd, path, os.O_WRONLY, 0)
            for fd, path in ((1, outputs[0]), (2, outputs[1]))
        ]
        with self._folder_lock:
            if cwd != self.cwd:
                os.chdir(cwd)
                self.cwd = cwd
            if not isinstance(task, str):
                return self._posix_spawn(task, env, file_actions)
            words = direct_argv(task)
            if words is not None:
                with contextlib.suppress(OSError):
                    return self._posix_spawn(words, env, file_actions)
            return self._posix_spawn(["/bin/sh", "-c", task], env, file_actions)

    def _posix_spawn(self, argv: list[str], env: dict[str, str], file_actions: list[tuple]) -> int:
        return os.posix_spawn(
            self._resolve(argv[0], env.get("PATH")),
            argv,
            env,
            file_actions=file_actions,
            setsid=True,
            setsigdef=self.RESET_SIGNALS,
        )

    def _resolve(self, name: str, path: str | None) -> str:
        """The program's file, searched in the task's PATH as execvpe would."""
        if "/" in name:
            return name
        key = (name, path)
        found = self._programs.get(key)
        if found is None:
            import shutil

            found = shutil.which(name, path=path if path is not None else os.defpath)
            if found is None:
                raise FileNotFoundError(errno.ENOENT, "no such program on the task's PATH", name)
            self._programs[key] = found
        return found

    def close(self) -> None:
        os.close(self.devnull)
        if self.cwd != self.home:
            with contextlib.suppress(OSError):
                os.chdir(self.home)


class OutputFiles:
    """Creates tasks' output files on a helper thread, ahead of their start.

    Creating a file costs as much as starting a task (on a parallel filesystem each is a round
    trip to the metadata server). The hog asks for a task's files when it claims the task; this
    thread creates them, and their folders, while the loop starts and reaps others (os.open
    releases the GIL), and closes them at once: the child opens them again by path as it starts,
    which costs little once they exist. Kept open, the files of hundreds of tasks claimed ahead
    would be copied into the fd table of every child.
    """

    def __init__(self, folder_mode: int) -> None:
        import queue as queues
        import threading

        self.folder_mode = folder_mode
        self._requests: queues.SimpleQueue = queues.SimpleQueue()
        self._asked: set[tuple[int, int]] = set()
        self._ready: dict[tuple[int, int], OSError | None] = {}
        self._cond = threading.Condition(threading.Lock())
        self._waiting = 0  # threads in wait(): made files wake them only then
        self._folders: set[str] = set()
        self._thread = threading.Thread(target=self._work, name="output-files", daemon=True)
        self._thread.start()

    def request(self, key: tuple[int, int], paths: tuple[str, str], mode: int) -> None:
        if paths[0] == paths[1] == os.devnull:
            return  # nothing to make
        self._asked.add(key)
        self._requests.put((key, paths, mode))

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

    def discard(self, key: tuple[int, int], paths: tuple[str, str]) -> None:
        """A requested task that will not start here: remove its files."""
        with contextlib.suppress(OSError):
            self.wait(key)
        for path in paths:
            if path != os.devnull:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def close(self) -> None:
        self._requests.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while (request := self._requests.get()) is not None:
            key, paths, mode = request
            error = None
            try:
                for path in paths:
                    if path == os.devnull:
                        continue
                    folder = os.path.dirname(path)
                    if folder not in self._folders:
                        make_private_dirs(folder, self.folder_mode)
                        self._folders.add(folder)
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode))
            except OSError as failed:
                error = failed
            with self._cond:
                self._ready[key] = error
                if self._waiting:
                    self._cond.notify_all()


def open_for_writing(path: str, mode: int, append: bool = False):
    """A binary file created with `mode` (less the umask), truncated unless `append`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    return os.fdopen(os.open(path, flags, mode), "ab" if append else "wb")


def exited_from(pid: int, status: int, usage) -> Exited:
    """A wait4 result as an Exited."""
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


def record_task_process(fd: int, pid: int) -> int:
    """Note a task's process group in the hog's pid file, so a reaper on this host can kill it
    if the hog dies without cleaning up (kill -9, the OOM killer). Returns the bytes written."""
    return os.write(fd, b"%d\n" % pid)


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
