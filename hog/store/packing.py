"""Which waiting tasks a hog takes: highest priority first, then oldest, with one reservation.

Policy for a big task among small ones: the first candidate that fits the hog's total resources
but not its free ones reserves them. The hog then takes nothing ranked behind it except tasks that
are sure to end before the reservation could start (their time limit ends before the running
tasks' time limits free enough room: EASY backfill). Without time limits nothing is backfilled, so
the free cores wait for the big task instead of being refilled with small ones forever.
"""

from typing import NamedTuple


class Resources(NamedTuple):
    cores: int
    gpus: int
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


def reservation_start(needs: Resources, free: Resources, busy: list[Busy]) -> float | None:
    """Earliest time `needs` fits if running tasks run to their limits; None if unknowable."""
    available = free
    for item in sorted(busy, key=lambda b: float("inf") if b.ends_at is None else b.ends_at):
        if item.ends_at is None:
            return None
        available = available + item.needs
        if needs.fits_in(available):
            return item.ends_at
    return None


def choose(candidates: list[Candidate], free: Resources, busy: list[Busy], now: float) -> list[Candidate]:
    """Candidates (best first, all fitting the hog's total) to start now within `free`."""
    chosen: list[Candidate] = []
    reserved_from: float | None = None
    reserving = False
    for candidate in candidates:
        if free.empty:
            break
        if candidate.needs.fits_in(free):
            backfills = (
                candidate.time_limit_s is not None
                and reserved_from is not None
                and now + candidate.time_limit_s <= reserved_from
            )
            if not reserving or backfills:
                chosen.append(candidate)
                free = free - candidate.needs
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
