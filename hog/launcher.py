"""Starting tasks and waiting for them: one thread per core slot, pinned to that slot's CPU.

A slot's thread starts a task (the child inherits the thread's CPUs: nothing moves), waits for
it with wait4 on its pid, and as soon as it ends starts the next task the loop queued ahead, if
any. So a short task's successor does not wait for the hog's loop to wake, decide and spawn; the
loop learns of starts and ends through events and keeps all the bookkeeping (results, limits,
cancels, the database). wait4, posix_spawn and the condition waits release the GIL.
"""

import contextlib
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .procs import Exited, OutputFiles, Spawner, exited_from, record_task_process


@dataclass(slots=True)
class Launch:
    """A task ready to start: everything its spawn needs, made by the loop, and how it started,
    filled in by the slot's thread (the pid last: once set, the rest is)."""

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
    error: OSError | None  # None: too late to start before the walltime


class Crashed(NamedTuple):
    error: BaseException  # a bug on a slot thread: the loop re-raises it


Event = Started | Ended | NotStarted | Crashed


class Launcher:
    """The slot threads, the tasks queued for any slot, and the events for the loop.

    A task of one core may be queued ahead (`queue`): the first slot whose task ends starts it.
    A task of several cores starts only on slots that are all idle now (`start_on_idle`).
    Events go to `events()`; a NUL byte on `wake_fd` (the loop's signal wakeup pipe, where 0 is
    no signal's number) says there are some.
    """

    def __init__(
        self,
        cpu_ids: list[int] | None,
        labels: list[str],
        spawner: Spawner,
        outputs: OutputFiles,
        pids_fd: int,
        wake_fd: int,
    ) -> None:
        self._cpu_ids = cpu_ids
        self._labels = labels
        self._spawner = spawner
        self._outputs = outputs
        self._pids_fd = pids_fd
        self._wake_fd = wake_fd
        self._cond = threading.Condition(threading.Lock())
        self._queued: deque[Launch] = deque()
        slots = len(labels)
        self._mail: list[tuple[Launch, tuple[int, ...]] | None] = [None] * slots
        self._busy = [False] * slots  # running a task, or about to
        self._held = [False] * slots  # lent to a task of several cores on another slot
        self._lent = 0  # how many are held
        self._events: list[Event] = []
        # The loop was woken and has not taken the events since. (Waking it for every event
        # measured faster than batching: its turns stay short, and so do the slots' waits for
        # the GIL it holds.)
        self._woken = False
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, args=(slot,), name=f"slot-{slot}", daemon=True)
            for slot in range(slots)
        ]
        for thread in self._threads:
            thread.start()

    # -- the loop's side ---------------------------------------------------------------------

    def queue(self, launch: Launch) -> None:
        """Start a one-core task on the first slot that is (or becomes) free."""
        with self._cond:
            self._queued.append(launch)
            if self._lent:
                self._cond.notify_all()  # one woken at random might be a lent slot, which waits on
            else:
                self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._queued)

    def start_on_idle(self, launch: Launch) -> bool:
        """Start a task on `launch.cores` slots that are idle now; False if there are not enough."""
        with self._cond:
            idle = [
                slot
                for slot in range(len(self._busy))
                if not (self._busy[slot] or self._held[slot] or self._mail[slot])
            ]
            if len(idle) - len(self._queued) < launch.cores:
                return False
            slots = tuple(idle[: launch.cores])
            for slot in slots[1:]:
                self._held[slot] = True
            self._lent += len(slots) - 1
            self._mail[slots[0]] = (launch, slots)
            self._busy[slots[0]] = True
            self._cond.notify_all()
            return True

    def withdraw(self, key: tuple[int, int]) -> bool:
        """Take back a task queued ahead; False if a slot has taken it already."""
        with self._cond:
            for launch in self._queued:
                if launch.key == key:
                    self._queued.remove(launch)
                    return True
            return False

    def withdraw_all(self) -> list[Launch]:
        """Take back every task queued ahead."""
        with self._cond:
            taken = list(self._queued)
            self._queued.clear()
            return taken

    def events(self) -> list[Event]:
        with self._cond:
            events, self._events = self._events, []
            self._woken = False
            return events

    def close(self) -> bool:
        """Stop the threads; True once all have ended. One still waiting for a task is left
        behind, as a daemon, to die with the process."""
        with self._cond:
            self._closed = True
            self._queued.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + 1.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    # -- a slot's thread ---------------------------------------------------------------------

    def _post(self, event: Event) -> bool:
        """Called holding the condition's lock; True: wake the loop (once the lock is let go)."""
        self._events.append(event)
        if self._woken:
            return False
        self._woken = True
        return True

    def _tell(self, event: Event) -> None:
        with self._cond:
            wake = self._post(event)
        if wake:
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe wakes the loop too
            os.write(self._wake_fd, b"\0")

    def _serve(self, slot: int) -> None:
        if self._cpu_ids is not None:
            os.sched_setaffinity(0, {self._cpu_ids[slot]})
        ending: Ended | NotStarted | None = None
        slots: tuple[int, ...] = ()
        try:
            while True:
                wake = False
                with self._cond:
                    # Free first, then tell: the loop may at once want these slots.
                    if slots:
                        self._busy[slot] = False
                        if len(slots) > 1:
                            for other in slots[1:]:
                                self._held[other] = False
                            self._lent -= len(slots) - 1
                            self._cond.notify_all()
                    if ending is not None:
                        wake = self._post(ending)
                    taken = self._take(slot)
                if wake:
                    self._wake()
                if taken is None:
                    return
                launch, slots = taken
                ending = self._run(launch, slots)
        except BaseException as error:
            self._tell(Crashed(error))

    def _take(self, slot: int) -> tuple[Launch, tuple[int, ...]] | None:
        """The slot's next task, waiting for one; None once closed. Holding the lock."""
        while not self._closed:
            mail = self._mail[slot]
            if mail is not None:
                self._mail[slot] = None
                return mail
            if self._queued and not self._held[slot]:
                self._busy[slot] = True
                return self._queued.popleft(), (slot,)
            self._cond.wait()
        return None

    def _run(self, launch: Launch, slots: tuple[int, ...]) -> Ended | NotStarted:
        """Start the task and wait for it; Started is posted at once, the end returned."""
        if launch.latest_start is not None and time.time() > launch.latest_start:
            return NotStarted(launch.key, None)
        launch.env["HOG_CPUS"] = ",".join(self._labels[slot] for slot in slots)
        cpu_ids = self._cpu_ids if len(slots) > 1 else None  # a task of several cores: widen
        if cpu_ids is not None:
            os.sched_setaffinity(0, {cpu_ids[slot] for slot in slots})
        try:
            self._outputs.wait(launch.key)
            launch.started_at, launch.started_mono = time.time(), time.monotonic()
            pid = self._spawner.spawn(launch.what, launch.cwd, launch.env, launch.outputs)
        except OSError as error:
            return NotStarted(launch.key, error)
        finally:
            if cpu_ids is not None:
                os.sched_setaffinity(0, {cpu_ids[slots[0]]})
        if self._pids_fd >= 0:
            # Before anything else: a reaper must find it if the hog is killed from here on.
            record_task_process(self._pids_fd, pid)
        launch.slots = slots
        launch.pid = pid
        self._tell(Started(launch.key))
        _, status, usage = os.wait4(pid, 0)
        return Ended(launch.key, exited_from(pid, status, usage), time.monotonic())
