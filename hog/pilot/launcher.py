"""Starting tasks and waiting for them: one slot process per core slot (slot.py).

Each slot process is pinned once to its CPU, starts the tasks sent to it with posix_spawn (the
child inherits its CPU: nothing moves) and waits for them. The hog sends each a task ahead of
the one it runs, so a short task's successor starts the moment it ends: in another interpreter,
it does not wait for the hog's loop or database thread, nor they for it. The loop keeps all the
bookkeeping (results, limits, cancels, the database) and learns of starts and ends through
events read from the slots' pipes (`fds`, for its select).
"""

import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from hog.pilot.procs import Exited, OutputFiles, exited_from
from hog.pilot.slot import pack, unpack, write_all

# Tasks a slot process may hold: the one it runs and those it starts next, refilled when down
# to half, several per write (measured: depth 2, 4 and 6 gave 0.83x, 0.87x and 0.95x xargs -P 2
# on 5,000 x `true`). A long task does not hold up those behind it: see _rebalance.
SLOT_DEPTH = 6

# The folder that holds the hog package: hog/pilot/launcher.py is three levels below it.
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOT = f"import sys; sys.path.insert(0, {_ROOT!r}); from hog.pilot.slot import main; main(sys.argv[1:])"


@dataclass(slots=True)
class Launch:
    """A task ready to start: everything its spawn needs, made by the loop, and how it started,
    filled in from its slot's reports (the pid last: once set, the rest is)."""

    key: tuple[int, int]  # (task id, attempt)
    what: list[str] | str  # an argv, or a shell command
    cwd: str
    env: dict[str, str]  # gets HOG_CPUS when its slots are known
    outputs: tuple[str, str]
    cores: int
    latest_start: float | None  # epoch after which it must not start (the hog's walltime)
    slots: tuple[int, ...] = ()
    started_at: float = 0.0
    started_mono: float = 0.0
    pid: int | None = None


class Started(NamedTuple):
    key: tuple[int, int]


class Ended(NamedTuple):
    key: tuple[int, int]
    exited: Exited
    ended_mono: float


class NotStarted(NamedTuple):
    key: tuple[int, int]
    error: OSError | None  # None: withdrawn, or too late to start before the walltime


class Crashed(NamedTuple):
    error: BaseException  # a bug in a slot process, or one that died: the loop raises it


Event = Started | Ended | NotStarted | Crashed


class _Slot:
    """The hog's side of one slot process."""

    __slots__ = ("process", "commands_fd", "events_fd", "buffer", "sent", "running", "held_by", "crashed")

    def __init__(self, process: subprocess.Popen, commands_fd: int, events_fd: int) -> None:
        self.process = process
        self.commands_fd = commands_fd
        self.events_fd = events_fd
        self.buffer = bytearray()
        self.sent: deque[tuple[int, int]] = deque()  # sent to it, not started yet
        self.running: tuple[int, int] | None = None
        self.held_by: tuple[int, int] | None = None  # lent to a task of several cores
        self.crashed = False  # said so: its exit needs no second report

    @property
    def load(self) -> int:
        return len(self.sent) + (self.running is not None)

    @property
    def refillable(self) -> bool:
        return self.load <= SLOT_DEPTH // 2 and self.held_by is None and self.events_fd >= 0

    @property
    def idle(self) -> bool:
        """Alive, with nothing to run, and not lent."""
        return not self.load and self.held_by is None and self.events_fd >= 0

    def send(self, message: tuple) -> None:
        self.write(pack(message))

    def write(self, data: bytes) -> None:
        # A slot that died is reported by the end of its events pipe, read by the loop next.
        with contextlib.suppress(BrokenPipeError):
            write_all(self.commands_fd, data)


class Launcher:
    """The slot processes, the tasks queued for any slot, and the events for the loop.

    A task of one core may be queued ahead (`queue`): it goes to the slot with the least to do,
    or waits here until a slot has room; a slot left with nothing to do takes one sent ahead to
    a slot whose task runs on. A task of several cores starts only on slots that are all idle
    now (`start_on_idle`). Taking back a task (`withdraw`) is immediate while it waits here;
    once sent to a slot, the slot says whether it started it (Started) or not (NotStarted).
    """

    def __init__(
        self, cpu_ids: list[int] | None, labels: list[str], outputs: OutputFiles, pids_fd: int, wake_fd: int
    ) -> None:
        self._cpu_ids = cpu_ids
        self._labels = labels
        self._outputs = outputs
        self._wake_fd = wake_fd  # woken (a NUL byte) when an event arises here, not in a slot
        self._queued: deque[Launch] = deque()
        self._launches: dict[tuple[int, int], Launch] = {}  # sent to a slot, not ended
        self._withdrawn: set[tuple[int, int]] = set()  # asked back from a slot for the loop
        self._moving: set[tuple[int, int]] = set()  # asked back from a slot to give to another
        self._events: list[Event] = []
        self._slots = [self._start_slot(slot, pids_fd) for slot in range(len(labels))]

    def _start_slot(self, slot: int, pids_fd: int) -> _Slot:
        commands_read, commands_write = os.pipe2(os.O_CLOEXEC)
        events_read, events_write = os.pipe2(os.O_CLOEXEC)
        cpu = self._cpu_ids[slot] if self._cpu_ids is not None else -1
        inherited = (commands_read, events_write) + ((pids_fd,) if pids_fd >= 0 else ())
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _BOOT,
                    *map(str, (commands_read, events_write, pids_fd, cpu)),
                ],
                stdin=subprocess.DEVNULL,
                pass_fds=inherited,
            )
        finally:
            os.close(commands_read)
            os.close(events_write)
        os.set_blocking(events_read, False)
        return _Slot(process, commands_write, events_read)

    @property
    def fds(self) -> list[int]:
        """The pipes the slots report on: the loop wakes when one is readable."""
        return [slot.events_fd for slot in self._slots if slot.events_fd >= 0]

    # -- the loop's side ---------------------------------------------------------------------

    def queue(self, launch: Launch) -> None:
        """Start a one-core task on the first slot that is (or becomes) free."""
        self._queued.append(launch)
        self._dispatch()

    @property
    def queued(self) -> int:
        """Tasks queued ahead that have not started (here, or sent to a slot)."""
        return len(self._queued) + sum(len(slot.sent) for slot in self._slots)

    def start_on_idle(self, launch: Launch) -> bool:
        """Start a task on `launch.cores` slots that are idle now; False if there are not enough."""
        idle = [number for number, slot in enumerate(self._slots) if slot.idle]
        if len(idle) - len(self._queued) < launch.cores:
            return False
        slots = tuple(idle[: launch.cores])
        for number in slots[1:]:
            self._slots[number].held_by = launch.key
        self._send(slots, launch)
        return True

    def withdraw(self, key: tuple[int, int]) -> bool:
        """Take back a task queued ahead: True if done; False if it was sent to a slot, which
        then reports it Started (too late) or NotStarted (taken back)."""
        for launch in self._queued:
            if launch.key == key:
                self._queued.remove(launch)
                return True
        self._ask_back(key, self._withdrawn)
        return False

    def withdraw_all(self) -> list[Launch]:
        """Take back every task queued ahead: those waiting here are returned; those sent to a
        slot are asked back (reported as for `withdraw`)."""
        taken = list(self._queued)
        self._queued.clear()
        for slot in self._slots:
            for key in slot.sent:
                self._recall(slot, key, self._withdrawn)
        return taken

    def events(self) -> list[Event]:
        for number, slot in enumerate(self._slots):
            if slot.events_fd >= 0:
                self._read(number, slot)
        self._dispatch()
        self._rebalance()
        events, self._events = self._events, []
        return events

    def close(self) -> bool:
        """End the slot processes (closing their command pipes ends them, and any task one still
        runs); True once all have exited."""
        self._queued.clear()
        for slot in self._slots:
            with contextlib.suppress(OSError):
                os.close(slot.commands_fd)
        deadline = time.monotonic() + 5.0
        ended = True
        for slot in self._slots:
            try:
                slot.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                slot.process.kill()
                ended = False
            if slot.events_fd >= 0:
                os.close(slot.events_fd)
                slot.events_fd = -1
        return ended

    # -- sending and hearing -----------------------------------------------------------------

    def _dispatch(self) -> None:
        """Send queued tasks to slots with room, evenly; each slot's share in one write. A slot
        is refilled once it is down to half its depth, so that it reads several at a time."""
        if not self._queued:
            return
        refill = [number for number, slot in enumerate(self._slots) if slot.refillable]
        batches: dict[int, list[bytes]] = {}
        for level in range(SLOT_DEPTH):
            for number in refill:
                if self._queued and self._slots[number].load <= level:
                    message = self._prepare((number,), self._queued.popleft())
                    if message is not None:
                        batches.setdefault(number, []).append(message)
        for number, messages in batches.items():
            self._slots[number].write(b"".join(messages))

    def _send(self, slots: tuple[int, ...], launch: Launch) -> None:
        message = self._prepare(slots, launch)
        if message is not None:
            self._slots[slots[0]].write(message)

    def _prepare(self, slots: tuple[int, ...], launch: Launch) -> bytes | None:
        """The message that sends a task to the first of its slots, now counted as sent there;
        None if its output files could not be made (reported as NotStarted)."""
        try:
            self._outputs.wait(launch.key)
        except OSError as error:
            for number in slots[1:]:
                self._slots[number].held_by = None
            self._post(NotStarted(launch.key, error))
            return None
        launch.slots = slots
        launch.env["HOG_CPUS"] = ",".join(self._labels[number] for number in slots)
        cpus = None
        if len(slots) > 1 and self._cpu_ids is not None:
            cpus = tuple(self._cpu_ids[number] for number in slots)
        self._slots[slots[0]].sent.append(launch.key)
        self._launches[launch.key] = launch
        fresh = self._outputs.fresh(launch.key, launch.outputs)
        task = (launch.key, launch.what, launch.cwd, launch.env, launch.outputs, fresh, launch.latest_start)
        return pack(("run", *task, cpus))

    def _ask_back(self, key: tuple[int, int], why: set[tuple[int, int]]) -> None:
        for slot in self._slots:
            if key in slot.sent:
                self._recall(slot, key, why)
                return

    def _recall(self, slot: _Slot, key: tuple[int, int], why: set[tuple[int, int]]) -> None:
        """Ask a slot for a task sent to it (once), noting why: for the loop, or to move it."""
        if key not in self._withdrawn and key not in self._moving:
            slot.send(("withdraw", key))
        why.add(key)

    def _rebalance(self) -> None:
        """A slot with nothing to do takes a task sent ahead to a slot whose task runs on (a
        long task must not hold up the one queued behind it while a core idles)."""
        if self._queued:
            return
        idle = sum(1 for slot in self._slots if slot.idle)
        for slot in self._slots:
            if idle <= len(self._moving):
                return
            if slot.running is not None:
                for key in reversed(slot.sent):
                    if key not in self._moving and key not in self._withdrawn:
                        self._recall(slot, key, self._moving)
                        break

    def _read(self, number: int, slot: _Slot) -> None:
        while True:
            try:
                chunk = os.read(slot.events_fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                break
            slot.buffer += chunk
            for message in unpack(slot.buffer):
                self._heard(slot, message)
        os.close(slot.events_fd)
        slot.events_fd = -1
        if not slot.crashed:
            self._events.append(Crashed(RuntimeError(self._death(number, slot))))

    def _heard(self, slot: _Slot, message: tuple) -> None:
        kind = message[0]
        if kind == "started":
            _, key, pid, started_at, started_mono = message
            slot.sent.remove(key)
            slot.running = key
            self._moving.discard(key)
            self._withdrawn.discard(key)
            launch = self._launches[key]
            launch.started_at, launch.started_mono, launch.pid = started_at, started_mono, pid
            self._events.append(Started(key))
        elif kind == "ended":
            _, key, pid, status, max_rss, user, system, ended_mono = message
            slot.running = None
            self._release(self._launches.pop(key))
            self._events.append(Ended(key, exited_from(pid, status, max_rss, user, system), ended_mono))
        elif kind == "not_started":
            _, key, failure = message
            slot.sent.remove(key)
            launch = self._launches.pop(key)
            self._release(launch)
            if key in self._moving and key not in self._withdrawn and failure is None:
                self._moving.discard(key)
                self._queued.appendleft(launch)  # to a slot with room, at once
                return
            self._moving.discard(key)
            self._withdrawn.discard(key)
            error = None if failure is None else OSError(*failure)
            self._events.append(NotStarted(key, error))
        else:  # crashed
            slot.crashed = True
            self._events.append(Crashed(RuntimeError(f"a slot process failed:\n{message[1]}")))

    def _release(self, launch: Launch) -> None:
        for number in launch.slots[1:]:
            self._slots[number].held_by = None

    def _death(self, number: int, slot: _Slot) -> str:
        code = slot.process.poll()
        how = "is gone" if code is None else f"exited with status {code}"
        return f"the slot process for CPU {self._labels[number]} (pid {slot.process.pid}) {how}"

    def _post(self, event: Event) -> None:
        self._events.append(event)
        with contextlib.suppress(OSError):  # a full pipe wakes the loop too
            os.write(self._wake_fd, b"\0")
