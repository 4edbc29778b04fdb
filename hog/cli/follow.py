"""Following one task from where it was submitted: its output as it comes, its end, its status.

Shared by `slurm-hog run` and `slurm-hog-shell` (make's SHELL). No click here: a build starts one
of these clients per recipe, so each must start fast and cost the filesystem little. A client
waiting for its task reads:

- the queue's doorbell (store/doorbell.py), one pread of 544 bytes, every 10 ms (more on a slow
  filesystem: doorbell.Listener);
- its task's row, one indexed SELECT under sqlite's shared lock (never the writers' flock), when
  the doorbell's ENDED counter moved and its ring of ended ids may hold the task's (at most every
  MIN_READ_S, or READ_COST_SHARE times what a read took where reads are slow) and at least every
  READ_EVERY_S;
- its output files, a read each that finds nothing new, every OUTPUT_EVERY_S while it runs;
- whether a hog or a monitor is alive, every ALIVE_EVERY_S while its task waits.

Signals only note themselves; the loop cancels the task and waits until it is gone, then dies
of the same signal, as a shell does, so that make reports an interrupted recipe. A second signal
stops waiting at once.
"""

import os
import sys
import time
from collections.abc import Callable

from hog.pilot.outputs import output_path
from hog.store import doorbell, states
from hog.store.db import Database
from hog.store.following import Progress, progress
from hog.store.submitting import SubmitOptions
from hog.timeutil import format_duration

try:  # CPython's signal functions without the module's enums: enum is a sixth of a client's start
    import _signal as signal
except ImportError:
    import signal

MIN_READ_S = 0.02
READ_COST_SHARE = 20  # a client's row reads take at most 5% of its time
READ_EVERY_S = 1.0
OUTPUT_EVERY_S = 0.5
ALIVE_EVERY_S = 2.0
DEFAULT_MAX_WAIT_S = 60.0
EXIT_GAVE_UP = 3  # as `wait --max-wait`
CATCHES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def attempt_outputs(db_path: str, options: SubmitOptions, task_id: int) -> Callable[[int], tuple[str, str]]:
    """The stdout and stderr files of each attempt of a task submitted with `options`."""

    def outputs(attempt: int) -> tuple[str, str]:
        return (
            output_path(db_path, options.stdout_pattern, options.cwd, task_id, attempt, options.name, "out"),
            output_path(db_path, options.stderr_pattern, options.cwd, task_id, attempt, options.name, "err"),
        )

    return outputs


def flush_output() -> None:
    """What is left in stdout's and stderr's buffers, out now; a closed stream is left alone."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib is kept off slurm-hog-shell's start)
            stream.flush()
        except (OSError, ValueError):
            pass


class Signals:
    """Notes SIGINT, SIGTERM and SIGHUP for the loop, from as early as possible."""

    def __init__(self) -> None:
        self.received: list[int] = []
        for number in CATCHES:
            signal.signal(number, self._note)

    def _note(self, number: int, frame: object) -> None:
        self.received.append(number)

    def die(self, number: int) -> int:
        """End this process by `number`, as the shell's child would have; 128+N if it survives."""
        flush_output()
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        return 128 + number


class _Sink:
    """A binary stream of ours (stdout, stderr); a closed pipe only ends what goes to it."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.open = True

    def write(self, data: bytes) -> None:
        if not self.open:
            return
        try:
            self.stream.write(data)
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            self.open = False


class _Tail:
    """One output file of one attempt, copied to a sink as it grows."""

    def __init__(self, path: str, sink: _Sink) -> None:
        self.path = path
        self.sink = sink
        self.fd: int | None = None
        self.offset = 0

    def pump(self, reopen: bool = False) -> None:
        # Opened again at the end: on NFS, what a process on another node wrote and closed is
        # seen by an open after its close (close-to-open consistency).
        if reopen:
            self.close()
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return  # not made yet
        try:
            if os.fstat(self.fd).st_size < self.offset:
                self.offset = 0  # a file named without {attempt}: the new attempt truncated it
            while chunk := os.pread(self.fd, 1 << 16, self.offset):
                self.offset += len(chunk)
                self.sink.write(chunk)
        except OSError:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Follower:
    """Follows one submitted task until it has ended; `follow()` gives the exit status."""

    def __init__(
        self,
        db: Database,
        task_id: int,
        outputs: Callable[[int], tuple[str, str]],
        prog: str,
        max_wait_s: float,
        signals: Signals,
    ) -> None:
        self.db = db
        self.task_id = task_id
        self.outputs = outputs  # the stdout and stderr files of an attempt
        self.prog = prog
        self.max_wait_s = max_wait_s
        self.signals = signals
        self.sinks = (_Sink(sys.stdout.buffer), _Sink(sys.stderr.buffer))
        self.tails: list[_Tail] = []
        self.attempt = 0
        self.cancelled_by: int | None = None  # the signal that made us cancel the task
        self.bell = doorbell.Listener(db.files.doorbell)
        self.heard: tuple[int, ...] | None = None  # the doorbell's counters at the last look
        self.rang = False  # a task ended since the task's row was last read
        self.last_read = float("-inf")  # when the task's row was last read (monotonic)
        self.read_gap_s = MIN_READ_S  # between reads for rings, from what a read costs
        self.next_output = self.next_alive = 0.0
        self.unserved_since: float | None = None  # since when no hog and no monitor is alive

    def say(self, text: str) -> None:
        self.sinks[1].write(f"{self.prog}: {text}\n".encode(errors="replace"))

    def follow(self) -> int:
        self.heard = self.bell.read()
        self.bell.may_have_ended(self.task_id)  # the ends so far: only those after are news
        self.next_output = time.monotonic()
        self.next_alive = self.next_output + 1.0  # a hog or monitor starting with the build has a moment
        try:
            while True:
                status = self._turn(time.monotonic())
                if status is not None:
                    return status
                time.sleep(self.bell.interval_s)
        finally:
            self.bell.close()
            for tail in self.tails:
                tail.close()

    def _turn(self, now: float) -> int | None:
        """One look: signals, the doorbell, the task's row when due, its output; its exit status
        once it has ended."""
        received = self.signals.received
        if received and self.cancelled_by is None:
            self.cancelled_by = received[0]
            self._cancel()
            self.last_read = float("-inf")
        elif len(received) > 1:
            self.say(f"task {self.task_id} was asked to stop; not waiting for it to end")
            return self.signals.die(received[-1])
        values = self.bell.read()
        if (
            values is not None
            and (self.heard is None or values[doorbell.ENDED] != self.heard[doorbell.ENDED])
            and self.bell.may_have_ended(self.task_id)  # not when the ring shows others' ends only
        ):
            self.rang = True  # kept until the next read, which may have to wait for MIN_READ_S
        self.heard = values or self.heard
        if (self.rang and now - self.last_read >= self.read_gap_s) or now - self.last_read >= READ_EVERY_S:
            self.last_read = now
            self.rang = False
            found = progress(self.db, self.task_id)
            self.read_gap_s = max(MIN_READ_S, (time.monotonic() - now) * READ_COST_SHARE)
            if found is None:
                self.say(f"task {self.task_id} is gone from the queue (cleaned up?): its end is not known")
                return 1
            self._follow_attempt(found)
            if found.state in states.ENDED_STATES:
                self._pump(reopen=True)
                return self._status(found)
        if self.tails and now >= self.next_output:
            self._pump()
            self.next_output = now + OUTPUT_EVERY_S
        if self.attempt == 0 and self.cancelled_by is None and now >= self.next_alive:
            self.next_alive = now + ALIVE_EVERY_S
            return self._check_served(now)
        return None

    # -- attempts and output -----------------------------------------------------------------

    def _follow_attempt(self, found: Progress) -> None:
        """Copy the output of the attempt the task is on; attempts that ended before a look saw
        them (a failure retried at once) are copied whole."""
        if found.attempt <= self.attempt:
            return
        self._finish_tails()
        for attempt in range(self.attempt + 1, found.attempt + 1):
            if attempt > 1:
                self.say(f"task {self.task_id} runs again (attempt {attempt})")
            self.attempt = attempt
            paths = self.outputs(attempt)
            self.tails = [
                _Tail(path, sink) for path, sink in zip(paths, self.sinks, strict=True) if path != os.devnull
            ]
            if attempt < found.attempt or found.state not in (states.RUNNING, *states.ENDED_STATES):
                self._finish_tails()  # ended, and the task waits for its next attempt

    def _finish_tails(self) -> None:
        self._pump(reopen=True)
        for tail in self.tails:
            tail.close()
        self.tails = []

    def _pump(self, reopen: bool = False) -> None:
        for tail in self.tails:
            tail.pump(reopen)

    # -- how it ended ------------------------------------------------------------------------

    def _status(self, found: Progress) -> int:
        """The exit status a shell would give for the task's end (128+N for signal N)."""
        if self.cancelled_by is not None and found.state == states.CANCELLED:
            from signal import Signals

            self.say(f"task {self.task_id} cancelled ({Signals(self.cancelled_by).name})")
            return self.signals.die(self.cancelled_by)
        if found.state == states.DONE:
            return 0
        if found.reason == states.REASON_START_FAILED:
            self.say(f"task {self.task_id} {found.stderr_tail or 'could not start'}")
            return found.exit_code or 127
        if found.state == states.TIMEOUT:
            self.say(f"task {self.task_id} passed its time limit (--time) and was killed")
        elif found.state == states.CANCELLED:
            self.say(f"task {self.task_id} was cancelled")
            return 128 + (found.signal or signal.SIGTERM)
        if found.signal is not None:
            return 128 + found.signal
        if found.exit_code is not None:
            return found.exit_code
        self.say(f"task {self.task_id} {found.state} ({found.reason or 'no exit status'})")
        return 1

    def _cancel(self) -> None:
        from hog.store import queue

        queue.cancel(self.db, [self.task_id])

    def _check_served(self, now: float) -> int | None:
        """While the task waits: say once that nothing alive can run it, and give up after
        --max-wait of that (EXIT_GAVE_UP)."""
        from hog.store import outlook

        if outlook.hogs_alive(self.db) or outlook.monitor_alive(self.db):
            self.unserved_since = None
            return None
        if self.unserved_since is None:
            self.unserved_since = now
            self.say(
                f"no hog runs and no monitor serves {self.db.path}: task {self.task_id} waits for one "
                "(`slurm-hog monitor --daemon`, or `slurm-hog hog` in an allocation); giving up after "
                f"{format_duration(self.max_wait_s)} (--max-wait)"
            )
        if now - self.unserved_since < self.max_wait_s:
            return None
        return self._give_up()

    def _give_up(self) -> int | None:
        """--max-wait passed with nothing to run the task: cancel it; None if a hog took it
        meanwhile (then it is followed to its end)."""
        from hog.store import queue

        outcome = queue.cancel(self.db, [self.task_id])
        if not outcome.cancelled:
            return None
        self.say(
            f"gave up after {format_duration(self.max_wait_s)} (--max-wait) with no hog and no monitor: "
            f"task {self.task_id} cancelled"
        )
        return EXIT_GAVE_UP
