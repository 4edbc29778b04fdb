"""The hog: claims tasks that fit its node, runs them, reports, and leaves in time.

One event loop: signal handlers only note the signal (through the wakeup fd), and the loop decides
what starts, records what ended and enforces limits. Slow work is kept off it: a process per
core slot starts tasks and waits for them (launcher.py, slot.py), a thread talks to the database
in short batched transactions (background.py), one creates output files ahead (procs.OutputFiles).

The loop's parts: its tasks from claim to result (tasks.py), its rounds with the database
(rounds.py), the ledger of its free cores, GPUs and memory (ledger.py) and its walltime
(walltime.py). The loop itself keeps the hog's state: draining, stopping, given up, idle.
"""

import contextlib
import logging
import os
import select
import signal
import time

from hog.errors import HogError
from hog.pilot import slurm
from hog.pilot.background import DatabaseThread
from hog.pilot.launcher import Launcher
from hog.pilot.ledger import Ledger
from hog.pilot.options import HogOptions, shown_duration
from hog.pilot.procs import OutputFiles
from hog.pilot.resources import NodeResources, detect
from hog.pilot.rounds import IDLE_POLL_S, DatabaseRounds, LastWrite, RoundOutcome, first_claim
from hog.pilot.tasks import Tasks
from hog.pilot.usage import DRAIN, EMPTY, LOCK, STARTUP, IdleClock
from hog.pilot.walltime import Walltime
from hog.pools import DEFAULT_POOL
from hog.store import claims, states, steering
from hog.store.db import Database, open_database
from hog.store.paths import QueueFiles, make_private_dirs
from hog.timeutil import counted

log = logging.getLogger(__name__)

# The hog's exit status.
EXIT_OK = 0  # left (idle, drained, walltime, stopped) with its results written
EXIT_FAILED = 1  # could not open the queue, or its last results stayed unwritten (lock taken)
EXIT_USAGE = 2  # its options cannot work with its allocation (a --margin not shorter than it)
# It could write nothing more: the queue file was deleted or replaced under it, or it was declared
# lost or cancelled meanwhile. Its tasks are killed; their next attempts belong to other hogs.
EXIT_GIVEN_UP = 3


class Hog:
    """The loop: signals, walltime, idleness and the order of each turn; the parts do the rest."""

    def __init__(
        self,
        name: str,
        idle_timeout_s: float,
        walltime: Walltime,
        tasks: Tasks,
        rounds: DatabaseRounds,
        launcher: Launcher,
    ) -> None:
        self.name = name
        self.idle_timeout_s = idle_timeout_s
        self.walltime = walltime
        self.tasks = tasks
        self.rounds = rounds
        self.launcher = launcher  # the loop sleeps on its slots' pipes
        self.draining = False
        self.drain_reason = "drained"  # the hog's end reason once drained
        self.stopping: str | None = None  # why the hog stops now
        self.given_up = False
        self.interrupts = 0
        self.idle_since_mono: float | None = None
        self.finish_reason = "idle"

    # -- the loop ----------------------------------------------------------------------------

    def run(self, wakeup_fd: int) -> int:
        while True:
            now = time.monotonic()
            self._drain_signals(wakeup_fd)
            self.tasks.take_events()
            self.tasks.settle_suspects(now)
            self.tasks.enforce_limits(now)
            if self.given_up:
                self.tasks.kill_everything()
                return EXIT_GIVEN_UP
            if self.stopping is None:
                self._check_walltime()
            if self.stopping is not None:
                self.tasks.stop_all(now)
                if not self.tasks.any_running():
                    break
            else:
                self.tasks.start_buffered()
                self._talk_to_database(now)
                if self.given_up:
                    continue
                self.tasks.start_buffered()
                if self._should_leave(now):
                    break
            self._note_idle()
            self._sleep(wakeup_fd, now)
        return self._finish()

    def _should_leave(self, now: float) -> bool:
        if not self.tasks.empty():
            self.idle_since_mono = None
            return False
        if self.rounds.busy:
            return False  # a claim may be on its way
        if self.draining:
            self.finish_reason = self.drain_reason
            return True
        if self.rounds.has_work():
            self.idle_since_mono = None
            return False
        if self.idle_since_mono is None:
            self.idle_since_mono = now
        if now - self.idle_since_mono >= self.idle_timeout_s:
            self.finish_reason = "idle"
            return True
        return False

    def _finish(self) -> int:
        """Give back what did not run, record the rest, and mark the hog finished."""
        if self.rounds.busy:
            outcome = self.rounds.wait_round()
            if outcome is None:
                return EXIT_FAILED
            self._apply(outcome, time.monotonic())
            if self.given_up:
                return EXIT_GIVEN_UP
        self.tasks.unclaim_all()
        self.tasks.settle_suspects(float("inf"))
        self._note_idle(leaving=True)
        reason = self.stopping or self.finish_reason
        written = self.rounds.write_last(reason)
        if written is LastWrite.WRITTEN:
            log.info("%s: finished (%s)", self.name, reason)
            return EXIT_OK
        return EXIT_GIVEN_UP if written is LastWrite.GIVEN_UP else EXIT_FAILED

    def _note_idle(self, leaving: bool = False) -> None:
        """Charge the free cores since the last turn to their cause (report's idle split)."""
        idle = self.rounds.idle
        if idle is None:
            return
        if leaving or self.draining or self.stopping is not None:
            cause = DRAIN
        elif not self.rounds.claimed_once:
            cause = STARTUP
        elif self.rounds.claim_in_hand:
            cause = LOCK
        else:
            cause = EMPTY
        idle.sample(time.monotonic(), self.rounds.ledger.free().cores, cause)

    # -- the database ------------------------------------------------------------------------

    def _talk_to_database(self, now: float) -> None:
        """Apply the round that ended, and hand the database thread its next one."""
        outcome = self.rounds.collect(now)
        if outcome is not None:
            self._apply(outcome, now)
            if self.given_up:
                return
        self.rounds.give_next(now, self.tasks, claiming=not (self.draining or self.stopping))

    def begin(self, outcome: RoundOutcome) -> None:
        """Take what the hog claimed as it registered (DatabaseRounds.adopt), before the loop."""
        self._apply(outcome, time.monotonic())

    def _apply(self, outcome: RoundOutcome, now: float) -> None:
        if outcome.given_up:
            self.given_up = True
            return
        self.tasks.take(outcome.claimed)
        self.tasks.cancel(outcome.cancel_requested, now)
        if outcome.stop_request == steering.NOW and self.stopping is None:
            log.info("%s: asked to stop (hogs stop --now): tasks go back to the queue", self.name)
            self._stop("stopped by hogs stop --now")
        elif outcome.stop_request == steering.DRAIN and not self.draining:
            log.info("%s: asked to drain (hogs stop): running tasks finish, nothing new starts", self.name)
            self._start_draining("drained by hogs stop")

    # -- signals -----------------------------------------------------------------------------

    def _drain_signals(self, wakeup_fd: int) -> None:
        try:
            data = os.read(wakeup_fd, 4096)
        except BlockingIOError:
            return
        for number in data:
            if number == signal.SIGTERM:
                if self.stopping is None:
                    log.info("%s: SIGTERM: stopping, tasks go back to the queue", self.name)
                    self._stop("stopped")
            elif number == signal.SIGINT:
                self.interrupts += 1
                if self.interrupts >= 2 and self.stopping is None:
                    log.info("%s: second SIGINT: stopping now", self.name)
                    self._stop("stopped")
                elif not self.draining:
                    log.info("%s: SIGINT: draining (again to stop now)", self.name)
                    self._start_draining()
            elif number == signal.SIGUSR1 and not self.draining:
                log.info("%s: SIGUSR1: draining", self.name)
                self._start_draining()

    def _start_draining(self, reason: str = "drained") -> None:
        self.draining = True
        self.drain_reason = reason
        self.tasks.drain()

    def _stop(self, reason: str) -> None:
        self.stopping = reason
        self.tasks.begin_stop()

    # -- walltime ----------------------------------------------------------------------------

    def _check_walltime(self) -> None:
        left = self.walltime.seconds_left()
        if left is not None and left <= 0:
            log.info("%s: walltime nearly over: giving running tasks back and leaving", self.name)
            self._stop("walltime")

    # -- sleeping ----------------------------------------------------------------------------

    def _sleep(self, wakeup_fd: int, now: float) -> None:
        deadlines = [now + IDLE_POLL_S]
        if self.rounds.busy:
            deadlines.append(self.rounds.next_due(now, tasks_running=False))
        elif self.stopping is None:
            deadlines.append(self.rounds.next_due(now, tasks_running=self.tasks.any_running()))
            if self.idle_since_mono is not None:
                deadlines.append(self.idle_since_mono + self.idle_timeout_s)
        deadlines.extend(self.tasks.due_times())
        left = self.walltime.seconds_left()
        if left is not None and self.stopping is None:
            deadlines.append(now + max(0.0, left))
        # Tasks still buffered here do not fit yet: only an exit, a signal or a round wakes us.
        timeout = max(0.0, min(deadlines) - time.monotonic())
        with contextlib.suppress(InterruptedError):
            select.select([wakeup_fd, *self.launcher.fds], [], [], timeout)


def _note_signal(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal to the loop; nothing to do here."""


def run_hog(
    db_path: str,
    timeout_s: float,
    options: HogOptions,
    hog_id: int | None = None,
    allow_insecure: bool = False,
    bundle: str | None = None,
) -> int:
    """Run a hog until it leaves (taking over the pending row `hog_id`, if given); the process
    exit status."""
    # Absolute: the hog changes its working folder to start tasks in theirs.
    db_path = os.path.abspath(db_path)
    try:
        db = open_database(db_path, timeout_s)
    except HogError as error:
        log.error("hog: %s", error)
        return EXIT_FAILED
    if not allow_insecure:
        db.check_secure()
    slurm_job_id = slurm.job_id()
    walltime = Walltime.of(options, slurm_job_id)
    problem = walltime.problem()
    if problem is not None:
        return _refuse(db, hog_id, problem)
    node = detect(options.cores, options.gpus, options.mem_bytes)
    host = slurm.node_name()
    info = claims.HogInfo(
        host=host,
        pid=os.getpid(),
        slurm_job_id=slurm_job_id,
        cores=node.cores,
        gpus=node.gpus,
        mem_bytes=node.mem_bytes,
        end_by=walltime.end_by,
        lease_s=options.lease_s,
        pool=options.pool,
    )
    ledger = Ledger(node)
    claim = first_claim(ledger, walltime, bundle)
    environments: dict[int, dict[str, str]] = {}
    # The loop hears signals through this pipe, from before the hog claims: one that comes while
    # it sets up is heard at its first turn, which then hands back what it claimed.
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        previous[number] = signal.signal(number, _note_signal)
    # SIGHUP must not kill a hog whose terminal or ssh session went away.
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    registering = time.monotonic()
    started_id: int | None = None
    try:
        started_id, first = claims.start_hog_claiming(db, info, hog_id, claim, environments)
    finally:
        if started_id is None:  # given up, or the write failed
            _restore_signals(previous, old_wakeup)
            os.close(read_fd)
            os.close(write_fd)
    registered = time.monotonic()
    if started_id is None:
        log.warning("hog %s: its row was given up before it started: leaving", hog_id)
        return EXIT_OK
    try:
        name = f"hog {started_id} on {host}" + (
            "" if options.pool == DEFAULT_POOL else f" (pool {options.pool})"
        )
        files = QueueFiles(db_path)
        folder_mode, file_mode = files.private_modes()
        pids_path = files.hog_pids(started_id)
        pids_fd = _open_pids_file(pids_path, folder_mode, name)
        _log_start(name, node, walltime)
        # The database thread waits in line for the lock as long as it takes: flock keeps the line
        # fair and no alarm can reach a thread; the loop warns when a wait grows long.
        db.timeout_s = None
        thread = DatabaseThread(write_fd)
        rounds = DatabaseRounds(
            db=db,
            hog_id=started_id,
            host=host,
            name=name,
            thread=thread,
            ledger=ledger,
            walltime=walltime,
            heartbeat_s=options.heartbeat_s,
            timeout_s=timeout_s,
            bundle=bundle,
            idle=IdleClock(node.cores),
        )
        rounds.environments = environments
        outputs = OutputFiles(folder_mode)
        cpu_labels = [
            str(node.cpu_ids[slot] if node.cpu_ids is not None else slot) for slot in range(node.cores)
        ]
        launcher = Launcher(node.cpu_ids, cpu_labels, outputs, pids_fd, write_fd)
        tasks = Tasks(
            name=name,
            hog_id=started_id,
            db_path=db_path,
            file_mode=file_mode,
            cpu_labels=cpu_labels,
            ledger=ledger,
            walltime=walltime,
            launcher=launcher,
            outputs=outputs,
            rounds=rounds,
            pids_fd=pids_fd,
        )
        hog = Hog(name, options.idle_timeout_s, walltime, tasks, rounds, launcher)
        hog.begin(rounds.adopt(claim, first, registering, registered))
    except BaseException:
        # Nothing of this hog will run: what it claimed as it registered goes back now, not when
        # its lease runs out (each task counted a crash then).
        db.timeout_s = timeout_s
        _release(db, started_id, host, first.claimed, environments)
        _restore_signals(previous, old_wakeup)
        raise
    try:
        return hog.run(read_fd)
    except BaseException:
        tasks.kill_everything()
        raise
    finally:
        _restore_signals(previous, old_wakeup)
        # A thread still waiting for the lock, or for a task, dies with the process; the fd it
        # would wake the loop through stays open until then.
        stuck = not thread.close()
        if launcher.close() and not stuck:
            os.close(write_fd)
        os.close(read_fd)
        outputs.close()
        if pids_fd >= 0:
            os.close(pids_fd)
            if not tasks.any_running():
                with contextlib.suppress(OSError):
                    os.unlink(pids_path)
        if not stuck:
            db.close()


def _restore_signals(previous: dict, old_wakeup: int) -> None:
    signal.set_wakeup_fd(old_wakeup)
    for number, handler in previous.items():
        signal.signal(number, handler)


def _release(
    db: Database,
    hog_id: int,
    host: str,
    claimed: list[claims.ClaimedTask],
    environments: dict[int, dict[str, str]],
) -> None:
    if not claimed:
        return
    released = [claims.TaskResult(task.task_id, task.attempt, states.REASON_RELEASED) for task in claimed]
    try:
        claims.exchange(db, hog_id, host, released, None, environments)
    except HogError as error:
        log.error(
            "hog %s: could not give back the tasks it claimed (%s): they go back when it is found lost",
            hog_id,
            error,
        )


def _refuse(db: Database, hog_id: int | None, problem: str) -> int:
    """Leave before starting, saying why in the log and on the pending row the monitor made
    (the monitor names the reason when it stops starting hogs)."""
    log.error("hog%s: %s", "" if hog_id is None else f" {hog_id}", problem)
    if hog_id is not None:
        claims.set_hog_state(db, hog_id, states.HOG_CANCELLED, problem)
    db.close()
    return EXIT_USAGE


def _open_pids_file(path: str, folder_mode: int, name: str) -> int:
    """The file where the slots note the tasks' process groups, for a reaper; -1 if it cannot be."""
    try:
        make_private_dirs(os.path.dirname(path), folder_mode)
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        log.warning("%s: cannot keep a pid file (%s): a reaper cannot kill its leftovers", name, error)
        return -1


def _log_start(name: str, node: NodeResources, walltime: Walltime) -> None:
    end_by = walltime.end_by
    log.info(
        "%s: %s%s, %s, %.1f GiB, %s",
        name,
        counted(node.cores, "core"),
        "" if node.cpu_ids is not None else " (unpinned)",
        counted(len(node.gpus), "GPU"),
        node.mem_bytes / (1 << 30),
        (
            f"leaves by {time.strftime('%H:%M:%S', time.localtime(end_by))} ({walltime.source}; "
            f"tasks without --time start while more than {shown_duration(walltime.margin_s)} remain)"
            if end_by
            else "no walltime"
        ),
    )
