"""Per task name: how its runs went, what they needed, and what to ask for next time."""

from array import array
from dataclasses import dataclass, field

from hog.store import history
from hog.store.db import Database
from hog.suggest import percentile, suggested_mem_bytes, suggested_time_s


@dataclass
class NameProfile:
    """The tasks of one name (`""` for tasks without one) and their runs that ended on their own."""

    name: str
    tasks: int = 0
    done: int = 0
    retries: int = 0  # attempts that failed, timed out or were lost, and were run again
    lost: int = 0  # attempts lost with their hog
    runs: int = 0
    failed: int = 0  # runs that exited non-zero, by a signal, or timed out
    timeouts: int = 0
    runtimes_s: array = field(default_factory=lambda: array("d"))  # sorted
    peaks_bytes: array = field(default_factory=lambda: array("d"))  # sorted; runs that report one
    cpu_s: float = 0.0
    cpu_core_s: float = 0.0  # cores x runtime of the runs whose CPU time is known

    @property
    def cpu_efficiency(self) -> float | None:
        """CPU time over cores x runtime: 1.0 when every core asked for was busy throughout."""
        return self.cpu_s / self.cpu_core_s if self.cpu_core_s > 0 else None

    def runtime(self, percent: float) -> float | None:
        return percentile(self.runtimes_s, percent)

    def peak(self, percent: float) -> float | None:
        return percentile(self.peaks_bytes, percent)

    @property
    def suggested_time_s(self) -> int | None:
        return suggested_time_s(self.runtimes_s)

    @property
    def suggested_mem_bytes(self) -> int | None:
        return suggested_mem_bytes(self.peaks_bytes)


def profiles(db: Database, selection: history.Selection) -> list[NameProfile]:
    """One profile per name among the selected tasks, the most numerous first."""
    found: dict[str, NameProfile] = {}
    for name, (tasks, done, retries, lost) in history.task_tallies(db, selection).items():
        found[name] = NameProfile(name, tasks, done or 0, retries or 0, lost or 0)
    for run in history.iter_runs(db, selection):
        profile = found.get(run.name)
        if profile is None:
            profile = found[run.name] = NameProfile(run.name)
        runtime = max(0.0, run.runtime_s)
        profile.runtimes_s.append(runtime)
        profile.failed += run.failed
        profile.timeouts += run.timed_out
        if run.max_rss_kib is not None:
            profile.peaks_bytes.append(run.max_rss_kib * 1024.0)
        if run.cpu_s is not None:
            profile.cpu_s += run.cpu_s
            profile.cpu_core_s += run.cores * runtime
    for profile in found.values():
        profile.runs = len(profile.runtimes_s)
        profile.runtimes_s = array("d", sorted(profile.runtimes_s))
        profile.peaks_bytes = array("d", sorted(profile.peaks_bytes))
    return sorted(found.values(), key=lambda profile: (-profile.tasks, profile.name))
