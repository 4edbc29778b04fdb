"""The hog's tasks from claim to result: waiting to start, handed to the launcher, ended.

The loop (runner.py) says when: it hands over what a round claimed and the cancels it found,
and asks to start tasks, to enforce their limits, to stop them. This book follows each task
from its claim to its result: it takes and gives back its share of the node in the ledger,
signals it, and passes how it ended to the database rounds.
"""

import logging
import os
import signal
import time

from hog.pilot.attempt import RunningTask, start_failure
from hog.pilot.environment import TaskEnvironment
from hog.pilot.launcher import Crashed, Ended, Launch, Launcher, NotStarted, Started
from hog.pilot.ledger import Ledger
from hog.pilot.outputs import output_path
from hog.pilot.procs import OutputFiles, kill_group
from hog.pilot.rounds import DatabaseRounds
from hog.pilot.walltime import Walltime
from hog.store import claims, states
from hog.store.packing import Busy

log = logging.getLogger(__name__)

KILL_GRACE_S = 5.0  # SIGTERM to SIGKILL for a task past its limit or cancelled
STOP_GRACE_S = 2.0  # the same when the hog itself must stop: SLURM's KillWait is short
# Signals with which SLURM (scancel, time limit, node teardown) kills a job's processes.
TEARDOWN_SIGNALS = frozenset({signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP})
SUSPECT_GRACE_S = 1.0  # how long such a death waits for the hog's own stop signal
DISCARDED = (os.devnull, os.devnull)  # a task's output paths with -o /dev/null -e /dev/null
# A hog's pid file is emptied when nothing runs, once it is longer than this.
PIDS_FILE_TRIM_BYTES = 16384


class Tasks:
    """The tasks a hog holds: claimed and not started yet (buffered, in claim order), handed to
    the launcher (running, by (task, attempt)), and ended by a signal from outside (suspects)."""

    def __init__(
        self,
        *,
        name: str,
        hog_id: int,
        db_path: str,
        file_mode: int,
        cpu_labels: list[str],
        ledger: Ledger,
        walltime: Walltime,
        launcher: Launcher,
        outputs: OutputFiles,
        rounds: DatabaseRounds,
        pids_fd: int,
    ) -> None:
        self.name = name
        self.db_path = db_path
        self.file_mode = file_mode  # for output files beside the queue
        self.cpu_labels = cpu_labels
        self.ledger = ledger
        self.walltime = walltime
        self.launcher = launcher
        self.outputs = outputs
        self.rounds = rounds
        self.pids_fd = pids_fd
        self.running: dict[tuple[int, int], RunningTask] = {}
        self.buffered: list[claims.ClaimedTask] = []
        self.output_paths: dict[tuple[int, int], tuple[str, str]] = {}
        self.suspects: list[tuple[float, claims.TaskResult]] = []
        self.draining = False  # nothing starts any more; what was claimed goes back
        self.stopping = False  # the hog stops now: what is killed goes back, not failed
        self.environment = TaskEnvironment(db_path, hog_id)
        self.debug = log.isEnabledFor(logging.DEBUG)

    # -- what the loop and the rounds ask ----------------------------------------------------

    @property
    def unstarted(self) -> list[claims.ClaimedTask]:
        return self.buffered

    def any_running(self) -> bool:
        return bool(self.running)

    def empty(self) -> bool:
        """Nothing claimed, running, or ended and waiting to be judged."""
        return not (self.running or self.buffered or self.suspects)

    def busy(self) -> list[Busy]:
        """What the running and the unstarted tasks hold, and until when (for a claim)."""
        epoch = time.time()
        return [
            Busy(
                r.task.needs,
                None if r.task.time_limit_s is None else (r.launch.started_at or epoch) + r.task.time_limit_s,
            )
            for r in self.running.values()
        ] + [Busy(task.needs, None) for task in self.buffered]

    def due_times(self) -> list[float]:
        """When the loop must look again for the tasks' sake (monotonic): a suspect's grace ends,
        a time limit passes, a SIGTERM's grace ends."""
        due = []
        if self.suspects:
            due.append(self.suspects[0][0] + SUSPECT_GRACE_S)
        for running in self.running.values():
            if running.deadline_mono is not None and running.kill_reason is None:
                due.append(running.deadline_mono)
            if running.term_sent_mono is not None and not running.kill_sent:
                due.append(running.term_sent_mono + self._kill_grace())
        return due

    # -- claims in, results out --------------------------------------------------------------

    def take(self, tasks: list[claims.ClaimedTask]) -> None:
        """Tasks a round claimed for this hog."""
        self._claimed(tasks)
        if self.draining or self.stopping:
            self.unclaim_all()  # claimed while the hog began to leave

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
            modes = (
                0o666 if task.stdout_pattern else self.file_mode,
                0o666 if task.stderr_pattern else self.file_mode,
            )
            key = (task.task_id, task.attempt)
            self.output_paths[key] = paths
            # The queue's own logs are one attempt's each; a user's pattern may name a shared file.
            per_attempt = (not task.stdout_pattern, not task.stderr_pattern)
            self.outputs.request(key, paths, modes, per_attempt)
            self.buffered.append(task)

    def _output_path(self, task: claims.ClaimedTask, pattern: str | None, stream: str) -> str:
        return output_path(
            self.db_path,
            pattern,
            task.cwd,
            task.task_id,
            task.attempt,
            task.name,
            stream,
            task.array_index,
            task.entry,
        )

    def cancel(self, cancelled: set[tuple[int, int]], now: float) -> None:
        """Kill the running tasks whose cancel was asked for; give back the unstarted ones."""
        if not cancelled:
            return
        for key, running in list(self.running.items()):
            if key in cancelled and running.kill_reason is None:
                log.info("%s: task %d was cancelled: killing it", self.name, running.task.task_id)
                self._terminate(running, states.REASON_CANCELLED, now)
        kept = []
        for task in self.buffered:
            if (task.task_id, task.attempt) in cancelled:
                self._unclaim(task, states.REASON_CANCELLED)
            else:
                kept.append(task)
        self.buffered = kept

    def unclaim_all(self) -> None:
        """Give back every task that has not started: buffered, or queued for a slot."""
        for task in self.buffered:
            self._unclaim(task)
        self.buffered.clear()
        for launch in self.launcher.withdraw_all():
            self._take_back(self.running[launch.key])

    def _unclaim(self, task: claims.ClaimedTask, reason: str = states.REASON_RELEASED) -> None:
        """A buffered task that will not start here goes back (or is cancelled)."""
        del self.output_paths[(task.task_id, task.attempt)]
        self._hand_back(task, reason)

    def _take_back(self, running: RunningTask, reason: str = states.REASON_RELEASED) -> None:
        """A task handed to the launcher that no slot started: freed, and handed back."""
        del self.running[running.launch.key]
        self._free(running)
        self._hand_back(running.task, reason)

    def _hand_back(self, task: claims.ClaimedTask, reason: str) -> None:
        self.outputs.discard((task.task_id, task.attempt))
        self.rounds.add_result(claims.TaskResult(task.task_id, task.attempt, reason))

    def _free(self, running: RunningTask) -> None:
        self.ledger.give_back(running.task, running.gpu_ids)
        self.rounds.room_freed()

    # -- starting ----------------------------------------------------------------------------

    def start_buffered(self) -> None:
        """Hand the launcher the buffered tasks that fit, in claim order."""
        while self.buffered and not self.draining:
            task = self.buffered[0]
            # A one-core task without GPUs may wait in the launcher's queue (a few per core), so
            # that a slot starts it the moment its task ends; others start on idle slots only.
            queue_ahead = task.cores == 1 and not task.gpus
            if not self.ledger.fits(task, queue_ahead):
                return  # first come, first served within what this hog already holds
            if not queue_ahead and self.launcher.queued:
                return  # its slots free up once the queue is taken
            latest_start = self.walltime.latest_start(task.time_limit_s)
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
        gpu_ids = self.ledger.gpus_for(task)
        launch = Launch(
            key,
            task.argv if task.argv is not None else task.command,
            task.cwd,
            self.environment.of(task, gpu_ids),
            self.output_paths.pop(key),
            task.cores,
            latest_start,
        )
        if queue_ahead:
            self.launcher.queue(launch)
        elif not self.launcher.start_on_idle(launch):
            self.output_paths[key] = launch.outputs
            return False
        self.ledger.take(task, gpu_ids)
        self.running[key] = RunningTask(task, gpu_ids, launch)
        return True

    # -- what the launcher reports -----------------------------------------------------------

    def take_events(self) -> None:
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
        self.outputs.started(event.key)
        running = self.running.get(event.key)
        if running is None:
            return  # ended already
        self.rounds.add_start(event.key[0], event.key[1], running.launch.started_at)
        if running.task.time_limit_s is not None:
            running.deadline_mono = running.launch.started_mono + running.task.time_limit_s
        if running.kill_reason is not None and running.term_sent_mono is None:
            running.signal_term(time.monotonic())  # cancelled or stopped as it started

    def _ended(self, event: Ended) -> None:
        self.outputs.started(event.key)
        running = self.running.pop(event.key)
        self._free(running)
        # What it left in the background was killed by its slot before the end was reported.
        duration = event.ended_mono - running.launch.started_mono
        self.rounds.note_duration(duration)
        result = running.result(event.exited, duration, self.stopping, self.cpu_labels)
        if self.debug:
            log.debug(
                "%s: task %d exited %s after %.3f s",
                self.name,
                result.task_id,
                result.exit_code if result.signal is None else f"signal {result.signal}",
                duration,
            )
        if result.reason == states.REASON_EXITED and _torn_down(result) and not self.stopping:
            # Killed by someone else: SLURM's scancel or time limit signals every process of
            # the job, the tasks often before the hog. Wait a moment for the hog's own signal.
            self.suspects.append((time.monotonic(), result))
        else:
            self.rounds.add_result(result)
        if not self.running and self.pids_fd >= 0 and os.fstat(self.pids_fd).st_size > PIDS_FILE_TRIM_BYTES:
            os.ftruncate(self.pids_fd, 0)  # keep the file short for a reaper; no slot writes now

    def _not_started(self, event: NotStarted) -> None:
        running = self.running[event.key]
        if event.error is None:  # taken back, or waited for a slot until too late for the walltime
            self._take_back(running, running.kill_reason or states.REASON_RELEASED)
            return
        del self.running[event.key]
        self.outputs.started(event.key)  # it failed to start: what was made for it stays, to say so
        self._free(running)
        message, result = start_failure(running.task, event.error, time.time())
        log.warning("%s: task %d %s", self.name, running.task.task_id, message)
        self.rounds.add_result(result)

    def settle_suspects(self, now: float) -> None:
        """Tasks killed from outside: given back if the hog is stopping too, else failed."""
        while self.suspects and (self.stopping or now - self.suspects[0][0] >= SUSPECT_GRACE_S):
            _, result = self.suspects.pop(0)
            if self.stopping:
                result = result._replace(reason=states.REASON_RELEASED, stderr_tail=None)
            self.rounds.add_result(result)

    # -- limits and stops --------------------------------------------------------------------

    def drain(self) -> None:
        """Start nothing more; what has not started goes back to the queue."""
        self.draining = True
        self.unclaim_all()

    def begin_stop(self) -> None:
        """The hog stops now: from here on a task that is killed goes back, with the short grace."""
        self.stopping = True

    def enforce_limits(self, now: float) -> None:
        for running in self.running.values():
            if running.kill_reason is None:
                if running.deadline_mono is not None and now >= running.deadline_mono:
                    log.info("%s: task %d passed its time limit: killing it", self.name, running.task.task_id)
                    self._terminate(running, states.REASON_TIMEOUT, now)
            else:
                running.kill_if_past_grace(now, self._kill_grace())

    def stop_all(self, now: float) -> None:
        """Give back what has not started; TERM what runs, KILL it after the grace."""
        self.unclaim_all()
        for running in list(self.running.values()):
            if running.kill_reason is None:
                self._terminate(running, states.REASON_RELEASED, now)
            else:
                running.kill_if_past_grace(now, self._kill_grace())

    def kill_everything(self) -> None:
        """KILL every task at once and wait (briefly) for their ends: the hog is going away."""
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

    def _kill_grace(self) -> float:
        return STOP_GRACE_S if self.stopping else KILL_GRACE_S

    def _terminate(self, running: RunningTask, reason: str, now: float) -> None:
        """TERM to a started task; one still queued for a slot is taken back: at once if it
        waits in the launcher, else when its slot says so (NotStarted), or, if the slot has just
        started it, signalled on its Started event."""
        running.kill_reason = reason
        launch = running.launch
        if launch.pid is not None:
            running.signal_term(now)
        elif self.launcher.withdraw(launch.key):
            self._take_back(running, reason)
        # else its slot answers: NotStarted (taken back) or Started (TERM then)


def _torn_down(result: claims.TaskResult) -> bool:
    """Ended by a signal SLURM tears a job down with: itself, or a shell whose child it killed
    (a shell exits 128+N then, and may outlive that child for a moment)."""
    if result.signal is not None:
        return result.signal in TEARDOWN_SIGNALS
    return result.exit_code is not None and result.exit_code - 128 in TEARDOWN_SIGNALS
