"""A slow shared filesystem modelled inside the process: no FUSE server, the same sleeps.

    import latency_vfs; latency_vfs.install({"metadata_ms": 1.0, "fsync_ms": 5.0, "lock_ms": 1.0})

scripts/slowfs.py puts a Python FUSE server between every file operation and the disk: with a
thousand simulated hogs that server and their threads share this machine's two cores, and the
hog that holds the queue's lock waits for a CPU as well as for the filesystem (README: 150-210 ms
held per transaction at 1,000 hogs against 75-110 ms at 100). This module sleeps the same
latencies where they fall, in the process that pays them, and passes the operations to the local
disk at once:

- an apsw VFS over sqlite's own ("unix"), made the default: the lock calls each of sqlite's lock
  levels makes (fcntl: SHARED 3, RESERVED 1, EXCLUSIVE 2, back to SHARED 2, to none 1), the
  fdatasyncs (the journal's first one also syncs its folder) and the lookups, stats, creates,
  chowns and unlinks around the journal, as counted on the slowfs mount with strace;
- the queue's flock and its unlock (one lock round trip each) and the stat that checks the lock
  file after each flock (hog.store.db);
- a hog's beat file: its fdatasync, and a reader's open (hog.store.beats).

Per write transaction that is 11 lock calls, 4 fsyncs and 14 metadata operations, as the slowfs
mount counts them (README); per read, 4 lock calls and 2 metadata operations. `counts()` gives the
operations paid so far, as slowfs.py's stats do. Checked against the FUSE mount with
`simulate.py validate` and `simulate.py run --fs nfs` against `--fs model-nfs` (README).
"""

import collections
import threading
import time

import apsw

VFS_NAME = "hog-latency"
# Lock calls (fcntl) that sqlite's unix VFS makes to reach each level, and to fall back to each.
_LOCK_CALLS = {1: 3, 2: 1, 3: 1, 4: 2}  # SHARED, RESERVED, PENDING, EXCLUSIVE
_UNLOCK_CALLS = {1: 2, 0: 1}  # back to SHARED, to none
# Metadata operations around the rollback journal (lookups, stats of the database for the mode,
# create, fstat, fchown), its unlink, and the folder opened for its first fdatasync.
_JOURNAL_OPEN_METADATA = 8
_JOURNAL_DELETE_METADATA = 2
_FOLDER_SYNC_METADATA = 1
_DATABASE_OPEN_METADATA = 3

_counts: collections.Counter = collections.Counter()
_guard = threading.Lock()
_latency = {"metadata_ms": 0.0, "fsync_ms": 0.0, "lock_ms": 0.0}
_installed: list[object] = []  # the VFS object: unregistered when collected
_mine = threading.local()  # this thread's operations paid (`counts`) and busy handler's sleep (`busy_s`)


def _pay(kind: str, times: int = 1) -> None:
    if times <= 0:
        return
    with _guard:
        _counts[kind] += times
    delay_s = times * _latency[f"{kind}_ms"] / 1000.0
    if delay_s > 0:
        time.sleep(delay_s)
    mine = getattr(_mine, "counts", None)
    if mine is None:
        mine = _mine.counts = collections.Counter()
    mine[kind] += times


def counts() -> dict[str, int]:
    """Operations paid so far by latency class (metadata, fsync, lock)."""
    with _guard:
        return dict(_counts)


def latency_s(operations: collections.Counter) -> float:
    """Seconds that `operations` (counts by latency class) sleep."""
    return sum(times * _latency[f"{kind}_ms"] for kind, times in operations.items()) / 1000.0


def thread_counts() -> collections.Counter:
    """Operations paid so far by this thread, by latency class."""
    mine = getattr(_mine, "counts", None)
    return collections.Counter() if mine is None else collections.Counter(mine)


def thread_busy_s() -> float:
    """Seconds this thread has slept in sqlite's busy handler (a writer's COMMIT waiting for
    readers to let go of the file)."""
    return getattr(_mine, "busy_s", 0.0)


class _SlowFile(apsw.VFSFile):
    def __init__(self, name: apsw.URIFilename | str | None, flags: list[int]) -> None:
        self.journal = str(name).endswith("-journal")
        self.synced = False
        _pay("metadata", _JOURNAL_OPEN_METADATA if self.journal else _DATABASE_OPEN_METADATA)
        super().__init__("unix", name, flags)

    def xLock(self, level: int) -> None:
        _pay("lock", _LOCK_CALLS.get(level, 1))
        super().xLock(level)

    def xUnlock(self, level: int) -> None:
        _pay("lock", _UNLOCK_CALLS.get(level, 1))
        super().xUnlock(level)

    def xCheckReservedLock(self) -> bool:
        _pay("lock")
        return super().xCheckReservedLock()

    def xSync(self, flags: int) -> None:
        if self.journal and not self.synced:
            self.synced = True
            _pay("metadata", _FOLDER_SYNC_METADATA)
            _pay("fsync")  # the folder, which holds the journal's name
        _pay("fsync")
        super().xSync(flags)


class _SlowVFS(apsw.VFS):
    def __init__(self) -> None:
        super().__init__(VFS_NAME, "unix", makedefault=True)

    def xOpen(self, name: apsw.URIFilename | str | None, flags: list[int]) -> apsw.VFSFile:
        return _SlowFile(name, flags)

    def xAccess(self, pathname: str, flags: int) -> bool:
        _pay("metadata")
        return super().xAccess(pathname, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        _pay("metadata", _JOURNAL_DELETE_METADATA)
        super().xDelete(filename, syncdir)

    def xSleep(self, microseconds: int) -> int:
        _mine.busy_s = getattr(_mine, "busy_s", 0.0) + microseconds / 1e6
        return super().xSleep(microseconds)


class _SlowFcntl:
    """hog.store.db's `fcntl`: every flock call is a round trip to the lock server."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def flock(self, fd: int, operation: int) -> None:
        _pay("lock")
        self._real.flock(fd, operation)


def install(latency: dict[str, float]) -> None:
    """Sleep `latency` (milliseconds by class) in this process's queue operations, from now on:
    before any queue database is opened."""
    _latency.update(latency)
    if _installed:
        return
    _installed.append(_SlowVFS())
    from hog.store import beats, db

    db.fcntl = _SlowFcntl(db.fcntl)  # type: ignore[assignment]
    acquire = db.Database._acquire_lock

    def acquire_and_check(self) -> None:
        acquire(self)
        _pay("metadata")  # the stat that checks the lock file is still the one at its path

    db.Database._acquire_lock = acquire_and_check  # type: ignore[method-assign]
    beat = beats.Beater.beat

    def slow_beat(self, now: float) -> bool:
        _pay("fsync")
        return beat(self, now)

    beats.Beater.beat = slow_beat  # type: ignore[method-assign]
    last_beat = beats.last_beat

    def slow_last_beat(files, hog_id: int) -> float | None:
        _pay("metadata", 2)  # open afresh (lookup, attributes); the read is a page
        return last_beat(files, hog_id)

    beats.last_beat = slow_last_beat
