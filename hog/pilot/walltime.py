"""When a hog must leave, and what may still start before then."""

import time
from dataclasses import dataclass

from hog.errors import UsageError
from hog.pilot import slurm
from hog.pilot.options import (
    DEFAULT_MARGIN_S,
    DEFAULT_MARGIN_SHARE,
    HogOptions,
    default_margin,
    shown_duration,
)

STOP_LEAD_S = 5.0  # stop this long before the allocation ends: grace plus the last commit


@dataclass(frozen=True)
class Walltime:
    end_by: float | None  # epoch when the allocation ends; None: no walltime
    margin_s: float  # tasks without a time limit start only while more than this remains
    source: str = ""  # where end_by comes from, for messages: "--walltime 4m", "SLURM job 12"

    @classmethod
    def of(cls, options: HogOptions, slurm_job_id: str | None, now: float | None = None) -> "Walltime":
        """From --end-time, else --walltime, else the SLURM job's time limit; the margin from
        --margin, else the smaller of 5 minutes and a tenth of the time from `now` to the end."""
        now = time.time() if now is None else now
        end_by, source = options.end_at, f"--end-time {options.end_at!r}"
        if end_by is None and options.walltime_s is not None:
            end_by, source = now + options.walltime_s, f"--walltime {shown_duration(options.walltime_s)}"
        if end_by is None and slurm_job_id:
            end_by, source = slurm.job_end_time(slurm_job_id), f"the time limit of SLURM job {slurm_job_id}"
        margin_s = options.margin_s
        if margin_s is None:
            margin_s = DEFAULT_MARGIN_S if end_by is None else default_margin(end_by - now)
        return cls(end_by, margin_s, source if end_by is not None else "")

    def problem(self, now: float | None = None) -> str | None:
        """Why a hog with this walltime could run no task without a time limit, or None: its
        allocation is over, or its margin is not shorter than the time it has."""
        if self.end_by is None:
            return None
        left = self.end_by - (time.time() if now is None else now)
        if left <= 0:
            return f"its allocation has ended ({self.source}): give a later --end-time, or --walltime"
        if self.margin_s < left:
            return None
        return (
            f"--margin {shown_duration(self.margin_s)} is not shorter than the {shown_duration(left)} "
            f"its allocation has ({self.source}), so no task without --time could start: give a shorter "
            f"--margin, or none (the default is the smaller of {shown_duration(DEFAULT_MARGIN_S)} and "
            f"{DEFAULT_MARGIN_SHARE:.0%} of the allocation)"
        )

    def seconds_left(self) -> float | None:
        """Until the hog must stop (before its allocation ends)."""
        if self.end_by is None:
            return None
        return self.end_by - STOP_LEAD_S - time.time()

    def unlimited_allowed(self) -> bool:
        """May a task without a time limit still start?"""
        if self.end_by is None:
            return True
        return self.end_by - time.time() > max(self.margin_s, STOP_LEAD_S)

    def latest_start(self, time_limit_s: float | None) -> float | None:
        """The epoch after which a task must no longer start: with --time, it could not end
        before the hog must stop; without, less than --margin would remain. The loop checks it
        before handing the task over, the slot again as it starts it."""
        if self.end_by is None:
            return None
        if time_limit_s is None:
            return self.end_by - max(self.margin_s, STOP_LEAD_S)
        return self.end_by - STOP_LEAD_S - time_limit_s


def check_options(options: HogOptions, now: float | None = None) -> None:
    """Refuse hog options that cannot work on any node (UsageError): the `hog` and `monitor`
    commands ask before anything starts; the hog asks Walltime.problem again once SLURM has
    told it when its job ends."""
    if options.walltime_s is not None and options.end_at is not None:
        raise UsageError("--walltime and --end-time both say when to leave: give one of them")
    now = time.time() if now is None else now
    problem = Walltime.of(options, None, now).problem(now)
    if problem is not None:
        raise UsageError(problem)
