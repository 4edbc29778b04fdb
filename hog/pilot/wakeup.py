"""When a hog looks at the queue again without being asked by a clock: its doorbell, and results
worth a round of their own.

An idle hog used to claim once a second (a write transaction with its fsyncs, to find nothing)
and a result waited up to a second for its batch: a task submitted to an idle hog paid up to two
seconds before its submitter saw it end. Now:

- An idle hog (its last claim found nothing it could run) listens to the queue's doorbell
  (store/doorbell.py) every LISTEN_S, one pread of 24 bytes, and claims as soon as the WORK
  counter moves; without a bump it claims on the slow clock of IDLE_CLAIM_S (a queue written by an
  older slurm-hog, a bump NFS has not shown yet). A hog with running tasks listens too, and looks
  for cancels as soon as the CANCEL counter moves.
- A result is written at once, in a round of its own, when the hog is not in a busy stream of
  ends (no result went out in the last QUICK_GAP_S) and the lock was free at its last round
  (waited less than QUICK_LOCK_WAIT_S): a recipe's end reaches make in milliseconds, while many
  short tasks still share one transaction per QUICK_GAP_S, and a busy lock still gets batches.

On a slow filesystem a listen costs more: the interval grows so that listening takes at most
1/LISTEN_COST_SHARE of the time (a 1 ms read is listened for every 0.1 s).
"""

import time

from hog.store import doorbell

LISTEN_S = 0.05  # how often a hog listens to the doorbell while it has something to listen for
LISTEN_COST_SHARE = 100  # ... stretched so that reads take at most 1% of the time
IDLE_CLAIM_S = 5.0  # an idle hog's claims when the doorbell stays quiet
IDLE_CLAIM_DEAF_S = 1.0  # ... and when it cannot hear one (none yet, or unreadable)
QUICK_GAP_S = 0.1  # results closer than this to the last written ones wait for a batch
QUICK_LOCK_WAIT_S = 0.05  # a lock waited for longer than this is busy: batch the results


class Heard:
    """What the doorbell said since the last listen: new work, a cancel asked for."""

    __slots__ = ("cancel", "work")

    def __init__(self, work: bool = False, cancel: bool = False) -> None:
        self.work = work
        self.cancel = cancel


QUIET = Heard()


class Wakeup:
    """A hog's ear on its queue's doorbell, and its rule for writing results at once."""

    def __init__(self, doorbell_path: str) -> None:
        self.listener = doorbell.Listener(doorbell_path)
        # Read before the hog's first claim: any bump after it is news. No doorbell yet (a queue
        # never rung) counts as all zeros, so the bump that makes it is heard.
        self.seen = self.listener.read() or doorbell.SILENT
        self.interval_s = LISTEN_S
        self.next_listen_mono = 0.0
        self.results_written_mono = 0.0

    # -- the doorbell ------------------------------------------------------------------------

    def listen(self, now: float) -> Heard:
        """The counters that moved since the last listen; nothing before the interval is up."""
        if now < self.next_listen_mono:
            return QUIET
        started = time.monotonic()
        values = self.listener.read()
        cost = time.monotonic() - started
        self.interval_s = max(LISTEN_S, cost * LISTEN_COST_SHARE)
        self.next_listen_mono = now + self.interval_s
        if values is None:
            return QUIET
        previous, self.seen = self.seen, values
        return Heard(
            work=values[doorbell.WORK] != previous[doorbell.WORK],
            cancel=values[doorbell.CANCEL] != previous[doorbell.CANCEL],
        )

    def idle_claim_due(self, now: float, last_claim_mono: float) -> bool:
        """Whether an idle hog that heard nothing claims anyway: on the slow clock when it can
        hear the doorbell, every second (as before it) when it cannot."""
        every = IDLE_CLAIM_S if self.listener.hearing else IDLE_CLAIM_DEAF_S
        return now - last_claim_mono >= every

    def next_listen(self) -> float:
        return self.next_listen_mono

    # -- results -----------------------------------------------------------------------------

    def results_written(self, when_mono: float) -> None:
        self.results_written_mono = when_mono

    def write_at_once(self, now: float, lock_wait_s: float) -> bool:
        """Whether results waiting now are worth a round of their own."""
        return now - self.results_written_mono >= QUICK_GAP_S and lock_wait_s < QUICK_LOCK_WAIT_S

    def write_due(self, lock_wait_s: float) -> float:
        """When results waiting now may go in a round of their own (monotonic; infinity while
        the lock is busy: then they wait for their batch)."""
        if lock_wait_s >= QUICK_LOCK_WAIT_S:
            return float("inf")
        return self.results_written_mono + QUICK_GAP_S

    def close(self) -> None:
        self.listener.close()
