"""The hog's rounds with the database: results, heartbeat, claims, cancels and healing.

The loop gives the database thread (background.py) one Round at a time and goes on starting and
reaping tasks while it waits for the lock and commits. This room keeps what waits to be written
(results) and the clocks that say when a round is due, builds the claim request, and books an
ended round's outcome; the loop hands the tasks it claimed and the cancels it found to its tasks.
"""

import enum
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from hog.errors import DatabaseError, DatabaseGoneError
from hog.pilot.background import DatabaseThread, Outcome
from hog.pilot.healing import heal
from hog.pilot.ledger import Ledger
from hog.pilot.options import lease_for
from hog.pilot.pacing import PACED_LISTEN_S, PREFETCH_HORIZON_S, Pacing, prefetch_factor
from hog.pilot.usage import IdleClock
from hog.pilot.wakeup import QUIET, Wakeup
from hog.pilot.walltime import Walltime
from hog.store import beats, claims
from hog.store.db import Database
from hog.store.packing import Busy, Resources
from hog.store.usage import HogUsage

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0  # longest a result or a start waits to be committed while the lock is free
RESULT_BATCH_MAX = 512
IDLE_POLL_S = 1.0  # how often a hog blocked by a reservation looks again (an idle one: wakeup.py)
CANCEL_POLL_S = 2.0  # how often a hog looks for cancelled tasks between transactions
# All the hogs on a queue together look for lost hogs about this often per heartbeat: each look
# is a read (and a beat file read per hog past its row's lease), and one healer is enough.
HEALS_PER_HEARTBEAT = 8
DB_RETRY_S = 2.0
FINAL_WRITE_TRIES = 5


class Holdings(Protocol):
    """The hog's tasks as a claim sees them (tasks.Tasks)."""

    @property
    def unstarted(self) -> Sequence[claims.ClaimedTask]:
        """Claimed, not handed to the launcher yet."""
        ...

    def busy(self) -> list[Busy]:
        """What the unstarted and the running tasks hold, and until when."""
        ...

    def any_running(self) -> bool: ...


@dataclass
class Round:
    """One job of the database thread: what it writes and asks, and when it was given."""

    results: list[claims.TaskResult]
    oldest_result_mono: float | None
    starts: dict[tuple[int, int], tuple[claims.TaskStart, float]]
    claim: claims.ClaimRequest | None
    exchange: bool  # write results and the heartbeat (and claim, if `claim`)
    poll_cancels: bool  # only look for cancels (when there is no exchange)
    heal: bool
    given_mono: float
    warn_after_s: float
    usage: HogUsage | None = None  # the idle clock's sums, written with the heartbeat


@dataclass
class RoundOutcome:
    given_up: bool = False  # the hog can write nothing any more: it must kill its tasks and leave
    claimed: list[claims.ClaimedTask] = field(default_factory=list)
    queue_has_work: bool = False
    cancel_requested: set[tuple[int, int]] = field(default_factory=set)
    lock_held_s: float | None = None  # by its write transaction, after waiting lock_wait_s
    lock_wait_s: float = 0.0
    reaped: list[int] = field(default_factory=list)
    hogs_running: int = 1
    stop_request: str | None = None  # `hogs stop`: steering.DRAIN or steering.NOW


class LastWrite(enum.Enum):
    """How the hog's last round (its remaining results and its goodbye) went."""

    WRITTEN = "written"
    NOT_WRITTEN = "not written"  # the lock stayed taken, or the database kept failing
    GIVEN_UP = "given up"  # the database is gone, or the hog was declared lost meanwhile


def first_claim(ledger: Ledger, walltime: Walltime, bundle: str | None) -> claims.ClaimRequest:
    """The claim a hog makes as it registers (claims.start_hog_claiming): its idle node's worth,
    none ahead, as the lengths of the tasks are not known yet."""
    devices = ledger.claimable_devices(0, ()) if ledger.total.gpus else None
    return _request(ledger, walltime, bundle, ledger.free(), [], devices, 0)


def _request(
    ledger: Ledger,
    walltime: Walltime,
    bundle: str | None,
    free: Resources,
    busy: list[Busy],
    devices: tuple[int, ...] | None,
    held_cores: int,
) -> claims.ClaimRequest:
    """A claim for `free` (the idle cores and those of the tasks it may hold ahead), at least
    what the idle cores that no held task fills start now."""
    return claims.ClaimRequest(
        free=free,
        total=ledger.total,
        busy=busy,
        seconds_left=walltime.seconds_left(),
        unlimited_allowed=walltime.unlimited_allowed(),
        limit=free.cores,
        least=max(0, ledger.free().cores - held_cores),
        devices=devices,
        bundle=bundle,
    )


class DatabaseRounds:
    """Decides when the loop's next round is due and what it carries; books what it brought."""

    def __init__(
        self,
        *,
        db: Database,
        hog_id: int,
        host: str,
        name: str,
        thread: DatabaseThread,
        ledger: Ledger,
        walltime: Walltime,
        heartbeat_s: float,
        timeout_s: float,
        bundle: str | None = None,
        idle: IdleClock | None = None,
    ) -> None:
        self.db = db
        self.bundle = bundle  # claim only tasks of this bundle (hog --bundle)
        self.hog_id = hog_id
        self.host = host
        self.name = name
        self.thread = thread
        self.ledger = ledger
        self.walltime = walltime
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s  # how often a long wait for the lock is said in the log
        self.idle = idle
        self.round: Round | None = None  # the job the database thread has in hand
        self.results: list[claims.TaskResult] = []
        self.oldest_result_mono: float | None = None
        # Starts not written yet, oldest first, with when each was noted (monotonic). A task
        # that ends before its start is written has it written with its result instead: short
        # tasks cost no more than before.
        self.starts: dict[tuple[int, int], tuple[claims.TaskStart, float]] = {}
        self.environments: dict[int, dict[str, str]] = {}  # rows cached by claims.exchange
        self.mean_duration_s: float | None = None
        self.hogs_running = 1  # on the queue, as the last claim found
        self.queue_has_work = True
        self.claim_blocked = False
        self.last_exchange_mono = time.monotonic()  # the hog's start is its first beat
        self.last_claim_mono = 0.0
        self.last_cancel_poll_mono = 0.0
        self.last_reap_mono = 0.0
        self.retry_after_mono = 0.0
        self.pacing = Pacing(lease_for(heartbeat_s), FLUSH_INTERVAL_S)
        self.last_written_mono = 0.0  # when the last exchange committed
        # Beats in a file of its own between writes further apart than its heartbeat (beats.py).
        self.beater = beats.Beater(db.files, hog_id)
        self.last_beat_mono = self.last_exchange_mono
        self.wakeup = Wakeup(db.files.doorbell)  # the doorbell, and results written at once

    # -- what the tasks tell ---------------------------------------------------------------------

    def add_start(self, task_id: int, attempt: int, started_at: float) -> None:
        """A task started: written with the next exchange, at most a second late (so `show`
        gives its running time), unless its result comes first."""
        self.starts[(task_id, attempt)] = (claims.TaskStart(task_id, attempt, started_at), time.monotonic())

    def add_result(self, result: claims.TaskResult) -> None:
        if not self.results:
            self.oldest_result_mono = time.monotonic()
        self.results.append(result)
        if self.starts:
            self.starts.pop((result.task_id, result.attempt), None)

    def note_duration(self, seconds: float) -> None:
        """A task ran this long: claims ahead follow the mean."""
        self.mean_duration_s = (
            seconds if self.mean_duration_s is None else 0.8 * self.mean_duration_s + 0.2 * seconds
        )

    def room_freed(self) -> None:
        """A task gave back its resources: a claim that found too little may be worth trying."""
        self.claim_blocked = False

    # -- the loop's side ---------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A round is in hand (a claim may be on its way)."""
        return self.thread.busy

    @property
    def claim_in_hand(self) -> bool:
        """A claim is on its way: waiting for the lock, or being written."""
        return self.round is not None and self.round.claim is not None

    @property
    def claimed_once(self) -> bool:
        """A claim has come back: the hog's start-up is over."""
        return self.last_claim_mono > 0

    def has_work(self) -> bool:
        """Did the last claim find tasks this hog could run?"""
        return self.queue_has_work

    def collect(self, now: float) -> RoundOutcome | None:
        """The outcome of the round in hand once it has ended, booked here (the loop applies
        what it claimed and the cancels); None while it runs, or when none is in hand."""
        if self.round is None:
            return None
        finished = self.thread.collect()
        if finished is None:
            self._warn_if_slow(now)
            return None
        return self._book(finished, now)

    def wait_round(self) -> RoundOutcome | None:
        """At the end: the round in hand, waited for and booked; None (said in the log) if the
        lock stayed taken for FINAL_WRITE_TRIES x --timeout."""
        finished = self._wait()
        if finished is None:
            return None
        return self._book(finished, time.monotonic())

    def give_next(self, now: float, holdings: Holdings, claiming: bool) -> None:
        """Give the database thread its next round, if one is due and none is in hand; beat the
        file when no write says the hog is alive."""
        if not self._give_next(now, holdings, claiming):
            self._beat(now)

    def _give_next(self, now: float, holdings: Holdings, claiming: bool) -> bool:
        """True when it gave an exchange (a write that beats)."""
        if self.round is not None or now < self.retry_after_mono:
            return False
        listening = not self.queue_has_work or holdings.any_running()
        # A paced hog claims only with its paced writes: it listens for cancels alone, less often.
        heard = self.wakeup.listen(now, PACED_LISTEN_S if self.pacing.paced else 0.0) if listening else QUIET
        # While writes are paced (the lock is busy), a bump does not call for a claim of its own.
        heard_work = heard.work and not self.pacing.paced
        claim = self._claim_request(now, holdings, heard_work=heard_work) if claiming else None
        flush_after_s = self.pacing.interval_s()
        flush_due = bool(self.results) and (
            (len(self.results) >= RESULT_BATCH_MAX and not self.pacing.paced)
            or now - self._waiting_since(self.oldest_result_mono or now) >= flush_after_s
            or claim is not None
            or (
                not self.pacing.paced
                and self.wakeup.write_at_once(now, self.db.last_lock_wait_s, self.pacing.hold_s)
            )
        )
        if self.starts and not flush_due:
            flush_due = now - self._waiting_since(self._oldest_start_mono()) >= flush_after_s
        beat_due = now - self.last_exchange_mono >= max(self.heartbeat_s, flush_after_s)
        if claim is None and claiming and (flush_due or beat_due) and self.pacing.paced:
            # Paced writes are few: each one tops up the tasks held ahead, so that claims do not
            # call for writes of their own between them.
            claim = self._claim_request(now, holdings, top_up=True)
        exchange = claim is not None or flush_due or beat_due
        last_cancel_look = max(self.last_cancel_poll_mono, self.last_exchange_mono)
        poll_cancels = (
            not exchange
            and holdings.any_running()
            and (heard.cancel or now - last_cancel_look >= self._cancel_poll_s())
        )
        heal_due = now - self.last_reap_mono >= self.heartbeat_s * max(
            1.0, self.hogs_running / HEALS_PER_HEARTBEAT
        )
        if not (exchange or poll_cancels or heal_due):
            return False
        if heal_due:
            self.last_reap_mono = now
        self.round = Round(
            results=self.results if exchange else [],
            oldest_result_mono=self.oldest_result_mono if exchange else None,
            starts=self.starts if exchange else {},
            claim=claim,
            exchange=exchange,
            poll_cancels=poll_cancels,
            heal=heal_due,
            given_mono=now,
            warn_after_s=self.timeout_s,
            usage=self._usage() if exchange else None,
        )
        if exchange:
            if self.results:
                self.wakeup.results_written(now)
            self.results = []
            self.oldest_result_mono = None
            self.starts = {}
        self.thread.give(functools.partial(self._run_round, self.round))
        return exchange

    def next_due(self, now: float, tasks_running: bool) -> float:
        """When the loop must look again for the database's sake (monotonic)."""
        if self.round is not None:
            # Only a warning and the beat are due meanwhile: the round's end wakes the loop.
            return min(self.round.given_mono + self.round.warn_after_s, self._beat_due())
        flush_after_s = self.pacing.interval_s()
        due = [self.last_exchange_mono + max(self.heartbeat_s, flush_after_s), self._beat_due()]
        if self.results:
            due.append(self._waiting_since(self.oldest_result_mono or now) + flush_after_s)
        if self.starts:
            due.append(self._waiting_since(self._oldest_start_mono()) + flush_after_s)
        if tasks_running:
            due.append(now + self._cancel_poll_s())
        if tasks_running or not self.queue_has_work:
            due.append(self.wakeup.next_listen())
        if self.results and not self.pacing.paced:
            due.append(self.wakeup.write_due(self.db.last_lock_wait_s, self.pacing.hold_s))
        # Past due while the database is unreachable: wait for the retry, do not spin.
        return max(min(due), self.retry_after_mono)

    def write_last(self, finish_reason: str) -> LastWrite:
        """The hog's last round: its remaining results, and its row marked finished."""
        for attempt in range(FINAL_WRITE_TRIES):
            self.thread.give(
                functools.partial(
                    claims.exchange,
                    self.db,
                    self.hog_id,
                    self.host,
                    self.results,
                    None,
                    self.environments,
                    finish_reason=finish_reason,
                    starts=[start for start, _ in self.starts.values()],
                    usage=self._usage(),
                )
            )
            finished = self._wait()
            if finished is None:
                return LastWrite.NOT_WRITTEN
            outcome, error = finished
            if error is not None:
                if not isinstance(error, DatabaseError):
                    raise error
                log.error("%s: cannot write its last results (try %d): %s", self.name, attempt + 1, error)
                if isinstance(error, DatabaseGoneError):
                    return LastWrite.GIVEN_UP
                time.sleep(1.0)
                continue
            if outcome.given_up:
                log.warning("%s: declared lost meanwhile; its results were not written", self.name)
                return LastWrite.GIVEN_UP
            self.beater.close(remove=True)  # its row says it finished: nobody reads its beats now
            return LastWrite.WRITTEN
        return LastWrite.NOT_WRITTEN

    def _beat_due(self) -> float:
        """When the beat file is next due (monotonic): a heartbeat after the last write or beat."""
        return max(self.last_exchange_mono, self.last_beat_mono) + self.heartbeat_s

    def _beat(self, now: float) -> None:
        """Beat the file when no write has said the hog is alive within its heartbeat: its writes
        are paced further apart, or one waits in line. Not while the database thread has been
        stuck on one round longer than a write may be put off (10 minutes, or a longer lease): a
        hog whose rounds never end must be found lost."""
        if now < self._beat_due() or not self.pacing.beating:
            return
        stuck_after_s = max(self.pacing.lease_s, beats.LONGEST_WRITE_SPACING_S)
        if self.round is not None and now - self.round.given_mono >= stuck_after_s:
            return
        self.last_beat_mono = now
        if not self.beater.beat(time.time()):
            log.warning(
                "%s: cannot write %s: its writes stay within half its lease", self.name, self.beater.path
            )
            self.pacing.beating = False

    def _usage(self) -> HogUsage | None:
        return None if self.idle is None else self.idle.usage(self.db.total_lock_wait_s)

    # -- claims ------------------------------------------------------------------------------

    def _prefetch_factor(self) -> int:
        if self.mean_duration_s is None:
            return 0
        horizon_s = self.pacing.horizon_s(PREFETCH_HORIZON_S)
        return prefetch_factor(self.mean_duration_s, self.hogs_running, self.ledger.total.cores, horizon_s)

    def _cancel_poll_s(self) -> float:
        # Each look is a read that holds sqlite's shared lock, which a commit must wait out: when
        # the lock is busy, a cancel is seen with the next paced write.
        return max(CANCEL_POLL_S, self.pacing.interval_s())

    def _claim_request(
        self, now: float, holdings: Holdings, top_up: bool = False, heard_work: bool = False
    ) -> claims.ClaimRequest | None:
        if self.claim_blocked and not heard_work and now - self.last_claim_mono < IDLE_POLL_S:
            return None
        if not (self.queue_has_work or heard_work or self.wakeup.idle_claim_due(now, self.last_claim_mono)):
            return None
        factor = self._prefetch_factor()
        buffered = holdings.unstarted
        if factor == 0 and buffered:
            return None
        # Cheap checks first: this runs on every turn of the loop. Top up a prefetch buffer only
        # once it is half empty: one transaction per many tasks. Each task holds a core at least.
        total = self.ledger.total
        allowance_cores = total.cores * factor
        if factor and len(buffered) > allowance_cores // 2 and not top_up:
            return None
        # Paced: the next write tops the tasks held ahead up in time; a claim of its own would only
        # queue. Each task holds a core at least, so their count settles it without adding up the
        # cores of thousands held ahead on every turn of the loop.
        may_wait = bool(buffered) and not (top_up or heard_work)
        if may_wait and self._lasts_until_next_write(now, len(buffered)):
            return None
        held_cores = sum(task.cores for task in buffered)
        if factor and held_cores > allowance_cores // 2 and not top_up:
            return None
        if may_wait and held_cores > len(buffered) and self._lasts_until_next_write(now, held_cores):
            return None
        free_now = self.ledger.free()
        if free_now.cores + allowance_cores - held_cores <= 0:
            return None
        held = Resources(held_cores, sum(t.gpus for t in buffered), sum(t.mem_bytes for t in buffered))
        allowance = Resources(allowance_cores, total.gpus * factor, total.mem_bytes * factor)
        # Tasks queued for a slot count as held (the ledger's free cores are below 0 by as many).
        free = free_now + allowance - held
        devices = self.ledger.claimable_devices(factor, buffered) if total.gpus else None
        return _request(self.ledger, self.walltime, self.bundle, free, holdings.busy(), devices, held_cores)

    def _lasts_until_next_write(self, now: float, held_cores: int) -> bool:
        """Paced: do the tasks held ahead (`held_cores`, their cores added up) keep the cores busy
        until the next paced write's claim lands (its spacing, then its wait in line and its
        hold)? A claim between paced writes made a third of the writes at a thousand hogs, each
        one more in the lock's line."""
        if not self.pacing.paced or self.mean_duration_s is None:
            return False
        interval_s = self.pacing.interval_s()
        next_write = self.last_exchange_mono + max(self.heartbeat_s, interval_s)
        if self.results:
            next_write = min(next_write, self._waiting_since(self.oldest_result_mono or now) + interval_s)
        lands = next_write + self.pacing.wait_s + (self.pacing.hold_s or 0.0)
        held_s = held_cores * self.mean_duration_s / max(1, self.ledger.total.cores)
        return now + held_s >= lands

    # -- rounds ------------------------------------------------------------------------------

    def _run_round(self, job: Round) -> RoundOutcome:
        """On the database thread: touches only the database and the environment cache."""
        outcome = RoundOutcome()
        if job.exchange:
            started = time.monotonic()
            done = claims.exchange(
                self.db,
                self.hog_id,
                self.host,
                job.results,
                job.claim,
                self.environments,
                starts=[start for start, _ in job.starts.values()],
                usage=job.usage,
            )
            outcome.given_up = done.given_up
            outcome.claimed = done.claimed
            outcome.queue_has_work = done.queue_has_work
            outcome.cancel_requested = done.cancel_requested
            outcome.hogs_running = done.hogs_running
            outcome.stop_request = done.stop_request
            outcome.lock_wait_s = self.db.last_lock_wait_s
            outcome.lock_held_s = time.monotonic() - started - outcome.lock_wait_s
        elif job.poll_cancels:
            cancels = claims.poll_cancels(self.db, self.hog_id)
            if cancels is None:
                outcome.given_up = True
                return outcome
            outcome.cancel_requested = cancels
        if job.heal and not outcome.given_up:
            try:
                outcome.reaped = heal(self.db, self.host)
            except DatabaseGoneError:
                raise
            except DatabaseError as error:
                log.warning("%s: could not look for lost hogs: %s", self.name, error)
        return outcome

    def _book(self, finished: Outcome, now: float) -> RoundOutcome:
        """What an ended round changes here; an empty outcome when it failed and is retried."""
        job, self.round = self.round, None
        assert job is not None
        outcome, error = finished
        if error is not None:
            if not isinstance(error, DatabaseError):
                raise error
            if isinstance(error, DatabaseGoneError):
                # Its results can never be written: the tasks' next attempts belong to whatever
                # queue is at that path now, if any.
                log.error("%s: %s: killing its tasks and leaving", self.name, error)
                return RoundOutcome(given_up=True)
            # Ride it out: tasks keep running and results wait for the next try.
            log.warning("%s: database unavailable, trying again in %.0f s: %s", self.name, DB_RETRY_S, error)
            if job.results:
                self.results = job.results + self.results
                self.oldest_result_mono = job.oldest_result_mono
            self._restore_starts(job)
            self.retry_after_mono = now + DB_RETRY_S
            return RoundOutcome()
        if outcome.given_up:
            log.error("%s: was declared lost or cancelled: killing its tasks and leaving", self.name)
            return outcome
        self.last_cancel_poll_mono = job.given_mono
        if job.exchange:
            self.last_exchange_mono = job.given_mono
            self.last_written_mono = now
        self._book_claim(job.claim, outcome, job.given_mono)
        if outcome.reaped:
            log.warning(
                "%s: declared hogs %s lost; their tasks went back to the queue", self.name, outcome.reaped
            )
        return outcome

    def _book_claim(
        self, claim: claims.ClaimRequest | None, outcome: RoundOutcome, given_mono: float
    ) -> None:
        if outcome.lock_held_s is not None:
            self.pacing.observe(outcome.lock_held_s, outcome.lock_wait_s)
        if claim is not None:
            self.last_claim_mono = given_mono
            self.hogs_running = self.pacing.hogs_running = outcome.hogs_running
            self.queue_has_work = outcome.queue_has_work or bool(outcome.claimed)
            self.claim_blocked = len(outcome.claimed) < claim.limit and outcome.queue_has_work

    def adopt(
        self, claim: claims.ClaimRequest, done: claims.Exchange, given_mono: float, written_mono: float
    ) -> RoundOutcome:
        """The claim made with the hog's registration (first_claim), booked as an exchange's
        given at `given_mono` and committed at `written_mono`; the loop applies what it returns
        before its first turn."""
        wait_s = self.db.last_lock_wait_s
        outcome = RoundOutcome(
            claimed=done.claimed,
            queue_has_work=done.queue_has_work,
            lock_held_s=written_mono - given_mono - wait_s,
            lock_wait_s=wait_s,
            hogs_running=done.hogs_running,
            stop_request=done.stop_request,
        )
        self.last_exchange_mono, self.last_written_mono = given_mono, written_mono
        self._book_claim(claim, outcome, given_mono)
        return outcome

    def _waiting_since(self, noted_mono: float) -> float:
        """When a result or start noted then began to wait for its write. Paced, from the end of
        the last write at the earliest: hogs that queued together for the lock then write again
        as spread out as they left it, instead of all at once each interval."""
        return max(noted_mono, self.last_written_mono) if self.pacing.paced else noted_mono

    def _oldest_start_mono(self) -> float:
        return next(iter(self.starts.values()))[1]

    def _restore_starts(self, job: Round) -> None:
        """A failed round's starts wait for the next, oldest first, less those whose result came
        meanwhile (it carries the start)."""
        ended = {(result.task_id, result.attempt) for result in self.results}
        kept = {key: value for key, value in job.starts.items() if key not in ended}
        kept.update(self.starts)
        self.starts = kept

    def _warn_if_slow(self, now: float) -> None:
        assert self.round is not None
        waited = now - self.round.given_mono
        if waited >= self.round.warn_after_s:
            self.round.warn_after_s += self.timeout_s
            log.warning(
                "%s: database unavailable: waiting %.0f s so far for its lock; tasks keep running",
                self.name,
                waited,
            )

    def _wait(self) -> Outcome | None:
        """The database thread's job, waited for at the end; None (said in the log) if the lock
        stayed taken for FINAL_WRITE_TRIES x --timeout."""
        finished = self.thread.wait(FINAL_WRITE_TRIES * self.timeout_s)
        if finished is None:
            log.error("%s: the database stayed locked: its last results are not written", self.name)
        return finished
