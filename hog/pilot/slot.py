"""A slot process: starts the tasks the hog sends it, one at a time, and waits for each.

The hog runs one per core slot (launcher.py). Its own interpreter, pinned once to the slot's CPU,
means a task that ends is followed by the next at once, without waiting for the hog's loop or
database thread to let go of their interpreter lock. It imports only the standard library, and
runs with `python -I -S` to start fast.

Messages both ways are marshalled tuples after a 4-byte length, each written whole (those to the
hog stay under PIPE_BUF, so a write is never split):

    hog -> slot:  ("run", key, what, cwd, env, outputs, fresh, latest_start, cpus)
                  ("withdraw", key)
    slot -> hog:  ("started", key, pid, started_at, started_mono)
                  ("ended", key, pid, status, max_rss_kib, cpu_user_s, cpu_system_s, ended_mono)
                  ("not_started", key, None | (errno, strerror, filename))
                  ("crashed", traceback)

`what` is an argv or a shell command; `outputs` the paths of its stdout and stderr, made by the
hog; `fresh` which of them are this attempt's alone and empty (the queue's logs): the slot opens
those of the task next in line while the task before it runs (on a shared filesystem an open is a
round trip to its server, which would otherwise sit between one task's end and the next start),
and the task's start opens and truncates the others; `cpus` the CPUs to widen to for a task of
several cores, else None; `latest_start` the epoch after which it must not start (None: any
time). A task not started (too late, withdrawn, or unable to start) is reported as not_started.
When the hog's end of the command pipe closes (it exited, or was killed), the slot kills its
task's process group and exits: nothing it starts outlives the hog.

What a task leaves behind dies with it, as in a SLURM step, however it detached: the slot is a
child subreaper, so a process whose parent ends inside the task (a `setsid` or double-forked
daemon, `nohup ... &`) becomes the slot's child. A slot runs one task at a time, so every child
other than the task's main process is that task's. When the main process ends, the slot kills
its group while its zombie still holds the group's id, then kills and reaps the children left,
and only then reports the end and starts the next task: the next task never shares its core with
the last one's leftovers. With nothing left behind this costs three system calls more.
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

PR_SET_CHILD_SUBREAPER = 36  # prctl(2), Linux 3.4 on
# How long a slot waits for a task's leftovers, once killed, to be reaped before it goes on (one
# stuck in the kernel, on a hung filesystem, is killed and reaped after a later task instead).
LEFTOVERS_WAIT_S = 2.0


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


Pair = tuple[int | None, int | None]  # the fds of a task's stdout and stderr (None: not open)


def open_fresh(outputs: tuple[str, str], fresh: tuple[bool, bool]) -> Pair:
    """The fresh files of a task, opened for its start (None where it failed: its start opens the
    file by path and reports why it cannot). Not truncated: they are empty until their task runs,
    so an open that comes late, once it runs, changes nothing."""
    return (
        _open_or_none(outputs[0]) if fresh[0] else None,
        _open_or_none(outputs[1]) if fresh[1] and outputs[1] != outputs[0] else None,
    )


def _open_or_none(path: str) -> int | None:
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return None


def close_all(fds: tuple[int | None, ...]) -> None:
    for fd in fds:
        if fd is not None:
            os.close(fd)


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

    def spawn(
        self,
        task: list[str] | str,
        cwd: str,
        env: dict[str, str],
        outputs: tuple[str, str],
        opened: Pair = (None, None),
    ) -> int:
        """Start `task` (an argv, or a shell command) with these files, made ahead by the hog,
        as its stdout and stderr (`opened`: those opened ahead; the others are opened and
        truncated as it starts); return its pid (= its process group). Raises OSError if it
        cannot start. (Opening without O_CREAT spares the child the folder's lock, which the
        hog's thread making other tasks' files holds often.)

        A shell command of plain words starts directly; if that fails (not found, not
        executable, a script without #!) or it has shell syntax, /bin/sh -c runs it or says why.
        """
        file_actions = self._file_actions(outputs, opened)
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

    def _file_actions(self, outputs: tuple[str, str], opened: Pair) -> list[tuple]:
        """stdin from /dev/null, stdout and stderr to their files (os.devnull: discarded). A file
        named for both is opened once: they share its offset, as with `> file 2>&1`."""
        actions = [(os.POSIX_SPAWN_DUP2, self.devnull, 0)]
        for fd, path, ahead in ((1, outputs[0], opened[0]), (2, outputs[1], opened[1])):
            if path == os.devnull:
                actions.append((os.POSIX_SPAWN_DUP2, self.devnull, fd))
            elif fd == 2 and path == outputs[0]:
                actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
            elif ahead is not None:
                actions.append((os.POSIX_SPAWN_DUP2, ahead, fd))
            else:
                actions.append((os.POSIX_SPAWN_OPEN, fd, path, os.O_WRONLY | os.O_TRUNC, 0))
        return actions

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
        self.opened: dict[tuple, Pair] = {}  # queued tasks' files, ahead
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
        # Orphans would go to init once the slot exits. Not reaped here: the main thread may be
        # reaping; what is left as a zombie goes to init, which reaps it.
        deadline = time.monotonic() + LEFTOVERS_WAIT_S
        while kill_children() and time.monotonic() < deadline:
            time.sleep(0.005)
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
                            next_up = len(self.queued) == 1 and self.current is not None
                        if next_up:  # it starts when the running task ends: its files now
                            self.open_ahead(message)
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
            opened = self.opened.pop(key, (None, None))
        close_all(opened)
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
            if pid is not None:
                with self.cond:
                    following = self.queued[0] if self.queued else None
                if following is not None:
                    self.open_ahead(following)
            ended = self.wait(message[1], pid) if pid is not None else b""

    def open_ahead(self, message: tuple) -> None:
        """Open the fresh files of the task next in line while the one before runs: by the main
        thread as a task starts, or by the commands thread for one that comes in while one runs."""
        key, outputs, fresh = message[1], message[5], message[6]
        if key in self.opened or fresh == (False, False):
            return
        opened = open_fresh(outputs, fresh)
        with self.cond:
            # Not withdrawn or started meanwhile, nor made by the other thread at the same time.
            if self.queued and self.queued[0] is message and key not in self.opened:
                self.opened[key] = opened
                return
        close_all(opened)

    def start(self, message: tuple) -> tuple[int | None, bytes]:
        """The task's pid (None if it did not start) and the report of its start."""
        _, key, what, cwd, env, outputs, _, latest_start, cpus = message
        with self.cond:
            opened = self.opened.pop(key, (None, None))
        if latest_start is not None and time.time() > latest_start:
            close_all(opened)
            return None, pack(("not_started", key, None))
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        try:
            started_at, started_mono = time.time(), time.monotonic()
            with self.cond:  # not while the hog's end closes: its task would outlive it
                if self.gone:
                    os._exit(0)
                self.current = pid = self.spawner.spawn(what, cwd, env, outputs, opened)
        except OSError as error:
            filename = error.filename if isinstance(error.filename, str) else None
            failure = (error.errno, str(error.strerror or error)[:500], filename)
            return None, pack(("not_started", key, failure))
        finally:
            close_all(opened)  # the task has its own copies
            if cpus is not None and self.cpu is not None:
                os.sched_setaffinity(0, {self.cpu})
        if self.pids_fd >= 0:
            # Before anything else: a reaper must find it if the hog is killed from here on.
            os.write(self.pids_fd, b"%d\n" % pid)
        return pid, pack(("started", key, pid, started_at, started_mono))

    def wait(self, key: tuple, pid: int) -> bytes:
        """Wait for the task's main process, reaping the task's orphans that end meanwhile; then
        kill what it left behind, and return the report of its end."""
        while (ended := os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT).si_pid) != pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(ended, 0)  # an orphan came to the slot and ended: no zombie stays
        ended_mono = time.monotonic()
        # Its group, while its zombie (not reaped yet) keeps the group's id from being reused.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        with self.cond:
            self.current = None  # reaped: its pid may be anyone's now
        end_leftovers()
        return pack(("ended", key, pid, status, usage.ru_maxrss, usage.ru_utime, usage.ru_stime, ended_mono))

    def crash(self) -> None:
        import traceback

        with contextlib.suppress(OSError):
            write_all(self.events_fd, pack(("crashed", traceback.format_exc()[-3000:])))


def become_subreaper() -> None:
    """Make orphans of the slot's tasks its children (where prctl exists: Linux)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def live_children() -> list[int]:
    """The slot's children that have not ended. The kernel names a process's children only
    with CONFIG_PROC_CHILDREN, so /proc is read whole: done only when a task left some."""
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # After the command: state, then the parent's pid (fields 3 and 4 in proc(5)).
        if int(fields[1]) == me and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def kill_children() -> bool:
    """SIGKILL to the slot's live children; False if there were none."""
    children = live_children()
    for child in children:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
    return bool(children)


def end_leftovers() -> None:
    """After a task's main process is reaped: kill and reap the slot's remaining children, all of
    them that task's (leftovers of a killed one come to the slot in turn, and are killed next)."""
    deadline = None
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass  # reaped one that had ended
        except ChildProcessError:
            return  # no child left: the common case, at the cost of this one call
        now = time.monotonic()
        if deadline is None:
            deadline = now + LEFTOVERS_WAIT_S
        elif now > deadline:
            return  # reaped by a later wait, killed again after a later task
        kill_children()
        time.sleep(0.001)


def main(argv: list[str]) -> None:
    """argv: the command pipe's fd, the events pipe's fd, the pid file's fd (-1: none), the CPU
    to pin to (-1: none)."""
    for number in IGNORED:
        signal.signal(number, signal.SIG_IGN)
    commands_fd, events_fd, pids_fd, cpu = (int(word) for word in argv)
    # Passed in inheritable; the tasks must not get them: a task's leftover process holding the
    # events pipe would hide this slot's death from the hog, and a task could write the pid file.
    for fd in (commands_fd, events_fd, pids_fd):
        if fd >= 0:
            os.set_inheritable(fd, False)
    become_subreaper()
    slot = Slot(commands_fd, events_fd, pids_fd, None if cpu < 0 else cpu)
    try:
        slot.serve()
    except BaseException:
        slot.crash()
        slot.leave()


if __name__ == "__main__":
    main(sys.argv[1:])
