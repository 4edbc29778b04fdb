"""How many hogs the waiting tasks can use, counting every resource they ask for.

A queue of 1-GPU tasks on hogs of 2 GPUs and 64 cores keeps one hog busy per two tasks, not per 64:
each resource asks for its own number of hogs, and the monitor starts the largest.
"""

import math
import os
from fractions import Fraction
from typing import NamedTuple

from hog.gpushare import GPU_UNITS
from hog.pilot.options import HogOptions
from hog.pilot.resources import parse_gpus
from hog.store.db import Database
from hog.store.packing import Resources


class HogSize(NamedTuple):
    cores: int
    gpus: int | None  # None: not known yet (no hog has said, no --gpus): not counted
    mem_bytes: int | None  # likewise


def hog_size(db: Database, backend: str, options: HogOptions) -> HogSize:
    """The size of the hogs the monitor starts: the --cores, --gpus and --mem it passes on, else
    what the last hog of its pool and backend reported, else (cores) this machine's."""
    row = db.query_one(
        "SELECT cores, gpus, mem_bytes FROM hogs WHERE backend = ? AND pool = ? AND cores IS NOT NULL"
        " ORDER BY id DESC LIMIT 1",
        (backend, options.pool),
    )
    cores, gpu_ids, mem_bytes = row or (None, None, None)
    if options.gpus is not None:
        gpus: int | None = len(parse_gpus(options.gpus))
    elif row:
        gpus = len([gpu for gpu in (gpu_ids or "").split(",") if gpu])
    else:
        gpus = None
    return HogSize(options.cores or cores or os.cpu_count() or 1, gpus, options.mem_bytes or mem_bytes)


def hogs_for(needs: list[tuple[Resources, int]], size: HogSize) -> int:
    """How many hogs of `size` tasks with these needs (each with its count) can keep busy."""
    return math.ceil(hog_fulls(needs, size))


def hog_fulls(needs: list[tuple[Resources, int]], size: HogSize) -> Fraction:
    """How many hogs of `size` tasks with these needs (each with its count) fill: 2.5 keeps two
    hogs full and a third half busy.

    A task counts for its share of a hog filled with tasks like it: a 1-GPU task for half of a
    2-GPU hog, a 0.5-GPU task for a quarter of it, a 40-core task for a whole 64-core one (no
    second fits beside it). The answer is the most that any one resource asks for. A task larger
    than a hog counts for nothing: more hogs of this size cannot run it. Each resource is counted
    here and only here: the GPUs the tasks need are one total against the hog's, in units.
    """
    gpu_units = None if size.gpus is None else size.gpus * GPU_UNITS  # tasks' GPUs are in units
    capacity = (size.cores, gpu_units, size.mem_bytes)
    totals = [Fraction(0)] * len(capacity)
    for task, count in needs:
        counted = [
            (index, have // need)
            for index, (need, have) in enumerate(zip(task, capacity, strict=True))
            if need and have is not None
        ]
        if any(per_hog == 0 for _, per_hog in counted):
            continue
        for index, per_hog in counted:
            totals[index] += Fraction(count, per_hog)
    return max(totals)
