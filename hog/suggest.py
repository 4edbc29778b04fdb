"""Resource requests suggested from past runs: a percentile, a margin, and SLURM's round values.

The rule, said in `stats --help` and the README: the 99th percentile (nearest rank) of the runs
that ended, times 1.5, rounded up to the next value of a ladder a person would type.
"""

import math
from collections.abc import Sequence

from hog.timeutil import split_duration

PERCENTILE = 99
MARGIN = 1.5
# Time limits in seconds: 1, 2, 5, 10, 15, 20, 30, 45 minutes; 1, 1.5, 2, 3, 4, 6, 8, 12 hours;
# then whole days.
TIME_LADDER_S = (
    60,
    120,
    300,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
    5400,
    7200,
    10800,
    14400,
    21600,
    28800,
    43200,
)
MIB = 1 << 20
GIB = 1 << 30
MEM_FLOOR = 64 * MIB  # a request below this saves nothing on any node


def percentile(ordered: Sequence[float], percent: float) -> float | None:
    """Nearest rank: the smallest value with at least `percent` % of the values at or below it."""
    if not ordered:
        return None
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def suggested_time_s(ordered_runtimes_s: Sequence[float]) -> int | None:
    """Seconds to ask for: p99 x 1.5 rounded up on TIME_LADDER_S, then to whole days."""
    p99 = percentile(ordered_runtimes_s, PERCENTILE)
    if p99 is None:
        return None
    wanted = p99 * MARGIN
    for step in TIME_LADDER_S:
        if wanted <= step:
            return step
    return math.ceil(wanted / 86400) * 86400


def suggested_mem_bytes(ordered_peaks_bytes: Sequence[float]) -> int | None:
    """Bytes to ask for: p99 x 1.5, at least 64M, rounded up to a power of two MiB below 1G and
    to whole GiB from there."""
    p99 = percentile(ordered_peaks_bytes, PERCENTILE)
    if p99 is None:
        return None
    wanted = max(MEM_FLOOR, p99 * MARGIN)
    if wanted <= GIB:
        return MIB << math.ceil(math.log2(wanted / MIB) - 1e-9)
    return math.ceil(wanted / GIB) * GIB


def slurm_time(seconds: int) -> str:
    """SLURM's own forms, which `submit --time` reads too: M:SS, H:MM:SS, D-HH:MM:SS."""
    days, hours, minutes, secs = split_duration(seconds)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def slurm_mem(size: int) -> str:
    """As --mem takes it: whole GiB as G, else MiB as M."""
    if size % GIB == 0:
        return f"{size // GIB}G"
    return f"{math.ceil(size / MIB)}M"
