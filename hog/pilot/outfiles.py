"""A slot process's output files: made ahead of their tasks' start, handed over open (slot.py).

On a shared filesystem every create, open, truncate and close of a file is a round trip to its
server. Measured on scripts/slowfs.py (20 ms fsync, 1 ms metadata), a hog's thread creating the
files of the tasks it claimed and each child opening and truncating them again by path as it
started left 25-35 ms between one task's end and the next start. Here each slot makes the files
of the tasks queued on it while it runs others, and hands its child the descriptors: the launch
path opens nothing.

Descriptors kept open in the slot would be copied into every child it starts, and closing them
at its exec is a round trip each (a FUSE flush: measured, 8 a task). So the threads that make
files each have a descriptor table of their own (unshare(CLONE_FILES)) and send a task's two
descriptors to the slot's main thread over a socket pair only when it is about to start that
task: the child inherits its own files and nothing else. Where a thread cannot have its own
table, files are closed once made and the child opens them by path as before.
"""

import contextlib
import os
import threading
from collections import deque

# Threads that make a slot's output files, started as tasks with files arrive: a create on a
# shared filesystem is several round trips (a lookup, the create, its attributes, the folder's:
# ~4 per file on the slow mount), mostly waiting, so that one thread made files for ~20 tasks/s.
OUTPUT_THREADS = 4
CLONE_FILES = 0x400  # unshare(2)


class Outputs:
    """Makes the output files of the tasks queued on one slot, on threads of its own.

    A file is created (O_EXCL, with its mode whatever the umask) and kept open until its task
    starts; a slot holds at most its depth of tasks, two files each. A file that exists already
    (a named -o file of an earlier attempt, or one that tasks share) is not touched: the child
    opens and truncates it as it starts, so a task that does not start destroys no earlier
    output. What was made for a task that does not start (withdrawn, too late) is removed
    (`drop`); what was made for one that failed to start stays, to say so. Folders are made once
    per slot.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.todo: deque[tuple] = deque()  # (key, outputs), in the order they start
        self.busy: set[tuple] = set()  # being made now
        # key -> (which of stdout/stderr a thread holds open for it, paths created, error)
        self.made: dict[tuple, tuple[tuple[bool, bool], list[str], OSError | None]] = {}
        self.wanted: tuple | None = None  # whose files the main thread waits to receive
        self.released: set[tuple] = set()  # made for a task that will not start: close them
        self.folders: set[str] = set()
        self.idle = 0  # threads waiting for work
        self.sockets: tuple | None = None  # (the main thread's end, the makers' end)
        # The first thread starts with the slot: its imports and the socket pair are ready
        # before the first task comes (the others start when tasks wait for files).
        self.threads = 1
        threading.Thread(target=self.work, name="outputs", daemon=True).start()

    def ask(self, key: tuple, outputs: tuple) -> None:
        """Make a task's files: `outputs` is (stdout, stderr, their modes, the folders' mode)."""
        if outputs[0] == outputs[1] == os.devnull:
            return  # nothing to make
        with self.cond:
            self.todo.append((key, outputs))
            if self.idle:
                self.cond.notify_all()
                return
            if self.threads >= OUTPUT_THREADS or self.sockets is None:
                return  # the first thread is still starting: it takes this one
            self.threads += 1
        threading.Thread(target=self.work, name="outputs", daemon=True).start()

    def take(self, key: tuple) -> list[int | None]:
        """The task's files, open (None: none made, the child opens it by path as it starts);
        raises the OSError that making them met."""
        with self.cond:
            while not self._known(key):
                self.cond.wait()
            if key not in self.made:
                return [None, None]  # nothing asked: /dev/null both
            held, _, error = self.made.pop(key)
            if error is not None:
                raise error
            if not any(held):
                return [None, None]
            self.wanted = key
            self.cond.notify_all()
        import socket

        assert self.sockets is not None
        size = socket.CMSG_LEN(2 * 4)
        _, ancillary, _, _ = self.sockets[0].recvmsg(1, size, socket.MSG_CMSG_CLOEXEC)
        received = [fd for level, kind, data in ancillary for fd in _fds(level, kind, data)]
        return [received.pop(0) if is_held else None for is_held in held]

    def drop(self, key: tuple) -> None:
        """A task that will not start here: close and remove what was made for it."""
        with self.cond:
            for item in self.todo:
                if item[0] == key:
                    self.todo.remove(item)
                    return
            while key in self.busy:
                self.cond.wait()
            held, created, _ = self.made.pop(key, ((False, False), [], None))
            if any(held):
                self.released.add(key)
                self.cond.notify_all()
        for path in created:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def drop_all(self) -> None:
        """The slot leaves: remove what was made for tasks that will never start (not waiting
        for those being made, which a hung filesystem may hold)."""
        with self.cond:
            self.todo.clear()
            keys = list(self.made)
        for key in keys:
            self.drop(key)

    def _known(self, key: tuple) -> bool:
        """Made, or never asked for (neither waiting nor being made)."""
        return key in self.made or (key not in self.busy and all(item[0] != key for item in self.todo))

    # -- the threads that make files -----------------------------------------------------

    def work(self) -> None:
        import socket

        from hog.store.paths import create_file, make_private_dirs  # off the slot's main thread

        with self.cond:
            if self.sockets is None:
                # Before any thread has a table of its own: both ends are in every copy.
                self.sockets = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        own_table = _unshare_files()
        while True:
            with self.cond:
                while not self.todo:
                    self.idle += 1
                    self.cond.wait()
                    self.idle -= 1
                key, outputs = self.todo.popleft()
                self.busy.add(key)
            fds: list[int | None] = [None, None]
            created: list[str] = []
            error = None
            try:
                for number in (0, 1):
                    path = outputs[number]
                    if path == os.devnull or (number == 1 and path == outputs[0]):
                        continue
                    folder = os.path.dirname(path)
                    if folder not in self.folders:
                        make_private_dirs(folder, outputs[4])
                        self.folders.add(folder)
                    try:
                        fds[number] = create_file(path, os.O_WRONLY | os.O_EXCL, outputs[2 + number])
                    except FileExistsError:
                        continue  # truncated by the child as it starts, not before
                    created.append(path)
            except OSError as failed:
                error = failed
            if error is not None or not own_table:
                close_all(fds)
                fds = [None, None]
            held = (fds[0] is not None, fds[1] is not None)
            with self.cond:
                self.made[key] = (held, created, error)
                self.busy.discard(key)
                self.cond.notify_all()
                if not any(held):
                    continue
                # Held until the main thread starts the task, or it will not start.
                while self.wanted != key and key not in self.released:
                    self.cond.wait()
                send = self.wanted == key
                if send:
                    self.wanted = None
                self.released.discard(key)
            if send:
                self._send([fd for fd in fds if fd is not None])
            close_all(fds)

    def _send(self, fds: list[int]) -> None:
        import socket

        assert self.sockets is not None
        socket.send_fds(self.sockets[1], [b"f"], fds)


def _fds(level: int, kind: int, data: bytes) -> list[int]:
    import array
    import socket

    if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
        return []
    fds = array.array("i")
    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _unshare_files() -> bool:
    """Give the calling thread a descriptor table of its own; False where it cannot be."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).unshare(CLONE_FILES) == 0
    except (OSError, AttributeError):
        return False


def close_all(fds: list[int | None]) -> None:
    for fd in fds:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
