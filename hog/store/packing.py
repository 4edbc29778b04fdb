"""Which waiting tasks a hog takes: highest priority first, then oldest, with one reservation.

Policy for a big task among small ones: the first candidate that fits the hog's total resources
but not its free ones reserves them. The hog then takes nothing ranked behind it except tasks that
are sure to end before the reservation could start (their time limit ends before the running
tasks' time limits free enough room: EASY backfill). Without time limits nothing is backfilled, so
the free cores wait for the big task instead of being refilled with small ones forever.

GPUs are counted in integer units (hog.gpushare.GPU_UNITS per device), so that shares of one
(--gpus 0.5) add up exactly. A total of free units is not enough to say that a task fits: two
half-free devices hold no whole GPU. So, given the free units of each device, a task is also
placed on devices (`place`): whole GPUs on wholly free devices, a share on the fullest device
it fits on, which keeps whole devices free for whole-GPU tasks.
"""

from collections.abc import Sequence

from hog.gpushare import GPU_UNITS
from hog.records import NamedTuple

# A submission's GPUs in units, from its columns (devices, and k of a 1/k share).
SUBMISSION_GPU_UNITS = (
    f"CASE WHEN s.gpu_split IS NULL THEN s.gpus * {GPU_UNITS} ELSE {GPU_UNITS} / s.gpu_split END"
)


class Resources(NamedTuple):
    cores: int
    gpus: int  # GPU units: GPU_UNITS per device
    mem_bytes: int

    def fits_in(self, other: "Resources") -> bool:
        return self.cores <= other.cores and self.gpus <= other.gpus and self.mem_bytes <= other.mem_bytes

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.cores + other.cores, self.gpus + other.gpus, self.mem_bytes + other.mem_bytes)

    def __sub__(self, other: "Resources") -> "Resources":
        return Resources(self.cores - other.cores, self.gpus - other.gpus, self.mem_bytes - other.mem_bytes)

    @property
    def empty(self) -> bool:
        return self.cores <= 0 and self.gpus <= 0


class Candidate(NamedTuple):
    key: int
    needs: Resources
    time_limit_s: float | None


class Busy(NamedTuple):
    """Resources held by a running task until `ends_at` (None: no time limit, end unknown)."""

    needs: Resources
    ends_at: float | None


def place(free: Sequence[int], units: int) -> list[int] | None:
    """The devices (indices into `free`, each device's free units) a task of `units` takes; None
    if it does not fit. Whole GPUs take the first wholly free devices; a share takes the device
    with the least room that still holds it (first of equals): 0.5, 0.5, 0.5, 0.5 on two devices
    go two to each, and a share never splits a free device while a used one has room."""
    if units == 0:
        return []
    if units % GPU_UNITS == 0:
        wanted = units // GPU_UNITS
        devices = [index for index, room in enumerate(free) if room == GPU_UNITS][:wanted]
        return devices if len(devices) == wanted else None
    best = None
    for index, room in enumerate(free):
        if room >= units and (best is None or room < free[best]):
            best = index
    return None if best is None else [best]


def per_device(units: int, devices: int) -> int:
    """Units a task of `units` holds on each of its `devices`: all of each for whole GPUs."""
    return units // devices if devices else 0


def reservation_start(needs: Resources, free: Resources, busy: list[Busy]) -> float | None:
    """Earliest time `needs` fits if running tasks run to their limits; None if unknowable.

    By totals: which device each running task frees is not looked at (an estimate, as the
    time limits themselves are)."""
    available = free
    for item in sorted(busy, key=lambda b: float("inf") if b.ends_at is None else b.ends_at):
        if item.ends_at is None:
            return None
        available = available + item.needs
        if needs.fits_in(available):
            return item.ends_at
    return None


def choose(
    candidates: list[Candidate],
    free: Resources,
    busy: list[Busy],
    now: float,
    devices: Sequence[int] | None = None,
) -> list[Candidate]:
    """Candidates (best first, all fitting the hog's total) to start now within `free`, and
    within `devices` (the free units of each GPU; None: GPUs by their total only)."""
    rooms = None if devices is None else list(devices)
    chosen: list[Candidate] = []
    reserved_from: float | None = None
    reserving = False
    for candidate in candidates:
        if free.empty:
            break
        units = candidate.needs.gpus
        placed = [] if rooms is None or not units else place(rooms, units)
        if placed is not None and candidate.needs.fits_in(free):
            backfills = (
                candidate.time_limit_s is not None
                and reserved_from is not None
                and now + candidate.time_limit_s <= reserved_from
            )
            if not reserving or backfills:
                chosen.append(candidate)
                free = free - candidate.needs
                for index in placed:
                    rooms[index] -= per_device(units, len(placed))  # type: ignore[index]
            continue
        if not reserving:
            reserving = True
            started = [
                Busy(c.needs, None if c.time_limit_s is None else now + c.time_limit_s) for c in chosen
            ]
            reserved_from = reservation_start(candidate.needs, free, busy + started)
            if reserved_from is None:
                break
    return chosen
