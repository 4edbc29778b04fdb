#!/usr/bin/env python3
"""Scale simulator: hundreds of hogs on one queue file, with virtual tasks and the real store code.

    .venv/bin/python scripts/simulate.py run [--hogs 100] [--cores 64] [--task-s 10] [--fs nfs]
                                             [--measure-s 30] [--processes 4] [--json OUT]
                                             [--transactions WRITES.jsonl] [--full-collections]
    .venv/bin/python scripts/simulate.py grid [--fs nfs] [--out bench-results/simulate]
    .venv/bin/python scripts/simulate.py validate --hogs 8 --cores 4 --task-s 2 [--fs nfs]
    .venv/bin/python scripts/simulate.py plot RESULTS.json... [--png OUT.png]

`validate` runs real hogs with `sleep` tasks on the same filesystem, measured the same way, then
the simulator with their configuration. `plot` needs matplotlib (`.venv/bin/pip install
matplotlib`; not a dependency of slurm-hog).

Each simulated hog has its own connection and its own lock file descriptor (its own
`hog.store.db.Database`), its own database thread and the hog's own rounds (`hog.pilot.rounds`,
with the pacing of `hog.pilot.pacing`): the claims, results, starts, heartbeats and healing are
the real code on the real file. Only the tasks are virtual: a claimed task "runs" on its cores for
its duration (task length, +-10%) and ends with exit 0, no process started. Many hogs share one
process (an event loop over their holdings), so that a thousand fit on this machine.

To measure the steady state rather than the start of a run, each core's first task gets a random
part of its length (as if it had started earlier), and the figures are taken over `--measure-s`
seconds once every hog has claimed its first tasks. Reported: tasks/s, core utilisation, lock wait
p50/p99 (per transaction, and the worst hog's p99), transactions/s, tasks per transaction, the
fewest tasks a hog ran (a starved hog runs none).

`--fs nfs|lustre|none` mounts the slow filesystem (scripts/slowfs.py, needs root) over a temporary
folder; `--fs model-nfs|model-lustre` sleeps the same latencies inside each worker process instead
(scripts/latency_vfs.py: no FUSE server, so a thousand hogs measure the design rather than this
machine); `--fs local` uses the folder as it is; `--folder DIR` puts the queue in DIR (already on
the filesystem to measure).
"""

import argparse
import collections
import contextlib
import gc
import heapq
import json
import os
import random
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "scripts"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
MODEL = "model-"  # --fs model-nfs: the preset's latencies slept in-process (latency_vfs.py)

JITTER = 0.1  # task lengths vary by +-10%
GIB = 1 << 30
HEARTBEAT_S = 30.0  # the hog's default
START_TIMEOUT_S = 900.0
# A write as a worker reports it (Record's fields, in the order of its indices in the summary code).
TRANSACTION_FIELDS = (
    "hog",
    "wait_s",
    "hold_s",
    "results",
    "claimed",
    "claim_asked",
    "cpu_s",
    "ended_mono",
    "fs_sleep_s",
    "busy_sleep_s",
    "fs_ops",
)
FULL_COLLECTION_NEVER = 1 << 30  # middle-generation collections before a full one: none in a run
LONG_PAUSE_S = 0.01  # collector pauses listed one by one (CollectorPauses)


@dataclass
class Config:
    hogs: int = 100
    cores: int = 64
    task_s: float = 10.0
    measure_s: float = 30.0
    warmup_s: float = 30.0
    processes: int = 4
    fs: str = "nfs"
    seed: int = 1
    pacing: bool = True
    heartbeat_s: float = HEARTBEAT_S
    fsync_ms: float | None = None  # overrides the preset's (a model's; a mount gets --fsync-ms)
    # How often a thread that wants the GIL may take it from a running one (Python's default: 5 ms).
    # A hog's main loop mostly sleeps, so its database thread gets the GIL back at once after each
    # filesystem call; here one loop serves hundreds of hogs, and with 5 ms the thread that holds
    # the queue's lock waited up to 5 ms after each of the ~30 calls of a transaction (this
    # machine, not the design: README).
    switch_interval_ms: float = 0.5
    open_loop: bool = False  # pace as before the waits closed the loop (pacing.py, rounds.py)
    # On a cluster the hog that holds the queue's lock has its node to itself; here it shares its
    # interpreter with the loop of every hog of its process, so that loop pauses while one of
    # them holds the lock (False: it runs on, as before, and takes the holder's GIL).
    loop_yields: bool = True
    # Python's full (oldest-generation) collections stop every thread of a process for as long as
    # it takes to walk all its objects: here the state of a quarter of the hogs, seconds at a
    # thousand, while its hogs in line or holding the lock stand still (1,000 hogs, 10 s tasks,
    # model-lustre: pauses up to 3.55 s, two holds of 3.2 s in 300 s, against ~0.34 s a write).
    # A real hog walks its own objects only (3-5 ms holding 8,192 tasks); so workers skip full
    # collections (False), and the younger generations, where a round's cycles die, are
    # collected as usual.
    full_collections: bool = False


# -- one worker process: many hogs ---------------------------------------------------------------


@dataclass
class Record:
    """One exchange of one hog, as the store saw it."""

    ended_mono: float
    hog: int
    wait_s: float
    hold_s: float
    results: int
    claimed: int
    claim_asked: bool  # a claim rode on it
    cpu_s: float  # CPU time of the writing thread while it held the lock (the rest: sleeps, or no CPU)
    fs_sleep_s: float  # the modelled filesystem's sleeps while it held the lock (model-* only)
    busy_sleep_s: float  # sqlite's busy handler: the COMMIT waiting for readers (model-* only)
    fs_ops: dict[str, int]  # the modelled filesystem's operations it paid, by class (model-* only)


class Recorder:
    """Wraps claims.exchange in this process: every hog transaction is timed and counted."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.guard = threading.Lock()
        self.hog_of_db: dict[int, int] = {}

    def install(self) -> None:
        from hog.store import claims

        real = claims.exchange
        model = sys.modules.get("latency_vfs")  # installed by now on a model-* filesystem

        def exchange(db, hog_id, host, results, claim, environments, **kwargs):
            started = time.monotonic()
            cpu_started = time.thread_time()
            ops_before, busy_before = _thread_accounts(model)
            outcome = real(db, hog_id, host, results, claim, environments, **kwargs)
            ended = time.monotonic()
            cpu = time.thread_time() - cpu_started
            ops, busy_s = _thread_accounts(model)
            ops.subtract(ops_before)
            busy_s -= busy_before
            wait = db.last_lock_wait_s
            with self.guard:
                self.records.append(
                    Record(
                        ended,
                        self.hog_of_db[id(db)],
                        wait,
                        ended - started - wait,
                        len(results),
                        len(outcome.claimed),
                        claim is not None,
                        cpu,
                        # Less the flock's own round trip, paid before the wait in line.
                        0.0 if model is None else model.latency_s(ops - collections.Counter(lock=1)),
                        busy_s,
                        dict(ops),
                    )
                )
            return outcome

        claims.exchange = exchange


class CollectorPauses:
    """The pauses of the interpreter's cyclic garbage collector in this process: every thread,
    every hog of the process, stands still meanwhile. Their running total, and each one longer
    than LONG_PAUSE_S as (ended, seconds, generation); the young collections, many a second, are
    counted in the total only. Without `full_collections`, the oldest generation is never
    collected (Config.full_collections; Python 3.11-3.13's generational collector)."""

    def __init__(self, full_collections: bool) -> None:
        self.total_s = 0.0
        self.long_pauses: list[tuple[float, float, int]] = []
        self._began = 0.0
        self._thresholds = gc.get_threshold()
        if not full_collections:
            gc.set_threshold(*self._thresholds[:2], FULL_COLLECTION_NEVER)
        gc.callbacks.append(self._note)

    def close(self) -> None:
        gc.callbacks.remove(self._note)
        gc.set_threshold(*self._thresholds)

    def _note(self, phase: str, info: dict) -> None:
        now = time.monotonic()
        if phase == "start":
            self._began = now
            return
        self.total_s += now - self._began
        if now - self._began > LONG_PAUSE_S or info["generation"] == 2:
            self.long_pauses.append((now, now - self._began, info["generation"]))


def _thread_accounts(model) -> tuple[collections.Counter, float]:
    """This thread's modelled operations so far (by latency class) and its seconds in sqlite's
    busy handler: latency_vfs's, none off a model."""
    if model is None:
        return collections.Counter(), 0.0
    return model.thread_counts(), model.thread_busy_s()


def _count_rounds() -> list[tuple[float, str]]:
    """Every round the hogs give, with why: (monotonic, kind). A write that claims because the
    tasks held ahead ran low ("claim"), one that tops them up on a paced write ("top-up"), one
    for results, starts or the heartbeat alone ("flush"); reads: "cancel-poll", "heal"."""
    from hog.pilot.rounds import DatabaseRounds

    given: list[tuple[float, str]] = []
    claim_request, give_next = DatabaseRounds._claim_request, DatabaseRounds._give_next

    def tagged_claim(self, now, holdings, top_up=False, heard_work=False):
        request = claim_request(self, now, holdings, top_up=top_up, heard_work=heard_work)
        if request is not None:
            self.simulated_why = "top-up" if top_up else "claim"
        return request

    def counted_give(self, now, holdings, claiming):
        before, self.simulated_why = self.round, "flush"
        gave = give_next(self, now, holdings, claiming)
        job = self.round
        if job is not None and job is not before:
            if job.exchange:
                given.append((now, self.simulated_why if job.claim is not None else "flush"))
            elif job.poll_cancels:
                given.append((now, "cancel-poll"))
            if job.heal:
                given.append((now, "heal"))
        return gave

    DatabaseRounds._claim_request = tagged_claim
    DatabaseRounds._give_next = counted_give
    return given


class SimulatedTasks:
    """The hog's holdings, with virtual tasks: `Holdings` for the rounds."""

    def __init__(self, cores: int, task_s: float, rng: random.Random) -> None:
        self.buffered: list = []
        self.running: list[tuple[float, int, object, float]] = []  # heap: (ends, seq, task, started)
        self.task_s = task_s
        self.rng = rng
        self.first_left = cores  # the first node-full starts part-way through its length
        self.seq = 0
        self.intervals: list[tuple[float, float, int]] = []  # (started, ended, cores) of ended tasks

    @property
    def unstarted(self):
        return self.buffered

    def busy(self):
        from hog.store.packing import Busy

        return [Busy(task.needs, None) for _, _, task, _ in self.running] + [
            Busy(task.needs, None) for task in self.buffered
        ]

    def any_running(self) -> bool:
        return bool(self.running)

    def duration(self) -> float:
        length = self.task_s * self.rng.uniform(1 - JITTER, 1 + JITTER)
        if self.first_left > 0:
            self.first_left -= 1
            return length * self.rng.random()
        return length


@dataclass
class SimulatedHog:
    index: int
    db: object
    rounds: object
    ledger: object
    tasks: SimulatedTasks
    read_fd: int
    ran: int = 0
    first_claim_mono: float | None = None


def _make_hog(index: int, db_path: str, hog_id: int, config: Config, rng: random.Random) -> SimulatedHog:
    from hog.pilot.background import DatabaseThread
    from hog.pilot.ledger import Ledger
    from hog.pilot.resources import NodeResources
    from hog.pilot.rounds import DatabaseRounds
    from hog.pilot.walltime import Walltime
    from hog.store.db import open_database

    db = open_database(db_path)
    db.timeout_s = None  # as a hog: wait in line as long as it takes
    read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    node = NodeResources(cores=config.cores, gpus=[], mem_bytes=256 * GIB, cpu_ids=None)
    ledger = Ledger(node)
    rounds = DatabaseRounds(
        db=db,
        hog_id=hog_id,
        host=f"sim{index}",
        name=f"hog {hog_id} (simulated)",
        thread=DatabaseThread(write_fd),
        ledger=ledger,
        walltime=Walltime(end_by=None, margin_s=0.0),
        heartbeat_s=config.heartbeat_s,
        timeout_s=300.0,
    )
    return SimulatedHog(index, db, rounds, ledger, SimulatedTasks(config.cores, config.task_s, rng), read_fd)


def _turn(hog: SimulatedHog, now: float, epoch_offset: float) -> float:
    """One turn of a hog's loop; when it must look again (monotonic)."""
    from hog.store.claims import TaskResult

    tasks, rounds = hog.tasks, hog.rounds
    outcome = rounds.collect(now)
    if outcome is not None:
        if outcome.given_up:
            raise RuntimeError(f"simulated hog {hog.index} was declared lost")
        if outcome.claimed and hog.first_claim_mono is None:
            hog.first_claim_mono = now
        tasks.buffered.extend(outcome.claimed)
    while tasks.running and tasks.running[0][0] <= now:
        ended, _, task, started = heapq.heappop(tasks.running)
        hog.ledger.give_back(task, [])
        tasks.intervals.append((started, ended, task.cores))
        hog.ran += 1
        rounds.add_result(
            TaskResult(
                task.task_id,
                task.attempt,
                "exited",
                started + epoch_offset,
                ended + epoch_offset,
                exit_code=0,
            )
        )
        rounds.note_duration(tasks.task_s)
        rounds.room_freed()
    while tasks.buffered and tasks.buffered[0].cores <= hog.ledger.free().cores:
        task = tasks.buffered.pop(0)
        hog.ledger.take(task, [])
        tasks.seq += 1
        heapq.heappush(tasks.running, (now + tasks.duration(), tasks.seq, task, now))
        rounds.add_start(task.task_id, task.attempt, now + epoch_offset)
    rounds.give_next(now, tasks, claiming=True)
    due = rounds.next_due(now, tasks_running=tasks.any_running())
    if tasks.running:
        due = min(due, tasks.running[0][0])
    return due


def _note_holding() -> threading.Event:
    """An event set while a hog of this process holds the queue's lock (one at a time: the lock
    is exclusive across processes and threads)."""
    from hog.store import db

    holding = threading.Event()
    enter, leave = db._Transaction.__enter__, db._Transaction.__exit__

    def entered(self):
        connection = enter(self)
        holding.set()
        return connection

    def left(self, *exception):
        try:
            return leave(self, *exception)
        finally:
            holding.clear()

    db._Transaction.__enter__, db._Transaction.__exit__ = entered, left
    return holding


def _wait_while_held(holding: threading.Event) -> None:
    """Pause the hogs' loop while one of them writes (at most a second): tasks that end meanwhile
    start when it is done, as their cores' idle time. With the loop running on, the holder waited
    for the interpreter after each sqlite call (1,000 hogs, 10 s tasks, model-nfs: ~35 ms of its
    ~160 ms hold, neither its CPU nor the filesystem's sleeps)."""
    deadline = time.monotonic() + 1.0
    while holding.is_set() and time.monotonic() < deadline:
        time.sleep(0.002)


def worker(db_path: str, hog_ids: list[int], config: Config, start_at_epoch: float, out_path: str) -> None:
    """Run the given hogs until every one has claimed and `measure_s` more have passed."""
    sys.setswitchinterval(config.switch_interval_ms / 1000.0)
    collector = CollectorPauses(config.full_collections)
    if config.fs.startswith(MODEL):
        import latency_vfs

        latency_vfs.install(_model_latency(config))
    if not config.pacing:
        from hog.pilot.pacing import Pacing

        Pacing.interval_s = lambda self: self.flush_interval_s  # the hogs' writes before pacing
    if config.open_loop:
        from hog.pilot import pacing
        from hog.pilot.rounds import DatabaseRounds

        pacing.TARGET_WAIT_S = float("inf")  # no wait stretches the spacing
        DatabaseRounds._lasts_until_next_write = lambda self, now, buffered: False  # half-empty claims
    recorder = Recorder()
    recorder.install()
    holding = _note_holding() if config.loop_yields else None
    rounds_given = _count_rounds()
    rng = random.Random(config.seed * 7919 + hog_ids[0])
    hogs = [_make_hog(index, db_path, hog_id, config, rng) for index, hog_id in enumerate(hog_ids)]
    for hog in hogs:
        recorder.hog_of_db[id(hog.db)] = hog.index
    selector = selectors.DefaultSelector()
    for hog in hogs:
        selector.register(hog.read_fd, selectors.EVENT_READ, hog)
    time.sleep(max(0.0, start_at_epoch - time.time()))  # all workers start together
    epoch_offset = time.time() - time.monotonic()
    due: list[tuple[float, int]] = [(time.monotonic(), hog.index) for hog in hogs]
    window: tuple[float, float] | None = None
    cpu_at_begin: float | None = None  # this process's CPU seconds when the window began
    collected_at_begin = 0.0  # and the seconds its garbage collector had stopped it
    started = time.monotonic()
    while True:
        now = time.monotonic()
        if window is None and all(hog.first_claim_mono is not None for hog in hogs):
            # The first claims are made together; the rounds settle into their pace after them.
            window = (now + config.warmup_s, now + config.warmup_s + config.measure_s)
        if window is not None and cpu_at_begin is None and now >= window[0]:
            cpu_at_begin, collected_at_begin = _cpu_s(), collector.total_s
        if window is not None and now >= window[1]:
            break
        if window is None and now - started > START_TIMEOUT_S:
            raise RuntimeError("some simulated hogs never claimed a task")
        timeout = max(0.0, min(due[0][0] - now, 0.5)) if due else 0.5
        ready = {key.data.index for key, _ in selector.select(timeout)}
        if holding is not None:
            _wait_while_held(holding)
        for index in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(hogs[index].read_fd, 4096)
        now = time.monotonic()
        while due and due[0][0] <= now:
            ready.add(heapq.heappop(due)[1])
        for index in ready:
            heapq.heappush(due, (max(_turn(hogs[index], now, epoch_offset), now + 0.001), index))
        # A hog has one entry that counts: keep the heap from growing with stale ones.
        if len(due) > 4 * len(hogs):
            latest: dict[int, float] = {}
            for when, index in due:
                latest[index] = min(latest.get(index, when), when)
            due = [(when, index) for index, when in latest.items()]
            heapq.heapify(due)
    assert window is not None
    cpu_s = _cpu_s() - (cpu_at_begin or 0.0)
    collected_s = collector.total_s - collected_at_begin
    _write_result(
        out_path, hogs, recorder, window, config, rounds_given, cpu_s, collected_s, collector.long_pauses
    )
    if config.fs.startswith(MODEL):
        Path(out_path + ".counts").write_text(json.dumps(latency_vfs.counts()))
    # Let every round in hand end before leaving: a process that exits while one of its threads
    # holds the lock and another waits for it through FUSE cannot finish exiting (the waiter is
    # uninterruptible until the server answers, and the lock goes only with the last thread).
    for hog in hogs:
        if hog.rounds.thread.busy:
            hog.rounds.thread.wait(600.0)
        hog.rounds.thread.close()
    os._exit(0)


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def _write_result(
    out_path: str,
    hogs: list[SimulatedHog],
    recorder: Recorder,
    window,
    config: Config,
    rounds_given: list[tuple[float, str]],
    cpu_s: float,
    collected_s: float,
    collector_pauses: list[tuple[float, float, int]],
) -> None:
    begin, end = window
    busy_core_s = 0.0
    per_hog_ended: list[int] = []
    for hog in hogs:
        ended_in_window = 0
        for started, ended, cores in hog.tasks.intervals:
            busy_core_s += cores * max(0.0, min(ended, end) - max(started, begin))
            ended_in_window += begin <= ended < end
        for ends, _, task, started in hog.tasks.running:
            busy_core_s += task.cores * max(0.0, min(ends, end) - max(started, begin))
        per_hog_ended.append(ended_in_window)
    with recorder.guard:
        records = [record for record in recorder.records if begin <= record.ended_mono < end]
    data = {
        "window_s": end - begin,
        "busy_core_s": busy_core_s,
        "capacity_core_s": len(hogs) * config.cores * (end - begin),
        "tasks_ended": sum(per_hog_ended),
        "per_hog_ended": per_hog_ended,
        "transactions": [[getattr(r, field) for field in TRANSACTION_FIELDS] for r in records],
        "cpu_s": cpu_s,
        "collected_s": collected_s,
        "collector_pauses": [pause for pause in collector_pauses if begin <= pause[0] < end],
        "rounds_given": dict(collections.Counter(why for when, why in rounds_given if begin <= when < end)),
        "intervals_s": [hog.rounds.pacing.interval_s() for hog in hogs],
        "holds_s": [hog.rounds.pacing.hold_s or 0.0 for hog in hogs],
        "ramp_s": max(hog.first_claim_mono for hog in hogs) - min(hog.first_claim_mono for hog in hogs),
    }
    with open(out_path, "w") as out:
        json.dump(data, out)


# -- the parent: setup, workers, summary ---------------------------------------------------------


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def design_waits(config: Config, parts: list[dict]) -> list[float]:
    """The waits in line had each hold been its holder's CPU and the modelled filesystem's sleeps
    only: the same requests (when each hog asked for the lock) replayed through one FIFO lock.
    Here the holder also waits for a CPU (a thousand threads on two cores; README); on a cluster
    each hog has its node's CPUs. The replay keeps the requests as they came: hogs paced by
    shorter holds would have asked less often, so it errs long."""
    fs_s = _model_write_s(config)
    requests = sorted(
        # The model's sleeps as the write paid them (more with pages spilled), else as a write pays.
        (t[7] - t[2] - t[1], t[6] + (t[8] if len(t) > 8 else fs_s))
        for part in parts
        for t in part["transactions"]
        if len(t) > 7
    )
    waits, free_at = [], float("-inf")
    for asked, service in requests:
        start = max(asked, free_at)
        waits.append(start - asked)
        free_at = start + service
    return waits


def _model_write_s(config: Config) -> float:
    """The modelled filesystem's sleeps in one write transaction (latency_vfs.py: 11 lock calls,
    4 fsyncs, 14 metadata operations, the flock's stat); 0 on a mount or a local folder."""
    if not config.fs.startswith(MODEL):
        return 0.0
    latency = _model_latency(config)
    return (11 * latency["lock_ms"] + 4 * latency["fsync_ms"] + 15 * latency["metadata_ms"]) / 1000.0


def summarise(config: Config, parts: list[dict]) -> dict:
    window = min(part["window_s"] for part in parts)
    transactions = [t for part in parts for t in part["transactions"]]
    waits = [t[1] for t in transactions]
    by_hog: dict[tuple[int, int], list[float]] = {}
    for number, part in enumerate(parts):
        for t in part["transactions"]:
            by_hog.setdefault((number, t[0]), []).append(t[1])
    per_hog = [n for part in parts for n in part["per_hog_ended"]]
    moved = sum(t[3] + t[4] for t in transactions)
    return {
        "config": asdict(config),
        "tasks_per_s": sum(part["tasks_ended"] for part in parts) / window,
        "utilisation": sum(p["busy_core_s"] for p in parts) / sum(p["capacity_core_s"] for p in parts),
        "lock_wait_p50_s": _percentile(waits, 0.5),
        "lock_wait_p99_s": _percentile(waits, 0.99),
        "worst_hog_wait_p99_s": max((_percentile(w, 0.99) for w in by_hog.values()), default=0.0),
        "transactions_per_s": len(transactions) / window,
        "tasks_per_transaction": moved / len(transactions) / 2 if transactions else 0.0,
        "lock_held_mean_s": sum(t[2] for t in transactions) / len(transactions) if transactions else 0.0,
        # The holder's own CPU while it held the lock; held minus this minus the modelled sleeps is
        # time it waited for a CPU (this machine, not the design).
        "lock_held_cpu_mean_s": sum(t[6] for t in transactions) / len(transactions) if transactions else 0.0,
        # Of the hold, the modelled filesystem's sleeps and sqlite's busy handler's (the COMMIT
        # waiting for readers); what is neither these nor the CPU is the holder waiting for the
        # interpreter or a core.
        "lock_held_fs_sleep_mean_s": _mean([t[8] for t in transactions if len(t) > 9]),
        "lock_held_busy_sleep_mean_s": _mean([t[9] for t in transactions if len(t) > 9]),
        "fs_ops_per_write": {
            kind: _mean([t[10].get(kind, 0) for t in transactions if len(t) > 10])
            for kind in ("lock", "fsync", "metadata")
        },
        "lock_busy_share": sum(t[2] for t in transactions) / window,
        # The worker processes' CPU over the window, of this machine's: near 1, the holder of
        # the lock waits for a CPU too.
        "machine_cpu_share": sum(part.get("cpu_s", 0.0) for part in parts) / window / (os.cpu_count() or 1),
        # Seconds the interpreter's garbage collector stopped a worker process (all its hogs).
        "collector_pause_total_s": sum(part.get("collected_s", 0.0) for part in parts),
        "collector_pause_longest_s": max(
            (p[1] for part in parts for p in part.get("collector_pauses", [])), default=0.0
        ),
        "design_wait_p50_s": _percentile(design := design_waits(config, parts), 0.5),
        "design_wait_p99_s": _percentile(design, 0.99),
        "rounds_given_per_s": {
            why: sum(part["rounds_given"].get(why, 0) for part in parts) / window
            for why in sorted({why for part in parts for why in part["rounds_given"]})
        },
        "fewest_tasks_per_hog": min(per_hog),
        "most_tasks_per_hog": max(per_hog),
        "ramp_s": max(part["ramp_s"] for part in parts),
        "paced_interval_mean_s": sum(sum(p["intervals_s"]) for p in parts) / config.hogs,
        "measured_hold_mean_s": sum(sum(p["holds_s"]) for p in parts) / config.hogs,
        "window_s": window,
    }


def _tasks_needed(config: Config) -> int:
    # Enough that the queue never runs dry (the ramp, the window and what hogs hold ahead), and
    # that what still waits at the end, over the hogs, is more than one hog may hold ahead: a
    # claim takes no more than that share (claims.fair_limit), which would cut the claims short
    # in the window as if the run were ending.
    from hog.pilot.pacing import PACED_MAX_TASKS
    from hog.store.beats import LONGEST_WRITE_SPACING_S

    per_core = (config.warmup_s + config.measure_s + 120.0) / config.task_s + 20
    held_ahead = min(PACED_MAX_TASKS, config.cores * 2 * LONGEST_WRITE_SPACING_S / config.task_s)
    return int(config.hogs * (config.cores * per_core + held_ahead))


def _cli(db_path: str, *args: str, input_text: str | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "hog", "--db", db_path, *args],
        capture_output=True,
        text=True,
        env=env,
        input=input_text,
    )
    if result.returncode != 0:
        raise RuntimeError(f"slurm-hog {' '.join(args)} failed: {result.stderr.strip()}")


def _register(db_path: str, hogs: int, cores: int, heartbeat_s: float) -> list[int]:
    from hog.pilot.options import lease_for
    from hog.store import claims
    from hog.store.db import open_database

    db = open_database(db_path)
    try:
        info = [
            claims.HogInfo(f"sim{n}", os.getpid(), None, cores, [], 256 * GIB, None, lease_for(heartbeat_s))
            for n in range(hogs)
        ]
        return [claims.start_hog(db, one) for one in info]  # type: ignore[misc]
    finally:
        db.close()


def _model_latency(config: Config) -> dict[str, float]:
    latency = dict(_load_slowfs().PRESETS[config.fs[len(MODEL) :]])
    if config.fsync_ms is not None:
        latency["fsync_ms"] = config.fsync_ms
    return latency


def _mounted(config: Config, folder: str | None) -> bool:
    return config.fs != "local" and not config.fs.startswith(MODEL) and not folder


def _load_slowfs():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hog_slowfs", REPO / "scripts" / "slowfs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def queue_folder(fs: str, folder: str | None):
    """(backing folder to set up in, folder the hogs use): a slow mount unless `local`."""
    if folder:
        yield folder, folder
        return
    scratch = tempfile.mkdtemp(prefix="hog-simulate-")
    backing, mountpoint = os.path.join(scratch, "backing"), os.path.join(scratch, "mnt")
    os.mkdir(backing)
    os.mkdir(mountpoint)
    try:
        if fs == "local" or fs.startswith(MODEL):
            yield backing, backing
        else:
            yield backing, mountpoint
    finally:
        with contextlib.suppress(Exception):
            if os.path.ismount(mountpoint):
                _load_slowfs().unmount(mountpoint)
        shutil.rmtree(scratch, ignore_errors=True)


def run(
    config: Config,
    folder: str | None = None,
    fs_args: list[str] | None = None,
    transactions_path: str | None = None,
) -> dict:
    with queue_folder(config.fs, folder) as (setup_folder, hog_folder):
        setup_db = os.path.join(setup_folder, "queue.sqlite")
        _cli(setup_db, "init")
        _cli(setup_db, "submit", "--array", f"1-{_tasks_needed(config)}", "--", "sleep", str(config.task_s))
        hog_ids = _register(setup_db, config.hogs, config.cores, config.heartbeat_s)
        if _mounted(config, folder):
            slowfs = _load_slowfs()
            problem = slowfs.available()
            if problem:
                raise SystemExit(f"simulate: cannot mount the slow filesystem: {problem}")
            if slowfs.main(["mount", setup_folder, hog_folder, "--preset", config.fs, *(fs_args or [])]) != 0:
                raise SystemExit("simulate: mounting the slow filesystem failed")
        db_path = os.path.join(hog_folder, "queue.sqlite")
        processes = max(1, min(config.processes, config.hogs))
        start_at = time.time() + 1.0 + 0.02 * config.hogs / processes  # after every worker opened its hogs
        outputs = [os.path.join(setup_folder, f"worker-{n}.json") for n in range(processes)]
        children = []
        for number in range(processes):
            command = [
                sys.executable,
                __file__,
                "worker",
                db_path,
                json.dumps(hog_ids[number::processes]),
                json.dumps(asdict(config)),
                str(start_at),
                outputs[number],
            ]
            children.append(subprocess.Popen(command))
        limit_s = START_TIMEOUT_S + 2 * config.measure_s
        failed = [child for child in children if child.wait(timeout=limit_s) != 0]
        if failed:
            raise SystemExit(f"simulate: {len(failed)} worker processes failed")
        parts = []
        for path in outputs:
            with open(path) as data:
                parts.append(json.load(data))
        summary = summarise(config, parts)
        if transactions_path:
            _write_transactions(transactions_path, parts)
        if _mounted(config, folder):
            summary["fs_counts"] = _load_slowfs().read_stats(hog_folder)
        elif config.fs.startswith(MODEL):
            modelled: dict[str, int] = {}
            for path in outputs:
                for kind, number in json.loads(Path(path + ".counts").read_text()).items():
                    modelled[kind] = modelled.get(kind, 0) + number
            summary["fs_counts"] = {"latency": _model_latency(config), "kinds": modelled}
    return summary


def _write_transactions(path: str, parts: list[dict]) -> None:
    """Every measured write, one JSON object a line, with its worker process (`process`; a hog is
    `process`, `hog`), to look at the tail the summary's percentiles hide. Each worker measures
    its own window (from when its own hogs have all claimed), so near the windows' ends the lock
    also serves writes of workers outside theirs, not listed."""
    with open(path, "w") as out:
        for number, part in enumerate(parts):
            for t in part["transactions"]:
                write = dict(zip(TRANSACTION_FIELDS, t, strict=True))
                out.write(json.dumps({"process": number, **write}) + "\n")


def describe(summary: dict) -> str:
    c = summary["config"]
    return (
        f"{c['hogs']} hogs x {c['cores']} cores, {c['task_s']:g} s tasks, fs {c['fs']}: "
        f"{summary['tasks_per_s']:,.0f} tasks/s, {100 * summary['utilisation']:.1f}% of cores busy, "
        f"lock wait p50 {summary['lock_wait_p50_s']:.3f} s p99 {summary['lock_wait_p99_s']:.3f} s "
        f"(worst hog {summary['worst_hog_wait_p99_s']:.3f} s), {summary['transactions_per_s']:.1f} "
        f"transactions/s, {summary['tasks_per_transaction']:.1f} tasks per transaction, "
        f"fewest tasks of a hog {summary['fewest_tasks_per_hog']}, ramp {summary['ramp_s']:.1f} s, "
        f"lock held {summary['lock_held_mean_s'] * 1000:.0f} ms per transaction "
        f"({summary.get('lock_held_cpu_mean_s', 0.0) * 1000:.0f} ms of it the holder's CPU"
        + _modelled_hold(summary)
        + "; lock busy "
        f"{100 * summary.get('lock_busy_share', 0.0):.0f}% of the time; the simulator used "
        f"{100 * summary.get('machine_cpu_share', 0.0):.0f}% of this machine's CPU, its garbage "
        f"collections stopped a worker {summary.get('collector_pause_total_s', 0.0):.1f} s in all "
        f"(longest {summary.get('collector_pause_longest_s', 0.0):.2f} s); held as CPU and "
        f"filesystem only, the same requests would wait p50 {summary.get('design_wait_p50_s', 0.0):.3f} s "
        f"p99 {summary.get('design_wait_p99_s', 0.0):.3f} s), hogs write every "
        f"{summary['paced_interval_mean_s']:.1f} s; rounds/s by why: "
        + ", ".join(f"{why} {rate:.2f}" for why, rate in summary.get("rounds_given_per_s", {}).items())
    )


def _modelled_hold(summary: dict) -> str:
    """What of the hold the model's sleeps and sqlite's busy handler took, and the operations a
    write paid; nothing off a model."""
    ops = {kind: n for kind, n in summary.get("fs_ops_per_write", {}).items() if n}
    if not ops:
        return ""
    return (
        f", {summary['lock_held_fs_sleep_mean_s'] * 1000:.0f} ms the modelled filesystem, "
        f"{summary['lock_held_busy_sleep_mean_s'] * 1000:.0f} ms waiting for readers; "
        + ", ".join(f"{n:.1f} {kind}" for kind, n in ops.items())
        + " operations a write"
    )


def validate(arguments: argparse.Namespace) -> dict:
    """Real hogs with `sleep` tasks on the same slow filesystem, measured as the simulator measures
    its own; then the simulator with the same configuration."""
    config = _config(arguments, arguments.hogs, arguments.task_s)
    with queue_folder(config.fs, None) as (setup_folder, hog_folder):
        slowfs = _load_slowfs()
        if (
            config.fs != "local"
            and slowfs.main(["mount", setup_folder, hog_folder, "--preset", config.fs]) != 0
        ):
            raise SystemExit("simulate: mounting the slow filesystem failed")
        db_path = os.path.join(hog_folder, "queue.sqlite")
        _cli(db_path, "init")
        # Lengths spread +-10% as the simulator's, in a steady state from the start: the first
        # task of each core runs part of its length.
        rng = random.Random(config.seed)
        firsts = config.hogs * config.cores
        lengths = [config.task_s * rng.random() for _ in range(firsts)]
        lengths += [config.task_s * rng.uniform(1 - JITTER, 1 + JITTER) for _ in range(_tasks_needed(config))]
        _cli(db_path, "submit", "--file", "-", input_text="".join(f"sleep {s:.3f}\n" for s in lengths))
        waits_path = os.path.join(setup_folder, "lock-waits.txt")
        env = dict(os.environ, PYTHONPATH=str(REPO), SLURM_HOG_LOCK_STATS=waits_path)
        hogs = [
            subprocess.Popen(
                [sys.executable, "-m", "hog", "--db", db_path, "hog", "--cores", str(config.cores)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(os.path.join(setup_folder, f"hog-{n}.log"), "w"),  # noqa: SIM115
            )
            for n in range(config.hogs)
        ]
        from hog.store.db import open_database

        reader = open_database(db_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            claimed = reader.query_one("SELECT count(DISTINCT hog_id) FROM attempts")[0]
            if claimed >= config.hogs:
                break
            time.sleep(0.5)
        time.sleep(config.warmup_s)
        begin = time.time()
        unlocks_before = (
            slowfs.read_stats(hog_folder)["counts"].get("flock_unlock", 0) if config.fs != "local" else 0
        )
        time.sleep(config.measure_s)
        end = time.time()
        unlocks_after = (
            slowfs.read_stats(hog_folder)["counts"].get("flock_unlock", 0) if config.fs != "local" else 0
        )
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.wait(timeout=600)
        rows = reader.query("SELECT started_at, ended_at, hog_id FROM attempts WHERE started_at IS NOT NULL")
        reader.close()
        busy = sum(max(0.0, min(ended or end, end) - max(started, begin)) for started, ended, _ in rows)
        ended_in = [hog_id for _, ended, hog_id in rows if ended is not None and begin <= ended < end]
        with open(waits_path) as data:
            waits = [float(line) for line in data if line.strip()]
        transactions = unlocks_after - unlocks_before
        real = {
            "tasks_per_s": len(ended_in) / (end - begin),
            "utilisation": busy / (config.hogs * config.cores * (end - begin)),
            "lock_wait_p50_s": _percentile(waits, 0.5),
            "lock_wait_p99_s": _percentile(waits, 0.99),
            "transactions_per_s": transactions / (end - begin),
            "tasks_per_transaction": len(ended_in) / transactions if transactions else 0.0,
        }
    simulated = run(replace(config, fs=arguments.simulate_fs) if arguments.simulate_fs else config)
    figures = ("tasks_per_s", "utilisation", "transactions_per_s", "tasks_per_transaction", "lock_wait_p50_s")
    comparison = {"config": asdict(config), "real": real, "simulated": simulated}
    for name in figures:
        ratio = simulated[name] / real[name] if real[name] else float("nan")
        print(f"{name}: real {real[name]:.3f}, simulated {simulated[name]:.3f} ({ratio:.2f}x)")
    return comparison


GRID_HOGS = (10, 100, 300, 1000)
GRID_TASK_S = (1.0, 10.0, 60.0, 600.0)


def _config(arguments: argparse.Namespace, hogs: int, task_s: float) -> Config:
    return Config(
        hogs=hogs,
        cores=arguments.cores,
        task_s=task_s,
        measure_s=arguments.measure_s,
        warmup_s=arguments.warmup_s,
        processes=arguments.processes,
        fs=arguments.fs,
        pacing=not arguments.no_pacing,
        heartbeat_s=arguments.heartbeat_s,
        fsync_ms=float(arguments.fsync_ms) if arguments.fsync_ms else None,
        switch_interval_ms=arguments.switch_interval_ms,
        open_loop=arguments.open_loop,
        loop_yields=not arguments.contended_holder,
        full_collections=arguments.full_collections,
    )


def _fs_args(arguments: argparse.Namespace) -> list[str]:
    if not arguments.fsync_ms or arguments.fs.startswith(MODEL):
        return []  # a model takes it from its Config
    return ["--fsync-ms", arguments.fsync_ms]


def grid(arguments: argparse.Namespace) -> None:
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    label = f"{arguments.fs}{'-' + arguments.fsync_ms + 'ms' if arguments.fsync_ms else ''}"
    label += "-unpaced" if arguments.no_pacing else ""
    label += f"-heartbeat{arguments.heartbeat_s:g}s" if arguments.heartbeat_s != HEARTBEAT_S else ""
    results_path = out / f"simulate-{label}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["config"]["hogs"], r["config"]["task_s"]) for r in results}
    for hogs in (int(h) for h in arguments.hogs_list.split(",")):
        for task_s in (float(t) for t in arguments.task_list.split(",")):
            if (hogs, task_s) in done:
                continue
            summary = run(_config(arguments, hogs, task_s), fs_args=_fs_args(arguments))
            summary["label"] = label
            print(describe(summary), flush=True)
            results.append(summary)
            results_path.write_text(json.dumps(results, indent=1))


def plot(results_paths: list[str], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results_paths), figsize=(6 * len(results_paths), 4.2), squeeze=False)
    for axis, path in zip(axes[0], results_paths, strict=True):
        results = json.loads(Path(path).read_text())
        label = results[0].get("label", results[0]["config"]["fs"])
        for task_s in sorted({r["config"]["task_s"] for r in results}):
            points = sorted(
                (r["config"]["hogs"], 100 * r["utilisation"])
                for r in results
                if r["config"]["task_s"] == task_s
            )
            color = f"C{sorted(GRID_TASK_S).index(task_s)}" if task_s in GRID_TASK_S else None
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            axis.plot(xs, ys, marker="o", color=color, label=f"{task_s:g} s tasks")
        axis.axhline(95, color="grey", linestyle=":", linewidth=1)
        axis.axhline(90, color="grey", linestyle="--", linewidth=1)
        axis.set_xscale("log")
        axis.set_ylim(0, 102)
        axis.set_xlabel("hogs (64 cores each)")
        axis.set_ylabel("cores busy (%)")
        axis.set_title(f"one queue file on slowfs '{label}'")
        axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        worker(argv[1], json.loads(argv[2]), Config(**json.loads(argv[3])), float(argv[4]), argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "grid", "validate"):
        command = commands.add_parser(name)
        command.add_argument("--cores", type=int, default=64, help="cores per hog (default 64)")
        command.add_argument("--measure-s", type=float, default=30.0, help="seconds measured (default 30)")
        command.add_argument(
            "--warmup-s", type=float, default=30.0, help="seconds after every hog's first claim (default 30)"
        )
        command.add_argument("--processes", type=int, default=4, help="worker processes (default 4)")
        command.add_argument(
            "--fs",
            default="nfs",
            choices=("none", "nfs", "lustre", "local", "model-nfs", "model-lustre"),
            help="filesystem (default nfs); model-*: its latencies slept in-process, no mount",
        )
        command.add_argument("--fsync-ms", help="override the preset's fsync latency (milliseconds)")
        command.add_argument(
            "--heartbeat-s",
            type=float,
            default=HEARTBEAT_S,
            help="the hogs' --heartbeat, seconds (default 30)",
        )
        command.add_argument(
            "--no-pacing", action="store_true", help="hogs write as they did before pacing.py"
        )
        command.add_argument(
            "--open-loop",
            action="store_true",
            help="hogs pace as before their waits closed the loop (for comparison)",
        )
        command.add_argument(
            "--contended-holder",
            action="store_true",
            help="the hogs' loop runs on while one of its process's hogs holds the lock (as before)",
        )
        command.add_argument(
            "--full-collections",
            action="store_true",
            help="workers run Python's full garbage collections (as before: every hog of the process stops)",
        )
        command.add_argument(
            "--switch-interval-ms",
            type=float,
            default=Config.switch_interval_ms,
            help="the worker processes' GIL switch interval, milliseconds (default 0.5; Python's: 5)",
        )
    commands.choices["validate"].add_argument(
        "--simulate-fs", help="simulate on this instead of --fs (model-nfs: the model against real hogs)"
    )
    for name in ("run", "validate"):
        commands.choices[name].add_argument("--hogs", type=int, default=100, help="hogs (default 100)")
        commands.choices[name].add_argument("--task-s", type=float, default=10.0, help="task length, seconds")
    run_command = commands.choices["run"]
    run_command.add_argument("--folder", help="put the queue in this folder instead (no mount)")
    run_command.add_argument("--json", dest="json_path", help="write the summary here")
    run_command.add_argument(
        "--transactions",
        dest="transactions_path",
        help="write every measured write here, a JSON object a line: its worker (process) and hog (its"
        " index there), wait_s and hold_s (seconds; of the hold cpu_s, fs_sleep_s, busy_sleep_s), results"
        " and claimed (counts), ended_mono (the machine's monotonic clock, seconds), fs_ops (by class)",
    )
    grid_command = commands.choices["grid"]
    grid_command.add_argument("--out", default="bench-results/simulate", help="folder for the results")
    grid_command.add_argument("--hogs-list", default=",".join(map(str, GRID_HOGS)))
    grid_command.add_argument("--task-list", default=",".join(f"{t:g}" for t in GRID_TASK_S))
    plot_command = commands.add_parser("plot")
    plot_command.add_argument("results", nargs="+", help="JSON files written by grid")
    plot_command.add_argument("--png", default="bench-results/simulate/utilisation.png")
    arguments = parser.parse_args(argv)
    for name in ("hogs", "cores", "task_s", "measure_s", "processes"):
        if getattr(arguments, name, 1) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be more than 0")
    for option, name in (("--json", "json_path"), ("--transactions", "transactions_path")):
        # Found before a run of many minutes, not after it.
        folder = os.path.dirname(os.path.abspath(getattr(arguments, name, None) or "."))
        if not os.access(folder, os.W_OK | os.X_OK):
            parser.error(f"{option}: cannot write in {folder} (give a file in a folder that exists)")
    if arguments.command == "plot":
        plot(arguments.results, arguments.png)
        return 0
    if arguments.command == "grid":
        grid(arguments)
        return 0
    if arguments.command == "validate":
        comparison = validate(arguments)
        out = Path("bench-results/simulate")
        out.mkdir(parents=True, exist_ok=True)
        (out / f"validate-{arguments.fs}-{arguments.hogs}x{arguments.cores}.json").write_text(
            json.dumps(comparison, indent=1)
        )
        return 0
    config = _config(arguments, arguments.hogs, arguments.task_s)
    summary = run(config, arguments.folder, _fs_args(arguments), arguments.transactions_path)
    print(describe(summary))
    if arguments.json_path:
        Path(arguments.json_path).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
