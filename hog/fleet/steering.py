"""Stopping chosen hogs wherever they run: through the queue file first, the backend second.

A stop is asked in the hog's row (store/steering.py), which the hog reads within a heartbeat. A hog
that has not answered when its time is up (by default its lease: three heartbeats and 2 s, after
which anyone may declare it lost) is signalled instead, as SIGUSR1 (drain) or SIGTERM (stop now)
do by hand: a process on this host directly, a SLURM job through scancel.
"""

import logging
import os
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

from hog.fleet.backends import BackendError, scancel
from hog.pilot.slurm import node_name
from hog.store import states, steering
from hog.store.db import Database
from hog.store.steering import StopTarget

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often the answers are read while waiting for them
# A hog registers within seconds of its process starting; a process that started much earlier
# (or after the hog registered) is not the hog, whatever its pid.
PROCESS_START_SLACK_S = 600.0


class StopOutcome(NamedTuple):
    answered: int  # hogs that saw the request in the queue, or had ended
    signalled: int  # hogs that did not answer in time and were signalled through their backend
    cancelled: int  # hogs that had not started: cancelled
    unreachable: list[str]  # what could not be done, in words, with what to do instead
    skipped: list[tuple[int, str]]  # (id, state) of hogs that had already ended


def stop_hogs(
    db: Database,
    hog_ids: list[int] | None,
    mode: str,
    wait_s: float | None = None,
    backends: tuple[str, ...] | None = None,
    say: Callable[[str], None] = log.info,
) -> StopOutcome:
    """Ask hogs to drain or stop (steering.DRAIN, steering.NOW), wait up to `wait_s` (default:
    each hog's lease) for each to answer, and signal those that do not. `say` gets a line per hog."""
    requests = steering.request_stops(db, hog_ids, mode, backends)
    unreachable: list[str] = []
    for target in requests.cancelled:
        unreachable += _cancel_pending(target, say)
    started = time.monotonic()
    deadlines = {
        target.id: started + (target.lease_s if wait_s is None else wait_s) for target in requests.asked
    }
    waiting = {target.id: target for target in requests.asked}
    answered = signalled = 0
    while waiting:
        found = steering.answers(db, list(waiting))
        now = time.monotonic()
        for hog_id, target in list(waiting.items()):
            answer = found.get(hog_id)
            if answer is None or answer.answered:  # a row deleted meanwhile has ended too
                del waiting[hog_id]
                answered += 1
                say(_answer_text(target, answer))
            elif now >= deadlines[hog_id]:
                del waiting[hog_id]
                problem = _signal(target, answer.stop_request or mode, now - started, say)
                if problem is None:
                    signalled += 1
                else:
                    unreachable.append(problem)
        if waiting:
            time.sleep(POLL_S)
    return StopOutcome(answered, signalled, len(requests.cancelled), unreachable, requests.skipped)


def _name(target: StopTarget) -> str:
    return f"hog {target.id}" + (f" on {target.host}" if target.host else "")


def _answer_text(target: StopTarget, answer: steering.Answer | None) -> str:
    if answer is None or answer.state in states.HOG_ENDED_STATES:
        return f"{_name(target)} has left"
    if answer.stop_request == steering.NOW:
        return f"{_name(target)} is stopping: its running tasks go back to the queue"
    return f"{_name(target)} is draining: its running tasks finish, nothing new starts"


def _cancel_pending(target: StopTarget, say: Callable[[str], None]) -> list[str]:
    """A hog that had not started is cancelled in the queue; its SLURM job, if any, too."""
    if target.backend != "sbatch" or not target.backend_id:
        say(f"hog {target.id} had not started: cancelled (it leaves as it starts)")
        return []
    try:
        scancel(target.backend_id)
    except BackendError as error:
        return [f"hog {target.id} had not started and is cancelled, but its SLURM job was not: {error}"]
    say(f"hog {target.id} had not started: cancelled, and its SLURM job {target.backend_id} too")
    return []


def _signal(target: StopTarget, mode: str, waited_s: float, say: Callable[[str], None]) -> str | None:
    """Reach a hog that did not answer through its backend; None when done, else the problem."""
    number = signal.SIGTERM if mode == steering.NOW else signal.SIGUSR1
    late = f"{_name(target)} did not answer within {waited_s:.0f} s"
    if target.pid and target.host == node_name() and _is_hog_process(target):
        try:
            os.kill(target.pid, number)
        except ProcessLookupError:
            say(f"{late}, and its process {target.pid} has ended")
            return None
        except PermissionError:
            return f"{late}, and its process {target.pid} may not be signalled by you: ask its owner"
        say(f"{late}: sent {number.name} to its process {target.pid}")
        return None
    job_id = target.slurm_job_id or (target.backend_id if target.backend == "sbatch" else None)
    if job_id:
        # An sbatch hog is its job's batch shell (exec): cancelling the job stops it as SIGTERM
        # does. Another hog runs in a step of a job that may hold more: only its steps are
        # signalled.
        if target.backend == "sbatch":
            options = ("--batch", "--signal=USR1") if mode == steering.DRAIN else ()
        else:
            options = (f"--signal={number.name[3:]}",)
        try:
            scancel(job_id, *options)
        except BackendError as error:
            return f"{late}, and SLURM did not pass the signal on: {error}"
        say(f"{late}: asked SLURM (scancel {' '.join((*options, job_id))})")
        return None
    where = target.host or "its node"
    pid = target.pid if target.pid else "PID"
    return (
        f"{late}, and cannot be signalled from here: on {where}, `kill -{number.name[3:]} {pid}` "
        f"{'stops' if mode == steering.NOW else 'drains'} it"
    )


def _is_hog_process(target: StopTarget) -> bool:
    """Whether the process with the hog's pid on this host is that hog, not one that took its pid."""
    from hog.pilot.procs import process_start_ticks

    ticks = process_start_ticks(target.pid or 0)
    if not ticks:
        return False
    try:
        with open(f"/proc/{target.pid}/cmdline", "rb") as handle:
            if b"hog" not in handle.read():
                return False
        with open("/proc/stat") as handle:
            boot = next(float(line.split()[1]) for line in handle if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return False
    started = boot + int(ticks) / os.sysconf("SC_CLK_TCK")
    registered = target.started_at or target.created_at
    return target.created_at - PROCESS_START_SLACK_S <= started <= registered + 2.0
