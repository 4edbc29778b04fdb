"""When a hog must leave, and what may still start before then."""

import time
from dataclasses import dataclass

from hog.pilot import slurm
from hog.pilot.options import HogOptions

STOP_LEAD_S = 5.0  # stop this long before the allocation ends: grace plus the last commit


@dataclass(frozen=True)
class Walltime:
    end_by: float | None  # epoch when the allocation ends; None: no walltime
    margin_s: float  # tasks without a time limit start only while more than this remains

    @classmethod
    def of(cls, options: HogOptions, slurm_job_id: str | None) -> "Walltime":
        """From --end-time, else --walltime, else the SLURM job's time limit."""
        end_by = options.end_at
        if end_by is None and options.walltime_s is not None:
            end_by = time.time() + options.walltime_s
        if end_by is None and slurm_job_id:
            end_by = slurm.job_end_time(slurm_job_id)
        return cls(end_by, options.margin_s)

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
