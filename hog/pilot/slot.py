"""A slot process: starts the tasks the hog sends it, one at a time, and waits for each.

The hog runs one per core slot (launcher.py). Its own interpreter, pinned once to the slot's CPU,
means a task that ends is followed by the next at once, without waiting for the hog's loop or
database thread to let go of their interpreter lock. It imports only the standard library, and
runs with `python -I -S` to start fast.

Messages both ways are marshalled tuples after a 4-byte length, each written whole (those to the
hog stay under PIPE_BUF, so a write is never split):

    hog -> slot:  ("run", key, what, cwd, env, outputs, latest_start, cpus)
                  ("withdraw", key)
    slot -> hog:  ("started", key, pid, started_at, started_mono)
                  ("ended", key, pid, status, max_rss_kib, cpu_user_s, cpu_system_s, ended_mono)
                  ("not_started", key, None | (errno, strerror, filename))
                  ("crashed", traceback)

`what` is an argv or a shell command; `cpus` the CPUs to widen to for a task of several cores,
else None; `latest_start` the epoch after which it must not start (None: any time). A task not
started (too late, withdrawn, or unable to start) is reported as not_started. When the hog's end
of the command pipe closes (it exited, or was killed), the slot kills its task's process group
and exits: nothing it starts outlives the hog.
"""

import contextlib
import errno
import marshal
import os
import re
import signal
import struct
import sys
import threading
import time
from collections import deque

HEADER = struct.Struct("<I")

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

# Signals the slot process ignores (the hog handles them and tells the slot what to do), and
# those the hog and Python ignore: ignored signals survive exec, so a task gets them back as a
# shell would have them.
IGNORED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)
RESET_SIGNALS = (*IGNORED, signal.SIGPIPE, signal.SIGXFSZ)


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


def pack(message: tuple) -> bytes:
    body = marshal.dumps(message)
    return HEADER.pack(len(body)) + body


def unpack(buffer: bytearray) -> list[tuple]:
    """The whole messages at the start of `buffer`, removed from it."""
    messages = []
    start = 0
    while len(buffer) - start >= HEADER.size:
        (size,) = HEADER.unpack_from(buffer, start)
        end = start + HEADER.size + size
        if end > len(buffer):
            break
        messages.append(marshal.loads(buffer[start + HEADER.size : end]))
        start = end
    del buffer[:start]
    return messages


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Spawner:
    """Starts tasks with posix_spawn: each in a new session, with its files.

    posix_spawn (vfork underneath) converts the environment in C and needs no helper objects,
    which makes it the cheapest way to start a process from Python. The child inherits the CPUs
    of the calling thread. There is no working-folder action, so the folder of the process is
    changed before the spawn when it differs from the last task's.
    """

    def __init__(self) -> None:
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.cwd = os.getcwd()
        self._programs: dict[tuple[str, str | None], str] = {}

    def spawn(self, task: list[str] | str, cwd: str, env: dict[str, str], outputs: tuple[str, str]) -> int:
        """Start `task` (an argv, or a shell command) with these files, made empty ahead by the
        hog, as its stdout and stderr; return its pid (= its process group). Raises OSError if
        it cannot start. (Opening without O_CREAT spares the child the folder's lock, which the
        hog's thread making other tasks' files holds often.)

        A shell command of plain words starts directly; if that fails (not found, not
        executable, a script without #!) or it has shell syntax, /bin/sh -c runs it or says why.
        """
        file_actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0)] + [
            (os.POSIX_SPAWN_DUP2, self.devnull, fd)
            if path == os.devnull
            else (os.POSIX_SPAWN_OPEN, fd, path, os.O_WRONLY, 0)
            for fd, path in ((1, outputs[0]), (2, outputs[1]))
        ]
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
            setsigdef=RESET_SIGNALS,
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


class Slot:
    """The slot's two threads: the main one starts and waits for tasks, one reads commands."""

    def __init__(self, commands_fd: int, events_fd: int, pids_fd: int, cpu: int | None) -> None:
        self.commands_fd = commands_fd
        self.events_fd = events_fd
        self.pids_fd = pids_fd
        self.cpu = cpu
        self.spawner = Spawner()
        self.cond = threading.Condition(threading.Lock())
        self.queued: deque[tuple] = deque()
        self.current: int | None = None  # the running task's pid
        self.gone = False  # the hog closed its end

    def tell(self, data: bytes) -> None:
        try:
            write_all(self.events_fd, data)
        except BrokenPipeError:
            self.leave()

    def leave(self) -> None:
        """The hog is gone: kill the task it can no longer hear of, and exit."""
        with self.cond:
            self.gone = True
            pid = self.current
        if pid is not None:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        os._exit(0)

    def read_commands(self) -> None:
        try:
            buffer = bytearray()
            while chunk := os.read(self.commands_fd, 1 << 16):
                buffer += chunk
                for message in unpack(buffer):
                    if message[0] == "run":
                        with self.cond:
                            self.queued.append(message)
                            self.cond.notify()
                    else:  # withdraw
                        self.withdraw(message[1])
        except BaseException:
            self.crash()
        self.leave()

    def withdraw(self, key: tuple) -> None:
        with self.cond:
            for message in self.queued:
                if message[1] == key:
                    self.queued.remove(message)
                    break
            else:
                return  # started already, or never here
        self.tell(pack(("not_started", key, None)))

    def serve(self) -> None:
        if self.cpu is not None:
            os.sched_setaffinity(0, {self.cpu})
        threading.Thread(target=self.read_commands, name="commands", daemon=True).start()
        ended = b""  # the last task's end, reported with the next task's start: one write
        while True:
            with self.cond:
                message = self.queued.popleft() if self.queued else None
            if message is None:
                if ended:
                    self.tell(ended)
                    ended = b""
                with self.cond:
                    while not self.queued:
                        self.cond.wait()
                    message = self.queued.popleft()
            pid, report = self.start(message)
            self.tell(ended + report)
            ended = self.wait(message[1], pid) if pid is not None else b""

    def start(self, message: tuple) -> tuple[int | None, bytes]:
        """The task's pid (None if it did not start) and the report of its start."""
        _, key, what, cwd, env, outputs, latest_start, cpus = message
        if latest_start is not None and time.time() > latest_start:
            return None, pack(("not_started", key, None))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        try:
            started_at, started_mono = time.time(), time.monotonic()
            with self.cond:  # not while the hog's end closes: its task would outlive it
                if self.gone:
                    os._exit(0)
                self.current = pid = self.spawner.spawn(what, cwd, env, outputs)
        except OSError as error:
            filename = error.filename if isinstance(error.filename, str) else None
            failure = (error.errno, str(error.strerror or error)[:500], filename)
            return None, pack(("not_started", key, failure))
        finally:
            if cpus is not None and self.cpu is not None:
                os.sched_setaffinity(0, {self.cpu})
        if self.pids_fd >= 0:
            # Before anything else: a reaper must find it if the hog is killed from here on.
            os.write(self.pids_fd, b"%d\n" % pid)
        return pid, pack(("started", key, pid, started_at, started_mono))

    def wait(self, key: tuple, pid: int) -> bytes:
        _, status, usage = os.wait4(pid, 0)
        with self.cond:
            self.current = None  # reaped: its pid may be anyone's now
        return pack(
            ("ended", key, pid, status, usage.ru_maxrss, usage.ru_utime, usage.ru_stime, time.monotonic())
        )

    def crash(self) -> None:
        import traceback

        with contextlib.suppress(OSError):
            write_all(self.events_fd, pack(("crashed", traceback.format_exc()[-3000:])))


def main(argv: list[str]) -> None:
    """argv: the command pipe's fd, the events pipe's fd, the pid file's fd (-1: none), the CPU
    to pin to (-1: none)."""
    for number in IGNORED:
        signal.signal(number, signal.SIG_IGN)
    commands_fd, events_fd, pids_fd, cpu = (int(word) for word in argv)
    slot = Slot(commands_fd, events_fd, pids_fd, None if cpu < 0 else cpu)
    try:
        slot.serve()
    except BaseException:
        slot.crash()
        slot.leave()


if __name__ == "__main__":
    main(sys.argv[1:])
