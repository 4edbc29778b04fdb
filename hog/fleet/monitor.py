"""The monitor: keeps hogs submitted while tasks wait, and heals lost ones.

Losing the monitor loses nothing: hogs run on, and the next monitor adopts them from the database.
"""

import logging
import math
import os
import shlex
import time
from dataclasses import dataclass

from hog.errors import HogError, UsageError
from hog.fleet.backends import BackendError, PrefixBackend, SbatchBackend, hog_command
from hog.fleet.sizing import HogSize, hog_fulls, hog_size
from hog.pilot.healing import heal
from hog.pilot.options import HogOptions, seconds_argument, shown_duration
from hog.pilot.slurm import node_name
from hog.pools import DEFAULT_POOL
from hog.store import claims, doorbell, hoglist, pools, states, steering
from hog.store.db import Database
from hog.store.paths import QueueFiles
from hog.timeutil import counted

log = logging.getLogger(__name__)

MONITOR_META_KEY = "monitor"
# Hogs in a row that died before they started, or left finding nothing they could run, before
# the monitor stops starting more (--once) or backs off: starting them again would only churn.
FUTILE_HOGS_LIMIT = 3
MAX_BACKOFF_S = 600.0
# How long after its row ended a hog's backend process or job is still asked about: one declared
# lost may live on (a hung node), and holds its allocation meanwhile.
LINGER_WINDOW_S = 86400.0
# How often a monitor with room for more hogs listens to the doorbell between passes.
LISTEN_S = 0.05


class MonitorGaveUp(HogError):
    """Starting more hogs cannot help: they fail to start, or the waiting tasks fit none."""


@dataclass(frozen=True)
class MonitorConfig:
    db_path: str
    timeout_s: float
    prefix: list[str]
    hogs: int
    backend: str
    sbatch_args: str
    poll_s: float
    once: bool
    hog_options: HogOptions
    gather_s: float = 0.0  # once a task waits, how long to wait for a hog-full before starting one

    @classmethod
    def from_options(
        cls,
        db_path: str,
        timeout_s: float,
        prefix: str | None,
        hogs: int,
        backend: str,
        sbatch_args: str,
        poll_s: float,
        once: bool,
        hog_options: HogOptions,
        gather_s: float = 0.0,
    ) -> "MonitorConfig":
        try:
            words = shlex.split(prefix) if prefix is not None else ["nohup"]
        except ValueError as error:
            raise UsageError(f"bad --command-prefix {prefix!r}: {error}") from None
        if backend == "prefix" and not words:
            raise UsageError("--command-prefix is empty: give e.g. nohup or 'srun -N1 --exclusive'")
        if backend == "sbatch" and prefix is not None:
            raise UsageError(
                "--command-prefix is for --backend prefix; with --backend sbatch give sbatch's options "
                "with --sbatch-args (e.g. --sbatch-args '-p short')"
            )
        if backend == "prefix" and sbatch_args:
            raise UsageError(
                "--sbatch-args is for --backend sbatch; with --backend prefix put them in --command-prefix"
            )
        return cls(db_path, timeout_s, words, hogs, backend, sbatch_args, poll_s, once, hog_options, gather_s)

    def to_argv(self) -> list[str]:
        """The command line (after `python -m hog`) of a monitor with this configuration."""
        argv = ["--db", os.path.abspath(self.db_path), "--timeout", str(self.timeout_s), "monitor"]
        argv += ["--hogs", str(self.hogs), "--backend", self.backend]
        if self.backend == "sbatch":
            argv += ["--sbatch-args", self.sbatch_args]
        else:
            argv += ["--command-prefix", shlex.join(self.prefix)]
        argv += ["--poll", seconds_argument(self.poll_s), "--gather", seconds_argument(self.gather_s)]
        if self.once:
            argv.append("--once")
        return argv + self.hog_options.to_argv()

    @property
    def files(self) -> QueueFiles:
        return QueueFiles(self.db_path)

    @property
    def pool(self) -> str:
        return self.hog_options.pool

    @property
    def pid_path(self) -> str:
        return self.files.monitor_file(self.pool, ".pid")

    @property
    def log_path(self) -> str:
        return self.files.monitor_file(self.pool, ".log")

    @property
    def lock_path(self) -> str:
        return self.files.monitor_file(self.pool, ".lock")

    @property
    def served(self) -> str:
        """What the monitor serves, in words: the queue, or one pool of it."""
        return self.db_path if self.pool == DEFAULT_POOL else f"pool {self.pool} of {self.db_path}"

    @property
    def meta_key(self) -> str:
        """Where the queue notes who holds the monitor's lock (its pool's, beside the queue)."""
        return MONITOR_META_KEY if self.pool == DEFAULT_POOL else f"{MONITOR_META_KEY}:{self.pool}"

    @property
    def pool_option(self) -> str:
        """` --pool NAME` for commands shown to the user, when the pool is not the default."""
        return "" if self.pool == DEFAULT_POOL else f" --pool {self.pool}"


class Monitor:
    def __init__(self, config: MonitorConfig, db: Database) -> None:
        self.config = config
        self.db = db
        self.host = node_name()
        self.files = config.files
        log_mode = self.files.private_modes().file
        if config.backend == "sbatch":
            self.backend: PrefixBackend | SbatchBackend = SbatchBackend(
                config.sbatch_args, config.hog_options.walltime_s, log_mode
            )
        else:
            self.backend = PrefixBackend(config.prefix, log_mode)
        self.stop_requested = False
        self.futile_hogs = 0  # in a row: died before starting, or found nothing to run
        self.futile_reason = ""
        self.backoff_until = 0.0
        self.last_pass_at = time.time()
        self.released: set[int] = set()  # ended hogs whose backend has ended too
        self.lease_s = config.hog_options.lease_s
        self.pool = config.pool
        self.gathering_since: float | None = None  # monotonic; --gather: when tasks began to wait
        # Work submitted while there is room for more hogs starts one at once, not at the next poll.
        self.bell = doorbell.Listener(self.files.doorbell)
        self.work_heard = self._work_counter()
        self.room_for_hogs = True

    def name(self) -> str:
        return f"monitor on {self.host}" + ("" if self.pool == DEFAULT_POOL else f" (pool {self.pool})")

    def run(self) -> int:
        self.files.make_folders(self.files.hogs)
        log.info(
            "%s: keeping up to %s through %s",
            self.name(),
            counted(self.config.hogs, "hog"),
            self._describe_backend(),
        )
        while not self.stop_requested:
            try:
                finished = self.one_pass()
            except MonitorGaveUp as error:
                log.error("%s: %s", self.name(), error)
                return 1
            except (HogError, OSError) as error:
                # One bad pass (lock timeout, sbatch refusing, a full disk) must not end the monitor.
                log.error("%s: %s; trying again in %.0f s", self.name(), error, self.config.poll_s)
                finished = False
            except Exception:
                # Nor a bug: hogs keep running without it, but nobody would replace them.
                log.exception("%s: a pass failed; trying again in %.0f s", self.name(), self.config.poll_s)
                finished = False
            if finished:
                log.info("%s: the queue is empty and no hog is left: exiting", self.name())
                return 0
            self._sleep(self.config.poll_s)
        log.info("%s: stopping; hogs keep running and a new monitor adopts them", self.name())
        return 0

    def _describe_backend(self) -> str:
        if isinstance(self.backend, SbatchBackend):
            return f"sbatch {shlex.join(self.backend.sbatch_args)}".strip()
        return f"prefix {shlex.join(self.config.prefix)!r}"

    def _sleep(self, seconds: float) -> None:
        """Until the next pass, or sooner when a hog started from here has ended or --gather's
        wait is over."""
        deadline = time.monotonic() + seconds
        if self.gathering_since is not None:
            deadline = min(deadline, self.gathering_since + self.config.gather_s)
        while not self.stop_requested and time.monotonic() < deadline:
            if self.backend.child_ended() or self._work_submitted():
                return
            step = max(LISTEN_S, self.bell.interval_s) if self.room_for_hogs else 0.2
            time.sleep(max(0.0, min(step, deadline - time.monotonic())))

    def _work_counter(self) -> int | None:
        values = self.bell.read()
        return None if values is None else values[doorbell.WORK]

    def _work_submitted(self) -> bool:
        """Whether tasks became waiting since the last look, while there is room for more hogs."""
        if not self.room_for_hogs:
            return False
        heard, self.work_heard = self.work_heard, self._work_counter()
        return self.work_heard is not None and self.work_heard != heard

    def one_pass(self) -> bool:
        """Heal, then start hogs for waiting work. True when --once has nothing left to do."""
        held = self.follow_hogs()
        size = hog_size(self.db, self.backend.name, self.config.hog_options)
        # Each task takes at least one core: more than a node-full per hog cannot change the count.
        demand = pools.demand(self.db, self.pool, self.config.hogs * size.cores)
        self.judge_ended_hogs(demand.waiting)
        wanted = self.gathered(self.hogs_wanted(demand, size, held), demand, size, held)
        if wanted > len(held) and not self.may_start_hogs():
            wanted = len(held)
        for _ in range(wanted - len(held)):
            if self.stop_requested:
                break
            self.start_hog()
        self.room_for_hogs = max(wanted, len(held)) < self.config.hogs
        if self.config.once:
            mine = pools.pool_counts(self.db, pools=(self.pool,))
            active = sum(counts.waiting + counts.running for counts in mine)
            return active == 0 and not self.follow_hogs()
        return False

    def judge_ended_hogs(self, waiting: int) -> None:
        """Count hogs that were of no use: died before starting, or idled out while work waited."""
        now = time.time()
        for hog in self.of_my_pool(hoglist.ended_since(self.db, self.last_pass_at)):
            if hog["end_reason"] == steering.STOPPED_PENDING:
                continue  # a user stopped it before it started: it did not fail
            if hog["started_at"] is None and hog["state"] in (states.HOG_LOST, states.HOG_CANCELLED):
                self.futile_hogs += 1
                # A hog its backend refused (sbatch said no) has no log: its reason says why.
                see = f"; see {hog['log_path']}" if hog["log_path"] else ""
                self.futile_reason = (
                    f"hogs fail to start (the last, hog {hog['id']}: {hog['end_reason']}{see})"
                )
            elif hog["tasks_run"] == 0 and hog["end_reason"] == "idle" and waiting:
                self.futile_hogs += 1
                self.futile_reason = (
                    f"no hog can run the {counted(waiting, 'waiting task')}: they need more cores, GPUs, "
                    "memory or time than a hog has (`slurm-hog show -s waiting` lists them)"
                )
            elif hog["tasks_run"]:
                self.futile_hogs = 0
                self.backoff_until = 0.0
        self.last_pass_at = now

    def may_start_hogs(self) -> bool:
        if self.futile_hogs < FUTILE_HOGS_LIMIT:
            return True
        if self.config.once:
            raise MonitorGaveUp(f"giving up: {self.futile_reason}")
        now = time.time()
        if now < self.backoff_until:
            return False
        delay = min(MAX_BACKOFF_S, self.config.poll_s * 2 ** (self.futile_hogs - FUTILE_HOGS_LIMIT + 1))
        log.warning("%s: %s; trying again in %.0f s", self.name(), self.futile_reason, delay)
        self.backoff_until = now + delay
        return True

    def hogs_wanted(
        self, demand: pools.Demand, size: HogSize, held: list[dict], whole_hogs_only: bool = False
    ) -> int:
        """At most N, none beyond what waiting tasks can use, and never zero while one waits;
        with `whole_hogs_only`, none for tasks that would not fill a hog."""
        if demand.waiting == 0:
            return len(held)  # never more; hogs that run out of work leave on their own
        pending = sum(1 for hog in held if hog["state"] == states.HOG_PENDING)
        busy = len(held) - pending  # running, or ended but still holding their allocation
        fulls = hog_fulls(demand.needs, size)
        needed = math.floor(fulls) if whole_hogs_only else max(1, math.ceil(fulls))
        extra = max(0, needed - pending)
        return max(len(held), min(self.config.hogs, busy + pending + extra))

    def gathered(self, wanted: int, demand: pools.Demand, size: HogSize, held: list[dict]) -> int:
        """--gather: the hogs to start now. From the pass that first wants a hog, for up to
        --gather only hogs that the waiting tasks fill are started, so that a trickle of submits
        does not buy a mostly empty node; then as many as `wanted`."""
        if self.config.gather_s <= 0 or wanted <= len(held):
            self.gathering_since = None
            return wanted
        now = time.monotonic()
        if self.gathering_since is None:
            self.gathering_since = now
            log.info(
                "%s: %s waiting; gathering for up to %s before starting a hog for less than a hog-full",
                self.name(),
                counted(demand.waiting, "task"),
                shown_duration(self.config.gather_s),
            )
        if now - self.gathering_since >= self.config.gather_s:
            self.gathering_since = None
            return wanted
        return self.hogs_wanted(demand, size, held, whole_hogs_only=True)

    def follow_hogs(self) -> list[dict]:
        """Heal, and return the hogs that hold an allocation: they count against --hogs.

        Those are the live ones, and those whose row has ended while their backend process or
        job still runs: a hog that has said goodbye is still leaving, and one declared lost may
        not be dead. Starting a replacement before they are gone would hold N+1 allocations,
        which a QOS limit may refuse. One question to the backend covers both.
        """
        live = self.of_my_pool(hoglist.live_hogs(self.db))
        mine = [hog for hog in live if hog["backend"] == self.backend.name and hog["backend_id"]]
        recent = [
            hog
            for hog in self.of_my_pool(hoglist.ended_since(self.db, time.time() - LINGER_WINDOW_S))
            if hog["backend"] == self.backend.name and hog["backend_id"]
        ]
        self.released &= {hog["id"] for hog in recent}
        ended = [hog for hog in recent if hog["id"] not in self.released]
        alive = self.backend.alive([hog["backend_id"] for hog in mine + ended])
        self.heal(mine, alive)
        # Hogs of the pool started by hand count too: they run the pool's tasks.
        held = self.of_my_pool(hoglist.live_hogs(self.db))
        held_ids = {hog["id"] for hog in held}
        for hog in mine + ended:
            if hog["id"] in held_ids:
                continue
            if alive.get(hog["backend_id"]):
                held.append(hog)
            elif alive.get(hog["backend_id"]) is False:
                self.released.add(hog["id"])  # gone for good: not asked about again
        return held

    def of_my_pool(self, hogs: list[dict]) -> list[dict]:
        return [hog for hog in hogs if hog["pool"] == self.pool]

    def heal(self, mine: list[dict], alive: dict[str, bool | None]) -> None:
        """Declare lost the hogs whose backend ended without a goodbye, or whose lease ran out."""
        ended = [hog["id"] for hog in mine if alive.get(hog["backend_id"]) is False]
        if ended:
            # The hog may have said goodbye just before its process ended: read again.
            still_live = {hog["id"] for hog in hoglist.live_hogs(self.db)}
            ended = [hog_id for hog_id in ended if hog_id in still_live]
        reaped = heal(self.db, self.host, also_lost=ended)
        for hog_id in reaped:
            log.warning("%s: hog %d is lost; its tasks went back to the queue", self.name(), hog_id)

    def start_hog(self) -> int | None:
        backend = self.backend.name
        hog_id = claims.create_pending_hog(self.db, backend, self.host, self.lease_s, pool=self.pool)
        log_path = self.files.hog_log(hog_id)
        argv = hog_command(self.config.db_path, self.config.timeout_s, hog_id, self.config.hog_options)
        try:
            backend_id = self.backend.start(hog_id, argv, log_path)
        except (BackendError, OSError) as error:
            claims.set_hog_state(self.db, hog_id, states.HOG_CANCELLED, f"could not start: {error}")
            if isinstance(error, OSError):
                raise BackendError(f"could not start hog {hog_id}: {error}") from error
            raise
        claims.set_hog_backend(self.db, hog_id, backend_id, log_path)
        log.info(
            "%s: started hog %d (%s %s), log %s",
            self.name(),
            hog_id,
            self.backend.name,
            backend_id,
            log_path,
        )
        return hog_id
