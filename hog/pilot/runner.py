"""The hog: claims tasks that fit its node, runs them, reports, and leaves in time.

One event loop: signal handlers only note the signal (through the wakeup fd), and the loop decides
what starts, records what ended and enforces limits. Slow work is kept off it: a process per
core slot starts tasks and waits for them (launcher.py, slot.py), a thread talks to the database
in short batched transactions (background.py), one creates output files ahead (procs.OutputFiles).
"""

import contextlib
import functools
import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field, replace

from hog.errors import DatabaseError, DatabaseGoneError, HogError
from hog.pilot import slurm
from hog.pilot.background import DatabaseThread, Outcome
from hog.pilot.healing import heal, task_pids_path
from hog.pilot.launcher import Crashed, Ended, Launch, Launcher, NotStarted, Started
from hog.pilot.outputs import output_path
from hog.pilot.procs import Exited, OutputFiles, kill_group, read_tail
from hog.pilot.resources import GPU_VARIABLES, NodeResources, detect
from hog.store import claims, states
from hog.store.db import Database, make_private_dirs, open_database, private_modes
from hog.store.packing import Busy, Resources

log = logging.getLogger(__name__)

KILL_GRACE_S = 5.0  # SIGTERM to SIGKILL for a task past its limit or cancelled
STOP_GRACE_S = 2.0  # the same when the hog itself must stop: SLURM's KillWait is short
STOP_LEAD_S = 5.0  # stop this long before the allocation ends: grace plus the last commit
FLUSH_INTERVAL_S = 1.0  # longest a finished result waits before it is committed
RESULT_BATCH_MAX = 512
IDLE_POLL_S = 1.0  # how often an idle hog (or one blocked by a reservation) looks again
CANCEL_POLL_S = 2.0  # how often a hog looks for cancelled tasks between transactions
PREFETCH_HORIZON_S = 0.25  # claim ahead for about this long when tasks are very short
# Signals with which SLURM (scancel, time limit, node teardown) kills a job's processes.
TEARDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP})
SUSPECT_GRACE_S = 1.0  # how long such a death waits for the hog's own stop signal
# Unstarted tasks a hog may hold, shared among the hogs on the queue: a round costs a few fsyncs
# however many tasks it carries, so a hog alone takes tiny tasks in few big rounds; among many,
# each one's wait for the lock grows with the others' rounds, so those stay short...
PREFETCH_MAX_TASKS = 256
PREFETCH_MIN_FACTOR = 8  # ... but a hog may always hold this many node-fulls
# One-core tasks that may wait for a slot in the launcher's queue, per core: while it holds more
# than one per core, the slots start them without waking the loop.
QUEUE_AHEAD_PER_CORE = 4
DB_RETRY_S = 2.0
FINAL_WRITE_TRIES = 5
DISCARDED = (os.devnull, os.devnull)  # a task's output paths with -o /dev/null -e /dev/null
# A hog's pid file is emptied when nothing runs, once it is longer than this.
PIDS_FILE_TRIM_BYTES = 16384


def prefetch_factor(mean_duration_s: float, hogs_running: int, cores: int) -> int:
    """How many node-fulls of tasks a hog holds ahead of its free cores: about a quarter second
    of work, within its share of PREFETCH_MAX_TASKS, never capped below PREFETCH_MIN_FACTOR."""
    share = PREFETCH_MAX_TASKS // (max(1, hogs_running) * cores)
    cap = max(PREFETCH_MIN_FACTOR, share)
    return min(cap, int(PREFETCH_HORIZON_S / max(mean_duration_s, 1e-4)))


def lease_for(heartbeat_s: float) -> float:
    """How long a hog may stay silent before others may declare it lost."""
    return 3 * heartbeat_s + 2.0


@dataclass(frozen=True)
class HogConfig:
    db_path: str
    timeout_s: float
    cores: int | None = None
    gpus: str | None = None
    mem_bytes: int | None = None
    walltime_s: float | None = None
    end_time: float | None = None
    margin_s: float = 300.0
    idle_timeout_s: float = 60.0
    heartbeat_s: float = 30.0
    hog_id: int | None = None

    @classmethod
    def from_options(
        cls, db_path: str, timeout_s: float, hog_id: int | None = None, **options
    ) -> "HogConfig":
        return cls(
            db_path=db_path,
            timeout_s=timeout_s,
            cores=options.get("cores"),
            gpus=options.get("gpus"),
            mem_bytes=options.get("mem"),
            walltime_s=options.get("walltime"),
            end_time=options.get("end_time"),
            margin_s=options.get("margin") or 300.0,
            idle_timeout_s=options.get("idle_timeout") or 60.0,
            heartbeat_s=options.get("heartbeat") or 30.0,
            hog_id=hog_id,
        )


@dataclass
class RunningTask:
    """A task handed to the launcher: queued for a slot, or started."""

    task: claims.ClaimedTask
    gpu_ids: list[str]
    launch: Launch  # its pid, slots and start times once a slot has started it
    deadline_mono: float | None = None
    kill_reason: str | None = None
    term_sent_mono: float | None = None
    kill_sent: bool = False


@dataclass
class Round:
    """One job of the database thread: what it writes and asks, and when it was given."""

    results: list[claims.TaskResult]
    oldest_result_mono: float | None
    claim: claims.ClaimRequest | None
    exchange: bool  # write results and the heartbeat (and claim, if `claim`)
    poll_cancels: bool  # only look for cancels (when there is no exchange)
    heal: bool
    given_mono: float
    warn_after_s: float


@dataclass
class RoundOutcome:
    given_up: bool = False
    claimed: list[claims.ClaimedTask] = field(default_factory=list)
    queue_has_work: bool = False
    cancel_requested: set[tuple[int, int]] = field(default_factory=set)
    reaped: list[int] = field(default_factory=list)
    hogs_running: int = 1


@dataclass
class Hog:
    config: HogConfig
    db: Database
    node: NodeResources
    host: str
    end_by: float | None  # epoch when the allocation ends
    hog_id: int = 0
    running: dict[tuple[int, int], RunningTask] = field(default_factory=dict)  # by (task, attempt)
    buffered: list[claims.ClaimedTask] = field(default_factory=list)  # claimed, not yet started
    results: list[claims.TaskResult] = field(default_factory=list)
    oldest_result_mono: float | None = None
    environments: dict[int, dict[str, str]] = field(default_factory=dict)
    free_cores: int = 0  # below 0 while one-core tasks wait in the launcher's queue
    free_gpus: list[str] = field(default_factory=list)
    free_mem: int = 0
    mean_duration_s: float | None = None
    hogs_running: int = 1  # on the queue, as the last claim found
    draining: bool = False
    stopping: str | None = None  # why the hog stops now
    given_up: bool = False
    interrupts: int = 0
    queue_has_work: bool = True
    claim_blocked: bool = False
    last_exchange_mono: float = 0.0
    last_claim_mono: float = 0.0
    last_cancel_poll_mono: float = 0.0
    last_reap_mono: float = 0.0
    idle_since_mono: float | None = None
    db_retry_after_mono: float = 0.0
    finish_reason: str = "idle"
    pids_fd: int = -1
    suspects: list[tuple[float, claims.TaskResult]] = field(default_factory=list)
    outputs: OutputFiles = None  # type: ignore[assignment]  # set in __post_init__
    output_paths: dict[tuple[int, int], tuple[str, str]] = field(default_factory=dict)
    db_thread: DatabaseThread = None  # type: ignore[assignment]  # set by run_hog
    launcher: Launcher = None  # type: ignore[assignment]  # set by run_hog
    round: Round | None = None  # the job the database thread has in hand

    # -- set-up ------------------------------------------------------------------------------

    def __post_init__(self) -> None:
        self.log_modes = private_modes(self.config.db_path)
        self.outputs = OutputFiles(self.log_modes[0])
        self.free_cores = self.node.cores
        self.free_gpus = list(self.node.gpus)
        self.free_mem = self.node.mem_bytes
        self.base_environment = {
            key: value
            for key, value in os.environ.items()
            if key.startswith(("SLURM_", "SLURMD_")) and not key.startswith("SLURM_HOG_")
        }
        self.base_environment["SLURM_HOG_DB"] = self.config.db_path
        self.cpu_labels = [str(self._cpu_of(slot)) for slot in range(self.node.cores)]
        self.debug = log.isEnabledFor(logging.DEBUG)

    @property
    def total(self) -> Resources:
        return Resources(self.node.cores, len(self.node.gpus), self.node.mem_bytes)

    def name(self) -> str:
        return f"hog {self.hog_id} on {self.host}"

    # -- the loop ----------------------------------------------------------------------------

    def run(self, wakeup_fd: int) -> int:
        while True:
            now = time.monotonic()
            self._drain_signals(wakeup_fd)
            self._take_events()
            self._settle_suspects(now)
            self._enforce_limits(now)
            if self.given_up:
                self._kill_everything()
                return 3
            if self.stopping is None:
                self._check_walltime(now)
            if self.stopping is not None:
                self._stop_tasks(now)
                if not self.running:
                    break
            else:
                self._start_buffered()
                self._talk_to_database(now)
                if self.given_up:
                    continue
                self._start_buffered()
                if self._should_leave(now):
                    break
            self._sleep(wakeup_fd, now)
        return self._finish()

    def _should_leave(self, now: float) -> bool:
        if self.running or self.buffered or self.suspects:
            self.idle_since_mono = None
            return False
        if self.db_thread.busy:
            return False  # a claim may be on its way
        if self.draining:
            self.finish_reason = "drained"
            return True
        if self.queue_has_work:
            self.idle_since_mono = None
            return False
        if self.idle_since_mono is None:
            self.idle_since_mono = now
        if now - self.idle_since_mono >= self.config.idle_timeout_s:
            self.finish_reason = "idle"
            return True
        return False

    def _finish(self) -> int:
        """Give back what did not run, record the rest, and mark the hog finished."""
        if self.db_thread.busy:
            finished = self._wait_for_round()
            if finished is None:
                return 1
            self._apply_round(finished, time.monotonic())
            if self.given_up:
                return 3
        self._unclaim_all()
        self._settle_suspects(float("inf"))
        reason = self.stopping or self.finish_reason
        for attempt in range(FINAL_WRITE_TRIES):
            self.db_thread.give(
                functools.partial(
                    claims.exchange,
                    self.db,
                    self.hog_id,
                    self.host,
                    self.results,
                    None,
                    self.environments,
                    finish_reason=reason,
                )
            )
            finished = self._wait_for_round()
            if finished is None:
                return 1
            outcome, error = finished
            if error is not None:
                if not isinstance(error, DatabaseError):
                    raise error
                log.error("%s: cannot write its last results (try %d): %s", self.name(), attempt + 1, error)
                if isinstance(error, DatabaseGoneError):
                    return 3
                time.sleep(1.0)
                continue
            if outcome.given_up:
                log.warning("%s: declared lost meanwhile; its results were not written", self.name())
                return 3
            log.info("%s: finished (%s)", self.name(), reason)
            return 0
        return 1

    def _wait_for_round(self) -> Outcome | None:
        """The database thread's job, waited for at the end; None (said in the log) if the lock
        stayed taken for FINAL_WRITE_TRIES x --timeout."""
        finished = self.db_thread.wait(FINAL_WRITE_TRIES * self.config.timeout_s)
        if finished is None:
            log.error("%s: the database stayed locked: its last results are not written", self.name())
        return finished

    # -- signals -----------------------------------------------------------------------------

    def _drain_signals(self, wakeup_fd: int) -> None:
        try:
            data = os.read(wakeup_fd, 4096)
        except BlockingIOError:
            return
        for number in data:
            if number == signal.SIGTERM:
                if self.stopping is None:
                    log.info("%s: SIGTERM: stopping, tasks go back to the queue", self.name())
                    self.stopping = "stopped"
            elif number == signal.SIGINT:
                self.interrupts += 1
                if self.interrupts >= 2 and self.stopping is None:
                    log.info("%s: second SIGINT: stopping now", self.name())
                    self.stopping = "stopped"
                elif not self.draining:
                    log.info("%s: SIGINT: draining (again to stop now)", self.name())
                    self._start_draining()
            elif number == signal.SIGUSR1 and not self.draining:
                log.info("%s: SIGUSR1: draining", self.name())
                self._start_draining()

    def _start_draining(self) -> None:
        self.draining = True
        self._unclaim_all()

    # -- children ----------------------------------------------------------------------------

    def _take_events(self) -> None:
        for event in self.launcher.events():
            if type(event) is Ended:
                self._ended(event)
            elif type(event) is Started:
                self._started(event)
            elif type(event) is NotStarted:
                self._not_started(event)
            elif type(event) is Crashed:
                raise event.error

    def _started(self, event: Started) -> None:
        running = self.running.get(event.key)
        if running is None:
            return  # ended already
        if running.task.time_limit_s is not None:
            running.deadline_mono = running.launch.started_mono + running.task.time_limit_s
        if running.kill_reason is not None and running.term_sent_mono is None:
            self._signal_term(running, time.monotonic())  # cancelled or stopped as it started

    def _ended(self, event: Ended) -> None:
        running = self.running.pop(event.key)
        self._free(running)
        result = self._result_of(running, event.exited, event.ended_mono)
        if (
            result.reason == states.REASON_EXITED
            and result.signal in TEARDOWN_SIGNALS
            and self.stopping is None
        ):
            # Killed by someone else: SLURM's scancel or time limit signals every process of
            # the job, the tasks often before the hog. Wait a moment for the hog's own signal.
            self.suspects.append((time.monotonic(), result))
        else:
            self._add_result(result)
        if not self.running and self.pids_fd >= 0 and os.fstat(self.pids_fd).st_size > PIDS_FILE_TRIM_BYTES:
            os.ftruncate(self.pids_fd, 0)  # keep the file short for a reaper; no slot writes now

    def _not_started(self, event: NotStarted) -> None:
        running = self.running[event.key]
        if event.error is None:  # taken back, or waited for a slot until too late for the walltime
            self._take_back(running, running.kill_reason or states.REASON_RELEASED)
            return
        del self.running[event.key]
        self._free(running)
        task = running.task
        error = event.error
        message = f"could not start: {error.strerror or error}" + (
            f": {error.filename}" if error.filename else ""
        )
        log.warning("%s: task %d %s", self.name(), task.task_id, message)
        now = time.time()
        self._add_result(
            claims.TaskResult(
                task.task_id,
                task.attempt,
                states.REASON_START_FAILED,
                started_at=now,
                ended_at=now,
                exit_code=127,
                stderr_tail=message,
            )
        )

    def _settle_suspects(self, now: float) -> None:
        """Tasks killed from outside: given back if the hog is stopping too, else failed."""
        while self.suspects and (self.stopping or now - self.suspects[0][0] >= SUSPECT_GRACE_S):
            _, result = self.suspects.pop(0)
            if self.stopping:
                result = result._replace(reason=states.REASON_RELEASED, stderr_tail=None)
            self._add_result(result)

    def _result_of(self, running: RunningTask, exited: Exited, ended_mono: float) -> claims.TaskResult:
        task = running.task
        # Leftovers the task put in the background die with it, as in a SLURM step.
        kill_group(exited.pid)
        launch = running.launch
        duration = ended_mono - launch.started_mono
        self.mean_duration_s = (
            duration if self.mean_duration_s is None else 0.8 * self.mean_duration_s + 0.2 * duration
        )
        reason = running.kill_reason or states.REASON_EXITED
        succeeded = exited.exit_code == 0 and reason == states.REASON_EXITED
        if self.stopping is not None and not succeeded:
            # Killed (by us or by SLURM's TERM to the whole step) because the hog stops.
            reason = states.REASON_RELEASED
        tail = None
        if not succeeded and reason != states.REASON_RELEASED:
            tail = read_tail(running.launch.outputs[1], claims.STDERR_TAIL_BYTES) or None
        if self.debug:
            log.debug(
                "%s: task %d exited %s after %.3f s",
                self.name(),
                task.task_id,
                exited.exit_code if exited.signal is None else f"signal {exited.signal}",
                duration,
            )
        return claims.TaskResult(
            task.task_id,
            task.attempt,
            reason,
            started_at=launch.started_at,
            ended_at=launch.started_at + duration,
            exit_code=exited.exit_code,
            signal=exited.signal,
            max_rss_kib=exited.max_rss_kib,
            cpu_user_s=exited.cpu_user_s,
            cpu_system_s=exited.cpu_system_s,
            stderr_tail=tail,
            cores=self._cpu_list(launch.slots),
            gpus=",".join(running.gpu_ids) or None,
        )

    def _cpu_of(self, slot: int) -> int:
        return self.node.cpu_ids[slot] if self.node.cpu_ids is not None else slot

    def _cpu_list(self, slots: tuple[int, ...]) -> str:
        if len(slots) == 1:
            return self.cpu_labels[slots[0]]
        return ",".join(self.cpu_labels[slot] for slot in slots)

    def _free(self, running: RunningTask) -> None:
        self.free_cores += running.task.cores
        self.free_gpus.extend(running.gpu_ids)
        self.free_gpus.sort(key=self.node.gpus.index)
        self.free_mem += running.task.mem_bytes
        self.claim_blocked = False

    def _claimed(self, tasks: list[claims.ClaimedTask]) -> None:
        """Take newly claimed tasks; their output files are made ahead, off the loop."""
        for task in tasks:
            if task.stdout_pattern == task.stderr_pattern == os.devnull:
                paths = DISCARDED  # nothing to compute or to make
            else:
                paths = (
                    self._output_path(task, task.stdout_pattern, "out"),
                    self._output_path(task, task.stderr_pattern, "err"),
                )
            # Logs beside the queue are private like it; files the user named follow the umask.
            private = not task.stdout_pattern and not task.stderr_pattern
            mode = self.log_modes[1] if private else 0o666
            key = (task.task_id, task.attempt)
            self.output_paths[key] = paths
            self.outputs.request(key, paths, mode)
            self.buffered.append(task)

    def _output_path(self, task: claims.ClaimedTask, pattern: str | None, stream: str) -> str:
        return output_path(
            self.config.db_path, pattern, task.cwd, task.task_id, task.attempt, task.name, stream
        )

    def _unclaim(self, task: claims.ClaimedTask, reason: str = states.REASON_RELEASED) -> None:
        """A buffered task that will not start here goes back (or is cancelled)."""
        self._hand_back(task, self.output_paths.pop((task.task_id, task.attempt)), reason)

    def _take_back(self, running: RunningTask, reason: str = states.REASON_RELEASED) -> None:
        """A task handed to the launcher that no slot started: freed, and handed back."""
        del self.running[running.launch.key]
        self._free(running)
        self._hand_back(running.task, running.launch.outputs, reason)

    def _hand_back(self, task: claims.ClaimedTask, outputs: tuple[str, str], reason: str) -> None:
        self.outputs.discard((task.task_id, task.attempt), outputs)
        self._add_result(claims.TaskResult(task.task_id, task.attempt, reason))

    def _unclaim_all(self) -> None:
        """Give back every task that has not started: buffered, or queued for a slot."""
        for task in self.buffered:
            self._unclaim(task)
        self.buffered.clear()
        if self.launcher is not None:
            for launch in self.launcher.withdraw_all():
                self._take_back(self.running[launch.key])

    def _add_result(self, result: claims.TaskResult) -> None:
        if not self.results:
            self.oldest_result_mono = time.monotonic()
        self.results.append(result)

    def _enforce_limits(self, now: float) -> None:
        for running in self.running.values():
            if running.kill_reason is None:
                if running.deadline_mono is not None and now >= running.deadline_mono:
                    log.info(
                        "%s: task %d passed its time limit: killing it",
                        self.name(),
                        running.task.task_id,
                    )
                    self._terminate(running, states.REASON_TIMEOUT, now)
            else:
                self._kill_if_past_grace(running, now)

    def _kill_grace(self) -> float:
        return STOP_GRACE_S if self.stopping else KILL_GRACE_S

    def _kill_if_past_grace(self, running: RunningTask, now: float) -> None:
        """SIGKILL to a task that outlived its SIGTERM by the grace."""
        pid = running.launch.pid
        if running.term_sent_mono is None or running.kill_sent or pid is None:
            return
        if now - running.term_sent_mono >= self._kill_grace():
            kill_group(pid, signal.SIGKILL)
            running.kill_sent = True

    def _terminate(self, running: RunningTask, reason: str, now: float) -> None:
        """TERM to a started task; one still queued for a slot is taken back: at once if it
        waits in the launcher, else when its slot says so (NotStarted), or, if the slot has just
        started it, signalled on its Started event."""
        running.kill_reason = reason
        launch = running.launch
        if launch.pid is not None:
            self._signal_term(running, now)
        elif self.launcher.withdraw(launch.key):
            self._take_back(running, reason)
        # else its slot answers: NotStarted (taken back) or Started (TERM then)

    def _signal_term(self, running: RunningTask, now: float) -> None:
        pid = running.launch.pid
        assert pid is not None
        running.term_sent_mono = now
        kill_group(pid, signal.SIGCONT)
        kill_group(pid, signal.SIGTERM)

    def _stop_tasks(self, now: float) -> None:
        self._unclaim_all()
        for running in list(self.running.values()):
            if running.kill_reason is None:
                self._terminate(running, states.REASON_RELEASED, now)
            else:
                self._kill_if_past_grace(running, now)

    def _kill_everything(self) -> None:
        if self.launcher is None:
            return
        for launch in self.launcher.withdraw_all():
            self.running.pop(launch.key, None)
        deadline = time.monotonic() + 10
        while self.running and time.monotonic() < deadline:
            for running in self.running.values():
                if running.launch.pid is not None:
                    kill_group(running.launch.pid, signal.SIGKILL)
            for event in self.launcher.events():
                if isinstance(event, (Ended, NotStarted)):
                    self.running.pop(event.key, None)
            time.sleep(0.01)

    # -- walltime ----------------------------------------------------------------------------

    def _seconds_left(self) -> float | None:
        """Until the hog must stop (before its allocation ends)."""
        if self.end_by is None:
            return None
        return self.end_by - STOP_LEAD_S - time.time()

    def _unlimited_allowed(self) -> bool:
        if self.end_by is None:
            return True
        return self.end_by - time.time() > max(self.config.margin_s, STOP_LEAD_S)

    def _check_walltime(self, now: float) -> None:
        left = self._seconds_left()
        if left is not None and left <= 0:
            log.info("%s: walltime nearly over: giving running tasks back and leaving", self.name())
            self.stopping = "walltime"

    # -- starting tasks ----------------------------------------------------------------------

    def _start_buffered(self) -> None:
        while self.buffered and not self.draining:
            task = self.buffered[0]
            # A one-core task without GPUs may wait in the launcher's queue (a few per core), so
            # that a slot starts it the moment its task ends; others start on idle slots only.
            queue_ahead = task.cores == 1 and not task.gpus
            room = self.free_cores + (QUEUE_AHEAD_PER_CORE * self.node.cores if queue_ahead else 0)
            if task.cores > room or task.gpus > len(self.free_gpus) or task.mem_bytes > self.free_mem:
                return  # first come, first served within what this hog already holds
            if not queue_ahead and self.launcher.queued:
                return  # its slots free up once the queue is taken
            latest_start = self._latest_start(task)
            if latest_start is not None and time.time() > latest_start:
                self.buffered.pop(0)
                self._unclaim(task)
                continue
            if not self._start(task, queue_ahead, latest_start):
                return  # its slots are still finishing: an event will wake the loop
            self.buffered.pop(0)

    def _start(self, task: claims.ClaimedTask, queue_ahead: bool, latest_start: float | None) -> bool:
        """Hand a task to the launcher; False if it needs idle slots that are not idle yet."""
        key = (task.task_id, task.attempt)
        gpu_ids = self.free_gpus[: task.gpus]
        launch = Launch(
            key,
            task.argv if task.argv is not None else task.command,
            task.cwd,
            self._environment_for(task, gpu_ids),
            self.output_paths.pop(key),
            task.cores,
            latest_start,
        )
        if queue_ahead:
            self.launcher.queue(launch)
        elif not self.launcher.start_on_idle(launch):
            self.output_paths[key] = launch.outputs
            return False
        del self.free_gpus[: task.gpus]
        self.free_cores -= task.cores
        self.free_mem -= task.mem_bytes
        self.running[key] = RunningTask(task, gpu_ids, launch)
        return True

    def _latest_start(self, task: claims.ClaimedTask) -> float | None:
        """The epoch after which a task must no longer start: with --time, it could not end
        before the hog must stop; without, less than --margin would remain. The loop checks it
        before handing the task over, the slot again as it starts it."""
        if self.end_by is None:
            return None
        if task.time_limit_s is None:
            return self.end_by - max(self.config.margin_s, STOP_LEAD_S)
        return self.end_by - STOP_LEAD_S - task.time_limit_s

    def _environment_for(self, task: claims.ClaimedTask, gpu_ids: list[str]) -> dict[str, str]:
        """The task's environment; the launcher adds HOG_CPUS when it picks its slots."""
        env = dict(task.environment)
        env.update(self.base_environment)
        env["HOG_TASK_ID"] = str(task.task_id)
        env["HOG_ATTEMPT"] = str(task.attempt)
        env["HOG_HOG_ID"] = str(self.hog_id)
        env["HOG_CORES"] = str(task.cores)
        env["OMP_NUM_THREADS"] = str(task.cores)
        if self.node.gpus:
            for variable in GPU_VARIABLES:
                env[variable] = ",".join(gpu_ids)
            env["HOG_GPUS"] = ",".join(gpu_ids)
        return env

    # -- the database ------------------------------------------------------------------------

    def _prefetch_factor(self) -> int:
        if self.mean_duration_s is None or self.draining:
            return 0
        return prefetch_factor(self.mean_duration_s, self.hogs_running, self.node.cores)

    def _claim_request(self, now: float) -> claims.ClaimRequest | None:
        if self.draining or self.stopping:
            return None
        if self.claim_blocked and now - self.last_claim_mono < IDLE_POLL_S:
            return None
        if not self.queue_has_work and now - self.last_claim_mono < IDLE_POLL_S:
            return None
        factor = self._prefetch_factor()
        if factor == 0 and self.buffered:
            return None
        # Cheap checks first: this runs on every turn of the loop. Top up a prefetch buffer only
        # once it is half empty: one transaction per many tasks. Each task holds a core at least.
        allowance_cores = self.node.cores * factor
        if factor and len(self.buffered) > allowance_cores // 2:
            return None
        held_cores = sum(task.cores for task in self.buffered)
        if factor and held_cores > allowance_cores // 2:
            return None
        if self.free_cores + allowance_cores - held_cores <= 0:
            return None
        held = Resources(
            held_cores, sum(t.gpus for t in self.buffered), sum(t.mem_bytes for t in self.buffered)
        )
        allowance = Resources(allowance_cores, self.total.gpus * factor, self.total.mem_bytes * factor)
        # Tasks queued for a slot count as held (free_cores is below 0 by as many).
        free = Resources(self.free_cores, len(self.free_gpus), self.free_mem) + allowance - held
        epoch = time.time()
        busy = [
            Busy(
                r.task.needs,
                None if r.task.time_limit_s is None else (r.launch.started_at or epoch) + r.task.time_limit_s,
            )
            for r in self.running.values()
        ] + [Busy(task.needs, None) for task in self.buffered]
        return claims.ClaimRequest(
            free=free,
            total=self.total,
            busy=busy,
            seconds_left=self._seconds_left(),
            unlimited_allowed=self._unlimited_allowed(),
            limit=free.cores,
        )

    def _talk_to_database(self, now: float) -> None:
        """Hand the database thread its next round once the last one has ended."""
        if self.round is not None:
            finished = self.db_thread.collect()
            if finished is None:
                self._warn_if_slow(now)
                return
            self._apply_round(finished, now)
            if self.given_up:
                return
        if now < self.db_retry_after_mono:
            return
        claim = self._claim_request(now)
        flush_due = bool(self.results) and (
            len(self.results) >= RESULT_BATCH_MAX
            or now - (self.oldest_result_mono or now) >= FLUSH_INTERVAL_S
            or claim is not None
        )
        beat_due = now - self.last_exchange_mono >= self.config.heartbeat_s
        exchange = claim is not None or flush_due or beat_due
        poll_cancels = (
            not exchange
            and bool(self.running)
            and now - max(self.last_cancel_poll_mono, self.last_exchange_mono) >= CANCEL_POLL_S
        )
        heal_due = now - self.last_reap_mono >= self.config.heartbeat_s
        if not (exchange or poll_cancels or heal_due):
            return
        if heal_due:
            self.last_reap_mono = now
        self.round = Round(
            results=self.results if exchange else [],
            oldest_result_mono=self.oldest_result_mono if exchange else None,
            claim=claim,
            exchange=exchange,
            poll_cancels=poll_cancels,
            heal=heal_due,
            given_mono=now,
            warn_after_s=self.config.timeout_s,
        )
        if exchange:
            self.results = []
            self.oldest_result_mono = None
        self.db_thread.give(functools.partial(self._run_round, self.round))

    def _run_round(self, job: Round) -> RoundOutcome:
        """On the database thread: touches only the database and the environment cache."""
        outcome = RoundOutcome()
        if job.exchange:
            done = claims.exchange(self.db, self.hog_id, self.host, job.results, job.claim, self.environments)
            outcome.given_up = done.given_up
            outcome.claimed = done.claimed
            outcome.queue_has_work = done.queue_has_work
            outcome.cancel_requested = done.cancel_requested
            outcome.hogs_running = done.hogs_running
        elif job.poll_cancels:
            cancels = claims.poll_cancels(self.db, self.hog_id)
            if cancels is None:
                outcome.given_up = True
                return outcome
            outcome.cancel_requested = cancels
        if job.heal and not outcome.given_up:
            try:
                outcome.reaped = heal(self.db, self.host)
            except DatabaseGoneError:
                raise
            except DatabaseError as error:
                log.warning("%s: could not look for lost hogs: %s", self.name(), error)
        return outcome

    def _apply_round(self, finished: Outcome, now: float) -> None:
        job, self.round = self.round, None
        assert job is not None
        outcome, error = finished
        if error is not None:
            if not isinstance(error, DatabaseError):
                raise error
            if isinstance(error, DatabaseGoneError):
                # Its results can never be written: the tasks' next attempts belong to whatever
                # queue is at that path now, if any.
                log.error("%s: %s: killing its tasks and leaving", self.name(), error)
                self.given_up = True
                return
            # Ride it out: tasks keep running and results wait for the next try.
            log.warning(
                "%s: database unavailable, trying again in %.0f s: %s", self.name(), DB_RETRY_S, error
            )
            if job.results:
                self.results = job.results + self.results
                self.oldest_result_mono = job.oldest_result_mono
            self.db_retry_after_mono = now + DB_RETRY_S
            return
        if outcome.given_up:
            log.error("%s: was declared lost or cancelled: killing its tasks and leaving", self.name())
            self.given_up = True
            return
        self.last_cancel_poll_mono = job.given_mono
        if job.exchange:
            self.last_exchange_mono = job.given_mono
        if job.claim is not None:
            self.last_claim_mono = job.given_mono
            self.hogs_running = outcome.hogs_running
            self._claimed(outcome.claimed)
            if self.draining or self.stopping:
                self._unclaim_all()  # claimed while the hog began to leave
            self.queue_has_work = outcome.queue_has_work or bool(outcome.claimed)
            self.claim_blocked = len(outcome.claimed) < job.claim.limit and outcome.queue_has_work
        if outcome.reaped:
            log.warning(
                "%s: declared hogs %s lost; their tasks went back to the queue", self.name(), outcome.reaped
            )
        self._apply_cancels(outcome.cancel_requested, now)

    def _warn_if_slow(self, now: float) -> None:
        assert self.round is not None
        waited = now - self.round.given_mono
        if waited >= self.round.warn_after_s:
            self.round.warn_after_s += self.config.timeout_s
            log.warning(
                "%s: database unavailable: waiting %.0f s so far for its lock; tasks keep running",
                self.name(),
                waited,
            )

    def _apply_cancels(self, cancelled: set[tuple[int, int]], now: float) -> None:
        if not cancelled:
            return
        for key, running in list(self.running.items()):
            if key in cancelled and running.kill_reason is None:
                log.info("%s: task %d was cancelled: killing it", self.name(), running.task.task_id)
                self._terminate(running, states.REASON_CANCELLED, now)
        kept = []
        for task in self.buffered:
            if (task.task_id, task.attempt) in cancelled:
                self._unclaim(task, states.REASON_CANCELLED)
            else:
                kept.append(task)
        self.buffered = kept

    # -- sleeping ----------------------------------------------------------------------------

    def _sleep(self, wakeup_fd: int, now: float) -> None:
        deadlines = [now + IDLE_POLL_S]
        if self.round is not None:
            # Only a warning is due meanwhile: the round's end wakes the loop.
            deadlines.append(self.round.given_mono + self.round.warn_after_s)
        elif self.stopping is None:
            database_due = [self.last_exchange_mono + self.config.heartbeat_s]
            if self.results:
                database_due.append((self.oldest_result_mono or now) + FLUSH_INTERVAL_S)
            if self.running:
                database_due.append(now + CANCEL_POLL_S)
            if self.idle_since_mono is not None:
                deadlines.append(self.idle_since_mono + self.config.idle_timeout_s)
            # Past due while the database is unreachable: wait for the retry, do not spin.
            deadlines.append(max(min(database_due), self.db_retry_after_mono))
        if self.suspects:
            deadlines.append(self.suspects[0][0] + SUSPECT_GRACE_S)
        for running in self.running.values():
            if running.deadline_mono is not None and running.kill_reason is None:
                deadlines.append(running.deadline_mono)
            if running.term_sent_mono is not None and not running.kill_sent:
                deadlines.append(running.term_sent_mono + self._kill_grace())
        left = self._seconds_left()
        if left is not None and self.stopping is None:
            deadlines.append(now + max(0.0, left))
        # Tasks still buffered here do not fit yet: only an exit, a signal or a round wakes us.
        timeout = max(0.0, min(deadlines) - time.monotonic())
        with contextlib.suppress(InterruptedError):
            select.select([wakeup_fd, *self.launcher.fds], [], [], timeout)


def _note_signal(signum: int, frame: object) -> None:
    """The wakeup fd carries the signal to the loop; nothing to do here."""


def run_hog(config: HogConfig, allow_insecure: bool = False) -> int:
    """Run a hog until it leaves; the process exit status."""
    # Absolute: the hog changes its working folder to start tasks in theirs.
    config = replace(config, db_path=os.path.abspath(config.db_path))
    try:
        db = open_database(config.db_path, config.timeout_s)
    except HogError as error:
        log.error("hog: %s", error)
        return 1
    if not allow_insecure:
        db.check_secure()
    node = detect(config.cores, config.gpus, config.mem_bytes)
    slurm_job_id = slurm.job_id()
    end_by = _end_time(config, slurm_job_id)
    host = slurm.node_name()
    hog = Hog(config, db, node, host, end_by)
    info = claims.HogInfo(
        host=host,
        pid=os.getpid(),
        slurm_job_id=slurm_job_id,
        cores=node.cores,
        gpus=node.gpus,
        mem_bytes=node.mem_bytes,
        end_by=end_by,
        lease_s=lease_for(config.heartbeat_s),
    )
    hog_id = claims.start_hog(db, info, config.hog_id)
    if hog_id is None:
        log.warning("hog %s: its row was given up before it started: leaving", config.hog_id)
        return 0
    hog.hog_id = hog_id
    hog.last_exchange_mono = time.monotonic()
    pids_path = task_pids_path(config.db_path, hog_id)
    try:
        make_private_dirs(os.path.dirname(pids_path), hog.log_modes[0])
        hog.pids_fd = os.open(pids_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        log.warning("%s: cannot keep a pid file (%s): a reaper cannot kill its leftovers", hog.name(), error)
    log.info(
        "%s: %d cores%s, %d GPUs, %.1f GiB, %s",
        hog.name(),
        node.cores,
        "" if node.cpu_ids is not None else " (unpinned)",
        len(node.gpus),
        node.mem_bytes / (1 << 30),
        f"leaves by {time.strftime('%H:%M:%S', time.localtime(end_by))}" if end_by else "no walltime",
    )
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    # The database thread waits in line for the lock as long as it takes: flock keeps the line
    # fair and no alarm can reach a thread; the loop warns when a wait grows long.
    db.timeout_s = None
    hog.db_thread = DatabaseThread(write_fd)
    hog.launcher = Launcher(node.cpu_ids, hog.cpu_labels, hog.outputs, hog.pids_fd, write_fd)
    previous = {}
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        previous[number] = signal.signal(number, _note_signal)
    # SIGHUP must not kill a hog whose terminal or ssh session went away.
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    try:
        return hog.run(read_fd)
    except BaseException:
        hog._kill_everything()
        raise
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for number, handler in previous.items():
            signal.signal(number, handler)
        # A thread still waiting for the lock, or for a task, dies with the process; the fd it
        # would wake the loop through stays open until then.
        stuck = not hog.db_thread.close()
        if hog.launcher.close() and not stuck:
            os.close(write_fd)
        os.close(read_fd)
        hog.outputs.close()
        if hog.pids_fd >= 0:
            os.close(hog.pids_fd)
            if not hog.running:
                with contextlib.suppress(OSError):
                    os.unlink(pids_path)
        if not stuck:
            db.close()


def _end_time(config: HogConfig, slurm_job_id: str | None) -> float | None:
    if config.end_time is not None:
        return config.end_time
    if config.walltime_s is not None:
        return time.time() + config.walltime_s
    if slurm_job_id:
        return slurm.job_end_time(slurm_job_id)
    return None
