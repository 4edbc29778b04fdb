"""One attempt of a task on this hog: handed to the launcher, signalled, and how it ended."""

import signal
from dataclasses import dataclass

from hog.pilot.launcher import Launch
from hog.pilot.procs import Exited, kill_group, read_tail
from hog.store import claims, states


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

    def signal_term(self, now: float) -> None:
        pid = self.launch.pid
        assert pid is not None
        self.term_sent_mono = now
        kill_group(pid, signal.SIGCONT)
        kill_group(pid, signal.SIGTERM)

    def kill_if_past_grace(self, now: float, grace_s: float) -> None:
        """SIGKILL to a task that outlived its SIGTERM by the grace."""
        pid = self.launch.pid
        if self.term_sent_mono is None or self.kill_sent or pid is None:
            return
        if now - self.term_sent_mono >= grace_s:
            kill_group(pid, signal.SIGKILL)
            self.kill_sent = True

    def result(
        self, exited: Exited, duration_s: float, hog_stopping: bool, cpu_labels: list[str]
    ) -> claims.TaskResult:
        """How it ended, to be recorded; `cpu_labels` name the hog's slots."""
        task = self.task
        launch = self.launch
        reason = self.kill_reason or states.REASON_EXITED
        succeeded = exited.exit_code == 0 and reason == states.REASON_EXITED
        if hog_stopping and not succeeded:
            # Killed (by us or by SLURM's TERM to the whole step) because the hog stops.
            reason = states.REASON_RELEASED
        tail = None
        if not succeeded and reason != states.REASON_RELEASED:
            tail = read_tail(launch.outputs[1], claims.STDERR_TAIL_BYTES) or None
        slots = launch.slots
        return claims.TaskResult(
            task.task_id,
            task.attempt,
            reason,
            started_at=launch.started_at,
            ended_at=launch.started_at + duration_s,
            exit_code=exited.exit_code,
            signal=exited.signal,
            max_rss_kib=exited.max_rss_kib,
            cpu_user_s=exited.cpu_user_s,
            cpu_system_s=exited.cpu_system_s,
            stderr_tail=tail,
            cores=cpu_labels[slots[0]] if len(slots) == 1 else ",".join(cpu_labels[slot] for slot in slots),
            gpus=",".join(self.gpu_ids) or None,
        )


def start_failure(task: claims.ClaimedTask, error: OSError, now: float) -> tuple[str, claims.TaskResult]:
    """A task that could not start (its command or folder missing, its output files refused):
    what to say in the log, and its result."""
    message = f"could not start: {error.strerror or error}" + (
        f": {error.filename}" if error.filename else ""
    )
    result = claims.TaskResult(
        task.task_id,
        task.attempt,
        states.REASON_START_FAILED,
        started_at=now,
        ended_at=now,
        exit_code=127,
        stderr_tail=message,
    )
    return message, result
