"""What a hog is told: its resources, when it must leave, and its timers; defaults written once.

The `hog` command builds these options, the monitor holds them for the hogs it starts, and the
backends write them back as the hog's command line with `to_argv`.
"""

from dataclasses import dataclass

from hog.pools import DEFAULT_POOL

# Without --margin, tasks without a time limit start only while more than the smaller of these
# remains: a fixed 5 minutes would leave a 5-minute allocation (`srun -t 5`) nothing to run.
DEFAULT_MARGIN_S = 300.0
DEFAULT_MARGIN_SHARE = 0.1  # of the allocation


def lease_for(heartbeat_s: float) -> float:
    """How long a hog may stay silent before others may declare it lost."""
    return 3 * heartbeat_s + 2.0


def default_margin(allocation_s: float) -> float:
    """The margin of a hog whose allocation lasts `allocation_s` from its start."""
    return min(DEFAULT_MARGIN_S, max(0.0, allocation_s) * DEFAULT_MARGIN_SHARE)


@dataclass(frozen=True)
class HogOptions:
    cores: int | None = None  # None: detected
    gpus: str | None = None  # a count or ids like 0,1; None: detected
    mem_bytes: int | None = None  # None: detected
    walltime_s: float | None = None  # leave after this long; None: from SLURM
    end_at: float | None = None  # leave by this epoch; None: from --walltime or SLURM
    margin_s: float | None = None  # see Walltime.margin_s; None: default_margin of the allocation
    idle_timeout_s: float = 60.0  # leave after this long with nothing to run
    heartbeat_s: float = 30.0
    pool: str = DEFAULT_POOL  # the pool whose tasks it claims

    @property
    def lease_s(self) -> float:
        return lease_for(self.heartbeat_s)

    def to_argv(self) -> list[str]:
        """The `hog` command's options that give these values, in forms that parse back exactly
        (durations always with their unit: the hog refuses a bare number for some)."""
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
        if self.margin_s is not None:
            argv += ["--margin", seconds_argument(self.margin_s)]
        argv += ["--idle-timeout", seconds_argument(self.idle_timeout_s)]
        argv += ["--heartbeat", seconds_argument(self.heartbeat_s)]
        if self.pool != DEFAULT_POOL:
            argv += ["--pool", self.pool]
        return argv


def seconds_argument(seconds: float) -> str:
    """A duration as the command line takes it: digits and a point, never an exponent (1e-05)."""
    from decimal import Decimal

    return f"{Decimal(repr(float(seconds))).normalize():f}s"


def shown_duration(seconds: float) -> str:
    """A duration as help texts and messages show it: 5m, 30s, 4h, 1m30s."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    if seconds < 60:
        return f"{seconds:.3g}s"
    from hog.timeutil import format_duration

    return format_duration(seconds)


def _kibibytes(size: int) -> str:
    # The command line reads a bare number as MiB (as SLURM's --mem does) and has no unit for bytes.
    return f"{size // 1024}K" if size % 1024 == 0 else f"{size / 1024!r}K"
