"""What a hog is told: its resources, when it must leave, and its timers; defaults written once.

The `hog` command builds these options, the monitor holds them for the hogs it starts, and the
backends write them back as the hog's command line with `to_argv`.
"""

from dataclasses import dataclass


def lease_for(heartbeat_s: float) -> float:
    """How long a hog may stay silent before others may declare it lost."""
    return 3 * heartbeat_s + 2.0


@dataclass(frozen=True)
class HogOptions:
    cores: int | None = None  # None: detected
    gpus: str | None = None  # a count or ids like 0,1; None: detected
    mem_bytes: int | None = None  # None: detected
    walltime_s: float | None = None  # leave after this long; None: from SLURM
    end_at: float | None = None  # leave by this epoch; None: from --walltime or SLURM
    margin_s: float = 300.0  # tasks without a time limit start only while more than this remains
    idle_timeout_s: float = 60.0  # leave after this long with nothing to run
    heartbeat_s: float = 30.0

    @property
    def lease_s(self) -> float:
        return lease_for(self.heartbeat_s)

    def to_argv(self) -> list[str]:
        """The `hog` command's options that give these values, in forms that parse back exactly."""
        argv: list[str] = []
        if self.cores is not None:
            argv += ["--cores", str(self.cores)]
        if self.gpus is not None:
            argv += ["--gpus", self.gpus]
        if self.mem_bytes is not None:
            argv += ["--mem", _kibibytes(self.mem_bytes)]
        if self.walltime_s is not None:
            argv += ["--walltime", seconds_argument(self.walltime_s)]
        if self.end_at is not None:
            argv += ["--end-time", repr(self.end_at)]
        argv += ["--margin", seconds_argument(self.margin_s)]
        argv += ["--idle-timeout", seconds_argument(self.idle_timeout_s)]
        argv += ["--heartbeat", seconds_argument(self.heartbeat_s)]
        return argv


def seconds_argument(seconds: float) -> str:
    """A duration as the command line takes it: digits and a point, never an exponent (1e-05)."""
    from decimal import Decimal

    return f"{Decimal(repr(float(seconds))).normalize():f}s"


def _kibibytes(size: int) -> str:
    # The command line reads a bare number as MiB (as SLURM's --mem does) and has no unit for bytes.
    return f"{size // 1024}K" if size % 1024 == 0 else f"{size / 1024!r}K"
