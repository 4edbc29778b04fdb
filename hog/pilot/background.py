"""The hog's database thread: its loop hands over one job at a time and never waits on sqlite.

A round with the database (results, heartbeat, claim) waits its turn for the queue's lock and then
commits, which takes milliseconds even when nobody else writes. Done on the loop, that time
leaves cores idle between tasks of a few milliseconds; done here, the loop keeps starting tasks
from what it claimed ahead. flock, apsw and sqlite release the GIL while they wait.
"""

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

Outcome = tuple[Any, BaseException | None]  # a job's return value, or the exception it raised


class DatabaseThread:
    """Runs one job at a time on a daemon thread; writes a NUL byte to `wake_fd` when one ends.

    The byte goes through the loop's signal wakeup pipe, where 0 is no signal's number.
    """

    def __init__(self, wake_fd: int) -> None:
        self._wake_fd = wake_fd
        self._cond = threading.Condition()
        self._job: Callable[[], Any] | None = None
        self._outcome: Outcome | None = None
        self._closed = False
        self.given_at: float | None = None  # monotonic time the job in hand was given; None: idle
        self._thread = threading.Thread(target=self._work, name="database", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self.given_at is not None

    def give(self, job: Callable[[], Any]) -> None:
        with self._cond:
            if self.given_at is not None:
                raise RuntimeError("the database thread already has a job")
            self._job = job
            self.given_at = time.monotonic()
            self._cond.notify_all()

    def collect(self) -> Outcome | None:
        """The outcome of the job given last, once it has ended; None while it runs or if none."""
        with self._cond:
            outcome, self._outcome = self._outcome, None
            if outcome is not None:
                self.given_at = None
            return outcome

    def wait(self, timeout_s: float) -> Outcome | None:
        """Wait up to `timeout_s` for the job in hand to end; its outcome, or None."""
        with self._cond:
            self._cond.wait_for(lambda: self._outcome is not None, timeout_s)
        return self.collect()

    def close(self) -> bool:
        """Stop the thread once its job (if any) ends; True once it has ended. A thread stuck
        waiting for the lock is left behind, as a daemon, to die with the process."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return not self._thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closed)
                if self._job is None:
                    return
                job, self._job = self._job, None
            try:
                outcome: Outcome = (job(), None)
            except BaseException as error:  # handed to the loop, which decides
                outcome = (None, error)
            with self._cond:
                self._outcome = outcome
                self._cond.notify_all()
            with contextlib.suppress(OSError):  # a full pipe already wakes the loop
                os.write(self._wake_fd, b"\0")
