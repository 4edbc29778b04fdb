"""When a hog looks at the queue again without being asked by a clock: its doorbell, and results
worth a round of their own.

An idle hog used to claim once a second (a write transaction with its fsyncs, to find nothing)
and a result waited up to a second for its batch: a task submitted to an idle hog paid up to two
seconds before its submitter saw it end. Now:

- An idle hog (its last claim found nothing it could run) listens to the queue's doorbell
  (store/doorbell.py) every 10 ms, one pread of 544 bytes, and claims as soon as the WORK
  counter moves; without a bump it claims on the slow clock of IDLE_CLAIM_S (a queue written by an
  older slurm-hog, a bump NFS has not shown yet). A hog with running tasks listens too, and looks
  for cancels as soon as the CANCEL counter moves.
- A result is written at once, in a round of its own, when the hog is not in a busy stream of
  ends (no result went out in the last `quick_gap_s`: ten times what its writes hold the lock,
  from 10 ms on a local disk to QUICK_GAP_MAX_S) and the lock was free at its last round (waited
  less than QUICK_LOCK_WAIT_S): a recipe's end reaches make in milliseconds, while many short
  tasks still share a transaction, writes take at most a tenth of the hog's time, and a busy lock
  still gets batches.

On a slow filesystem a listen costs more: the interval grows so that listening takes at most 1%
of the time (doorbell.Listener: a 1 ms read is listened for every 0.1 s).
"""

from hog.store import doorbell

IDLE_CLAIM_S = 5.0  # an idle hog's claims when the doorbell stays quiet
IDLE_CLAIM_DEAF_S = 1.0  # ... and when it cannot hear one (none yet, or unreadable)
QUICK_GAP_MIN_S = 0.01  # results closer than the gap to the last written ones wait for a batch
QUICK_GAP_MAX_S = 0.1
QUICK_GAP_HOLDS = 10  # ... the gap: this many times the lock hold of the hog's writes
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
        self.next_listen_mono = 0.0
        self.results_written_mono = 0.0

    # -- the doorbell ------------------------------------------------------------------------

    def listen(self, now: float, at_least_s: float = 0.0) -> Heard:
        """The counters that moved since the last listen; nothing before the interval is up, and
        the next listen `at_least_s` from now."""
        if now < self.next_listen_mono:
            return QUIET
        values = self.listener.read()
        self.next_listen_mono = now + max(self.listener.interval_s, at_least_s)
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

    def write_at_once(self, now: float, lock_wait_s: float, hold_s: float | None) -> bool:
        """Whether results waiting now are worth a round of their own, given how long the hog
        last waited for the lock and how long its writes hold it."""
        return now >= self.write_due(lock_wait_s, hold_s)

    def write_due(self, lock_wait_s: float, hold_s: float | None) -> float:
        """When results waiting now may go in a round of their own (monotonic; infinity while
        the lock is busy: then they wait for their batch)."""
        if lock_wait_s >= QUICK_LOCK_WAIT_S:
            return float("inf")
        return self.results_written_mono + quick_gap_s(hold_s)


def quick_gap_s(hold_s: float | None) -> float:
    """How far apart results go in rounds of their own, for writes that hold the lock `hold_s`
    (None: not measured yet)."""
    if hold_s is None:
        return QUICK_GAP_MAX_S
    return min(QUICK_GAP_MAX_S, max(QUICK_GAP_MIN_S, QUICK_GAP_HOLDS * hold_s))

    def close(self) -> None:
        self.listener.close()
