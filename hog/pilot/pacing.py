"""How often a hog writes, and how far ahead it claims, from what its own transactions measured.

One queue file commits one write transaction at a time. On a local disk that takes a millisecond;
on NFS or Lustre 30-100 ms (fsyncs, lock round trips and lookups, measured through
scripts/slowfs.py), so one file does 10-30 transactions a second whatever the number of hogs.
A hog that writes every second among a thousand others keeps the lock's line long and its cores
idle while it waits (scripts/simulate.py: 100 hogs x 64 cores, 10 s tasks, 5 ms fsync: 29% of
cores busy, p50 lock wait 9.6 s).

So each hog measures how long its transactions hold the lock and how long it waited, and spaces
its writes so that all the hogs together keep the lock busy at most TARGET_LOCK_LOAD of the time:
every `interval_s` = hogs x hold time / TARGET_LOCK_LOAD, at least the hog's flush interval (a
lone hog still writes its results within a second) and at most LONGEST_WRITE_SPACING_S (10 min):
between writes the hog beats a file of its own, outside the lock (hog/store/beats.py), so its
lease no longer bounds how far apart its writes are. A hog that cannot write its beat file keeps
its writes within half its lease, as before (one that waits in line as long again still beats in
time). Results and starts wait for the next write as long as that; claims reach far enough ahead
(`horizon_s`) to keep the cores busy until the write after next.

That share is open-loop: it counts this hog's writes and hold alone. Measured at a thousand
hogs (scripts/simulate.py, 60 s tasks, 5 ms fsync), the lock was busy all the time, not 60%:
claims made between paced writes, and holds that grow faster than each hog's running mean (the
holder waits for a CPU as well as for the filesystem), left a line of 100 s. So the wait in line
closes the loop: a hog whose write waited longer than TARGET_WAIT_S stretches its spacing (up to
twice per write), and one that waited little eases it back. Every hog sees the same line, so
together they settle where the line stays short, within the same 10-minute bound.

Each spacing is drawn at random below that bound (SPREAD): with one period, hogs that met in line
once meet there at every write. And hogs that started together would still write in waves for
many spacings (draws between half and all of the bound spread them slowly), so a hog's first
spacing at a new scale is drawn as if it had been writing all along (`_equilibrium_draw`).
"""

import math
import random

from hog.store.beats import LONGEST_WRITE_SPACING_S

TARGET_LOCK_LOAD = 0.6  # of the lock's time that all the hogs' writes may take together
SMOOTHING = 0.2  # weight of the newest measurement in the running means
# Tasks a hog may hold ahead when its claims are spaced by the lock (128 node-fulls of 64 cores:
# 10 s tasks for more than the longest spacing of its writes; a one-core hog on a slow disk may
# hold as many one-second tasks' worth of short ones).
PACED_MAX_TASKS = 8192
PREFETCH_HORIZON_S = 0.25  # claim ahead for about this long when tasks are very short
# Unstarted tasks a hog may hold, shared among the hogs on the queue: a round costs a few fsyncs
# however many tasks it carries, so a hog alone takes tiny tasks in few big rounds; among many,
# each one's wait for the lock grows with the others' rounds, so those stay short...
PREFETCH_MAX_TASKS = 256
PREFETCH_MIN_FACTOR = 8  # ... but a hog may always hold this many node-fulls
TARGET_WAIT_S = 0.5  # a paced hog's wait in line for the lock it keeps below (goal: p99 under 5 s)
EASE = 0.9  # a write that waited under half TARGET_WAIT_S shortens the stretch by this factor
MOST_STRETCH = 2.0  # per write: how much one long wait may lengthen the spacing
# A paced hog hears the doorbell this often (an idle or unpaced one: doorbell.LISTEN_S): it claims
# only with its paced writes, so it listens for cancels alone; 1,000 hogs listening every 10 ms
# would read the doorbell 100,000 times a second, and each listen is a turn of the hog's loop.
PACED_LISTEN_S = 1.0
# Each paced spacing is drawn between (1 - SPREAD) and 1 of the hog's interval (whose mean is its
# share): hogs that started together, or that reached the 10-minute bound, otherwise keep one
# period and meet in line at every write (1,000 hogs x 64 cores of 60 s tasks, 5 ms fsync: the
# lock busy 41% of the time, yet a line of p50 19 s, p99 56 s). Random timers lose the phase.
SPREAD = 0.5


class Pacing:
    """Running means of this hog's lock hold and wait times, and what follows from them."""

    def __init__(self, lease_s: float, flush_interval_s: float, rng: random.Random | None = None) -> None:
        self.lease_s = lease_s
        self.flush_interval_s = flush_interval_s
        self.rng = rng or random.Random()
        self.draw = 1.0  # this spacing's share of the interval, drawn at each write
        self.hold_s: float | None = None  # the lock held by one of this hog's transactions
        self.wait_s = 0.0  # waited in line for the lock
        self.hogs_running = 1
        self.beating = True  # its beat file can be written: writes may be further apart than the lease
        self.stretch = 1.0  # the spacing's factor over the open-loop share, from the waits seen
        # The intervals, asked several times on every turn of the hog's loop, change only with a
        # write's measurements (observe drops them), the hogs running or the beat file: kept
        # with those two, and made again when either differs.
        self._intervals: tuple[int, bool, float, float] | None = None  # hogs, beating; bound, spacing
        # The open-loop bound when this hog last drew its phase (None: not paced yet), and since
        # then the lowest: a bound twice that is a new scale, drawn afresh.
        self._phased_bound_s: float | None = None

    def observe(self, hold_s: float, wait_s: float) -> None:
        """One of this hog's write transactions held the lock `hold_s` after `wait_s` in line."""
        self._intervals = None
        self.draw = self.rng.uniform(1.0 - SPREAD, 1.0)
        if self.hold_s is None:
            # The first write waits behind every hog that started with it: no measure of the pace.
            self.hold_s, self.wait_s = hold_s, wait_s
            return
        self.hold_s += SMOOTHING * (hold_s - self.hold_s)
        self.wait_s += SMOOTHING * (wait_s - self.wait_s)
        share_s = self._share_s()
        if share_s <= self.flush_interval_s:
            self.stretch = 1.0  # few hogs or a fast disk: writes as before
        elif wait_s > TARGET_WAIT_S:
            # Past the longest spacing a longer stretch changes nothing but the time it takes to ease.
            most = max(1.0, self.longest_interval_s() / share_s)
            self.stretch = min(most, self.stretch * min(MOST_STRETCH, wait_s / TARGET_WAIT_S))
        elif wait_s < TARGET_WAIT_S / 2:
            self.stretch = max(1.0, self.stretch * EASE)

    def interval_s(self) -> float:
        """How long results, starts and the heartbeat may wait for the next write."""
        return self._spacings()[3]

    def bound_s(self) -> float:
        """The longest the next paced spacing may be (its draw at 1)."""
        return self._spacings()[2]

    def _spacings(self) -> tuple[int, bool, float, float]:
        kept = self._intervals
        if kept is not None and kept[0] == self.hogs_running and kept[1] == self.beating:
            return kept
        if self.hold_s is None:
            bound = self.flush_interval_s
        else:
            # Drawn spacings average (1 - SPREAD / 2) of the bound: the bound is the share over that.
            share = self._share_s() / (1.0 - SPREAD / 2)
            bound = self._within_limits(share * self.stretch)
            self._rephase(self._within_limits(share))
        spacing = bound if bound <= self.flush_interval_s else max(self.flush_interval_s, bound * self.draw)
        self._intervals = (self.hogs_running, self.beating, bound, spacing)
        return self._intervals

    def _within_limits(self, spacing_s: float) -> float:
        return min(max(self.flush_interval_s, spacing_s), self.longest_interval_s())

    def _rephase(self, open_bound_s: float) -> None:
        """Draw this spacing from the draws' equilibrium when the hog's open-loop bound (its share,
        without the waits' stretch) is new: its first paced write, or twice the lowest since the
        last such draw (hogs starting around it, longer holds). Hogs that started within two
        minutes of each other and drew each spacing between half and all of the bound wrote in
        waves: 1,000 hogs, 10 s tasks, model-lustre, writes 15 minutes after the start came 3.3 a
        second against 2.1 in the steady state, past what the lock commits (3 a second), and
        waited p99 8-17 s."""
        if open_bound_s <= self.flush_interval_s:
            self._phased_bound_s = None  # unpaced: paced again, it draws a phase again
            return
        if self._phased_bound_s is not None and open_bound_s <= 2 * self._phased_bound_s:
            self._phased_bound_s = min(self._phased_bound_s, open_bound_s)
            return
        self._phased_bound_s = open_bound_s
        self.draw = self._equilibrium_draw()

    def _equilibrium_draw(self) -> float:
        """A share of the bound, drawn as the time left to the next write of a hog that has drawn
        its spacings uniformly between (1 - SPREAD) and 1 of the bound all along: its density is
        the chance that a spacing lasts longer (the forward recurrence time of a renewal process),
        so hogs that each draw it write at the steady rate from their first spacing on."""
        low = 1.0 - SPREAD
        mean = (1.0 + low) / 2
        u = self.rng.uniform(0.0, 1.0)
        if u <= low / mean:
            return u * mean
        return 1.0 - math.sqrt(max(0.0, SPREAD * SPREAD - 2 * SPREAD * (u * mean - low)))

    def _share_s(self) -> float:
        """The open-loop spacing: this hog's share of the lock's time at TARGET_LOCK_LOAD."""
        return self.hogs_running * (self.hold_s or 0.0) / TARGET_LOCK_LOAD

    def longest_interval_s(self) -> float:
        return max(self.flush_interval_s, LONGEST_WRITE_SPACING_S if self.beating else self.lease_s / 2)

    def horizon_s(self, floor_s: float) -> float:
        """How long the tasks claimed ahead must last, at least `floor_s`: until a claim made now
        lands (its wait in line and its commit), after the next paced write if writes are paced;
        twice over, as a claim is made when half of what is held ahead is left. Unpaced, claims
        are still no more frequent than the hog's share of the lock: four one-core hogs of 10 ms
        tasks on a 20 ms-fsync disk (~0.12 s a transaction) each claimed every third of a second,
        keeping the lock busy all the time and their cores waiting on it."""
        lands_in_s = self.wait_s + (self.hold_s or 0.0)
        if self.paced:
            return 2 * (self.bound_s() + lands_in_s)
        return max(floor_s, 2 * lands_in_s, 2 * self._share_s())

    @property
    def paced(self) -> bool:
        """Do the hogs together keep the lock busy enough for writes to be spaced out?"""
        return self.bound_s() > self.flush_interval_s


def prefetch_factor(
    mean_duration_s: float, hogs_running: int, cores: int, horizon_s: float = PREFETCH_HORIZON_S
) -> int:
    """How many node-fulls of tasks a hog holds ahead of its free cores: about a quarter second
    of work, within its share of PREFETCH_MAX_TASKS, never capped below PREFETCH_MIN_FACTOR.
    A longer `horizon_s` (the lock busy: Pacing.horizon_s) holds enough to last it, up to
    PACED_MAX_TASKS, and at least one node-full."""
    share = PREFETCH_MAX_TASKS // (max(1, hogs_running) * cores)
    cap = max(PREFETCH_MIN_FACTOR, share)
    wanted = horizon_s / max(mean_duration_s, 1e-4)
    if horizon_s > PREFETCH_HORIZON_S:
        return min(max(cap, PACED_MAX_TASKS // max(1, cores)), math.ceil(wanted))
    return min(cap, int(wanted))
