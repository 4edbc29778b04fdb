"""Opening the queue database and the only place that begins and commits transactions.

Writers are serialised cluster-wide by an exclusive flock on FILE.lock before BEGIN IMMEDIATE:
sqlite's own busy handler lets some writers starve under contention, flock does not (DESIGN.md).
"""

import errno
import fcntl
import gc
import os
import stat
import time
from collections.abc import Iterator

import apsw

from hog.errors import DatabaseError, DatabaseGoneError, InsecureDatabaseError, LockTimeoutError
from hog.store import doorbell, schema
from hog.store.paths import (
    OWNER_AND_GROUP,
    OWNER_ONLY,
    QueueFiles,
    keep_mode,
    make_private_dirs,
    missing_permission,
)

DEFAULT_DB = "jobs.sqlite"
DEFAULT_TIMEOUT_S = 300.0
# sqlite writes a transaction's dirty pages to the file before COMMIT once they outgrow its page
# cache (2 MB), and syncs the journal first: two more fsyncs each time. A thousand hogs' writes of
# ~1,500 results and claims spilled ~2.4 times each (8.8 fsyncs a write, not 4; on Lustre's 20 ms
# a third of the lock's hold; README). Pages past the cache stay in memory up to this many, until
# the commit: 64 MiB of 4 KiB pages, for a hog's largest write (8,192 results and as many claims;
# the simulator's writes dirtied about a page for each) with room; bigger transactions (a submit of
# hundreds of thousands of tasks) spill as before.
SPILL_AFTER_PAGES = 16384
_SQLITE_READONLY_DBMOVED = 1032  # the file open here was unlinked or renamed


class Database:
    """One connection to the queue database plus the lock file that serialises its writers."""

    def __init__(self, path: str, connection: apsw.Connection, timeout_s: float | None) -> None:
        self.path = path
        self.connection = connection
        self.timeout_s = timeout_s
        self.files = QueueFiles(path)
        self.lock_path = self.files.lock
        self._lock_fd: int | None = None
        self._doorbell_fd: int | None = None
        # For benchmarks: $SLURM_HOG_LOCK_STATS names a file that gets every lock wait (seconds).
        self.lock_stats_path = os.environ.get("SLURM_HOG_LOCK_STATS")
        self.lock_waits_s: list[float] = []
        self.last_lock_wait_s = 0.0
        self.total_lock_wait_s = 0.0  # a hog writes it with its heartbeat

    # -- reading -----------------------------------------------------------------------------

    def query(self, sql: str, params: tuple | dict = ()) -> list[tuple]:
        with _TranslatedErrors(self.path):
            return list(self.connection.execute(sql, params))

    def query_one(self, sql: str, params: tuple | dict = ()) -> tuple | None:
        with _TranslatedErrors(self.path):
            for row in self.connection.execute(sql, params):
                return row
        return None

    def stream(self, sql: str, params: tuple | dict = ()) -> Iterator[tuple]:
        """Rows one at a time, so that listings of a million tasks use constant memory."""
        with _TranslatedErrors(self.path):
            yield from self.connection.execute(sql, params)

    def snapshot(self) -> "_Snapshot":
        """A read transaction: several queries see one consistent state."""
        return _Snapshot(self)

    # -- writing -----------------------------------------------------------------------------

    def transaction(self) -> "_Transaction":
        """Flock, BEGIN IMMEDIATE, give the connection, COMMIT; ROLLBACK on any exception.

        Keep the body short: never a fork, a sleep or a subprocess wait inside.
        """
        return _Transaction(self)

    def _ring(self, rings: int, ended_ids: tuple[int, ...]) -> None:
        if self._doorbell_fd is None:
            try:
                self._doorbell_fd = self.files.open_beside(self.files.doorbell, os.O_RDWR)
            except OSError:
                return  # only the wake-ups are slower: readers look at the queue on a slower clock
        doorbell.ring(self._doorbell_fd, rings, ended_ids)

    def _open_lock_file(self) -> int:
        # Made again by whoever needs it first: private like the database, or its group's.
        try:
            fd = self.files.open_beside(self.lock_path, os.O_RDWR)
        except FileNotFoundError as error:
            if error.filename == self.path:
                raise _gone(self.path) from None
            raise self._lock_error(error) from None
        except OSError as error:
            raise self._lock_error(error) from None
        return fd

    def _lock_error(self, error: OSError) -> DatabaseError:
        return DatabaseError(
            f"cannot open the lock file {self.lock_path}: {error.strerror}; "
            "the folder of the database must be writable for anyone who changes the queue"
        )

    def _acquire_lock(self) -> None:
        started = time.monotonic()
        while True:
            if self._lock_fd is None:
                self._lock_fd = self._open_lock_file()
            remaining = None if self.timeout_s is None else self.timeout_s - (time.monotonic() - started)
            _flock_with_timeout(self._lock_fd, remaining, self.lock_path)
            # Someone may have deleted or replaced the lock file while we waited: then our lock
            # is on an orphan inode that other processes no longer see. Take the new one.
            try:
                current = os.stat(self.lock_path)
                held = os.fstat(self._lock_fd)
                if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    break
            except FileNotFoundError:
                pass
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self.last_lock_wait_s = time.monotonic() - started
        self.total_lock_wait_s += self.last_lock_wait_s
        if self.lock_stats_path:
            self.lock_waits_s.append(self.last_lock_wait_s)

    def close(self) -> None:
        if self.lock_stats_path and self.lock_waits_s:
            with open(self.lock_stats_path, "a") as stats:
                stats.write("".join(f"{wait:.6f}\n" for wait in self.lock_waits_s))
            self.lock_waits_s = []
        for fd in (self._lock_fd, self._doorbell_fd):
            if fd is not None:
                os.close(fd)
        self._lock_fd = self._doorbell_fd = None
        self.connection.close()

    def check_secure(self) -> None:
        """Refuse a database that users other than the owner and its group can write.

        Whoever can write the queue can run commands as the hog's user.
        """
        for path in (self.path, self.lock_path):
            try:
                mode = os.stat(path).st_mode
            except FileNotFoundError:
                continue
            if mode & stat.S_IWOTH:
                raise InsecureDatabaseError(
                    f"{path} is writable by every user, who could then run commands as you: "
                    f"run `chmod o-w {path}`"
                )


class _LockAlarm(Exception):
    pass


def _raise_lock_alarm(signum: int, frame: object) -> None:
    raise _LockAlarm


def _flock_with_timeout(fd: int, timeout_s: float | None, lock_path: str) -> None:
    """Take the lock, waiting in line at most `timeout_s` (None: as long as it takes)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    if timeout_s is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    message = (
        f"timed out after waiting for the lock {lock_path}: another process held it too long; "
        "try again or raise --timeout"
    )
    if timeout_s <= 0:
        raise LockTimeoutError(message)
    import threading

    if threading.current_thread() is not threading.main_thread():
        # No alarm outside the main thread: poll instead.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.01)
        raise LockTimeoutError(message)
    # A blocking flock queues us with the other waiters; an alarm bounds the wait.
    import signal

    previous = signal.signal(signal.SIGALRM, _raise_lock_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except _LockAlarm:
        raise LockTimeoutError(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _TranslatedErrors:
    """`with _TranslatedErrors(path):` turns sqlite's failures into messages that say what to do.

    Classes, not contextlib's generators, for this module's context managers: contextlib (with
    functools) is a tenth of slurm-hog-shell's start.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> bool:
        if isinstance(error, apsw.Error):
            _raise_translated(error, self.path)
        return False  # anything else goes on as it is


class _Snapshot:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __enter__(self) -> apsw.Connection:
        with _TranslatedErrors(self.db.path):
            self.db.connection.execute("BEGIN")
        return self.db.connection

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> bool:
        with _TranslatedErrors(self.db.path):
            try:
                self.db.connection.execute("COMMIT")
            finally:
                if isinstance(error, apsw.Error):
                    _raise_translated(error, self.db.path)
        return False


class _Transaction:
    """Holds the cluster-wide lock from BEGIN to COMMIT. Python's cycle collector waits until the
    lock is released: a claim's allocations would otherwise set it off inside (~5% of a lone
    hog's write of 1,800 claims and results, scripts/bench_exchange.py; an eighth of the holder's
    CPU with 250 simulated hogs' objects in one process, scripts/simulate.py)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.collecting = False  # the collector was on: turned back on with the lock's release

    def __enter__(self) -> apsw.Connection:
        db = self.db
        db._acquire_lock()
        try:
            self.collecting = gc.isenabled()
            gc.disable()
            with _TranslatedErrors(db.path):
                db.connection.rings = 0
                db.connection.ended_ids = ()
                db.connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._release()
            raise
        return db.connection

    def _release(self) -> None:
        if self.collecting:
            gc.enable()  # first: the next holder (another thread of a simulator) sees it on
        fcntl.flock(self.db._lock_fd, fcntl.LOCK_UN)

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: object) -> bool:
        db, connection = self.db, self.db.connection
        try:
            with _TranslatedErrors(db.path):
                if error is not None:
                    # sqlite may have rolled back already (disk full, I/O error).
                    if not connection.getautocommit():
                        connection.execute("ROLLBACK")
                    if isinstance(error, apsw.Error):
                        _raise_translated(error, db.path)
                    return False
                try:
                    connection.execute("COMMIT")
                except apsw.Error:
                    if not connection.getautocommit():
                        connection.execute("ROLLBACK")
                    raise
            if connection.rings:
                # After COMMIT, under the lock: whoever hears the bell reads what was committed.
                db._ring(connection.rings, connection.ended_ids)
        finally:
            self._release()
        return False


def _raise_translated(error: apsw.Error, path: str) -> None:
    """The DatabaseError that says what to do about `error`, raised; nothing for other errors."""
    if isinstance(error, apsw.FullError):
        raise DatabaseError(
            f"the disk holding {path} is full: nothing was written; free some space and try again"
        ) from None
    if isinstance(error, apsw.ReadOnlyError):
        if getattr(error, "extendedresult", 0) == _SQLITE_READONLY_DBMOVED:
            raise _gone(path) from None
        raise DatabaseError(
            f"{path} is read-only for you: nothing was written; check the permissions of the file "
            "and of its folder"
        ) from None
    if isinstance(error, apsw.BusyError):
        raise LockTimeoutError(
            f"{path} stayed locked by another process past the timeout: try again or raise --timeout"
        ) from None
    if isinstance(error, (apsw.NotADBError, apsw.CorruptError)):
        raise DatabaseError(
            f"{path} is not a slurm-hog database or is damaged: point --db at the queue database"
        ) from None
    if isinstance(error, apsw.CantOpenError):
        _refuse_if_denied(path)
        raise DatabaseError(
            f"cannot open {path}: the file and its folder must exist and be readable, and "
            "writable to change the queue (sqlite writes its journal beside the file)"
        ) from None
    disk = "disk" in str(error).lower() or getattr(error, "extendedresult", 0) & 0xFF == 10
    if isinstance(error, apsw.IOError) and disk:
        raise DatabaseError(
            f"input/output error on {path} (is the disk full or gone?): nothing was written"
        ) from None


def _refuse_if_denied(path: str) -> None:
    """Say which permission is missing when this user may not reach or read the queue."""
    problem = missing_permission(path)
    if problem:
        raise DatabaseError(
            f"permission denied: {problem}; ask the queue's owner for access (a queue "
            "made with `init --group` is open to that group's members: `id -Gn` lists yours)"
        )


def _gone(path: str) -> DatabaseGoneError:
    return DatabaseGoneError(
        f"{path} was deleted or replaced while this process had it open: nothing more can be "
        "written to the file it opened; start again on the database now at that path, if any"
    )


def open_database(path: str, timeout_s: float = DEFAULT_TIMEOUT_S, migrate: bool = True) -> Database:
    """Open an existing queue database, refusing files that are not ours or are newer than us."""
    try:
        info = os.stat(path)
    except PermissionError:
        _refuse_if_denied(path)
        raise DatabaseError(f"permission denied for {path}: ask the queue's owner for access") from None
    except (FileNotFoundError, NotADirectoryError):
        raise DatabaseError(
            f"no queue database at {path}: create one with `slurm-hog init --db {path}`, "
            "or point --db or $SLURM_HOG_DB at an existing one"
        ) from None
    if stat.S_ISDIR(info.st_mode):
        raise DatabaseError(f"{path} is a folder, not a queue database: point --db at the file")
    with _TranslatedErrors(path):
        connection = doorbell.Connection(path, flags=apsw.SQLITE_OPEN_READWRITE)
        connection.set_busy_timeout(int(timeout_s * 1000))
        application_id, version = _read_header(connection, path)
    if application_id != schema.APPLICATION_ID and not (application_id == 0 and version == 0):
        connection.close()
        raise DatabaseError(
            f"{path} is an sqlite file but not a slurm-hog queue database: point --db at the file "
            "that `slurm-hog init` made"
        )
    if version > schema.SCHEMA_VERSION:
        connection.close()
        raise DatabaseError(
            f"{path} was made by a newer slurm-hog (schema {version}, this one knows "
            f"{schema.SCHEMA_VERSION}): upgrade slurm-hog to use it"
        )
    if application_id == 0:
        connection.close()
        raise DatabaseError(
            f"{path} is not a slurm-hog queue database: point --db at the file that "
            "`slurm-hog init` made, or create one with `slurm-hog init`"
        )
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute(f"PRAGMA cache_spill = {SPILL_AFTER_PAGES}")
    database = Database(path, connection, timeout_s)
    if version < schema.SCHEMA_VERSION and migrate:
        _migrate(database, version)
    return database


def _read_header(connection: apsw.Connection, path: str) -> tuple[int, int]:
    application_id = connection.execute("PRAGMA application_id").fetchall()[0][0]
    version = connection.execute("PRAGMA user_version").fetchall()[0][0]
    return application_id, version


def _migrate(database: Database, version: int) -> None:
    # Each step and its version bump commit together, so a crash leaves a whole version.
    # Foreign keys are off meanwhile (the pragma is a no-op inside a transaction): a step that
    # rebuilds a table drops the old one, which must not delete the rows that refer to it.
    database.connection.execute("PRAGMA foreign_keys = OFF")
    try:
        for step in range(version, schema.SCHEMA_VERSION):
            with database.transaction() as connection:
                current = connection.execute("PRAGMA user_version").fetchall()[0][0]
                if current != step:
                    continue
                connection.execute(schema.MIGRATIONS[step])
                broken = connection.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise DatabaseError(
                        f"{database.path}: upgrading to schema {step + 1} broke references "
                        f"({broken[0]}): nothing was changed; report this"
                    )
                connection.execute(f"PRAGMA user_version = {step + 1}")
    finally:
        database.connection.execute("PRAGMA foreign_keys = ON")


def create_database(path: str, group: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Create a new queue database, mode 0600 (0660 and chgrp'd with a group)."""
    if os.path.lexists(path):
        raise DatabaseError(
            f"{path} already exists: init never touches an existing file; "
            "choose another --db or remove the old queue first"
        )
    gid = _group_id(group) if group else None
    modes = OWNER_AND_GROUP if group else OWNER_ONLY
    files = QueueFiles(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        _refuse_if_denied(path)
        raise DatabaseError(f"cannot create {path}: the folder {folder} does not exist")
    created: list[str] = []
    try:
        for file_path in (path, files.lock):
            fd = os.open(file_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, modes.file)
            created.append(file_path)
            try:
                keep_mode(fd, modes.file, gid)
            finally:
                os.close(fd)
        with _TranslatedErrors(path):
            connection = apsw.Connection(path)
            connection.execute("PRAGMA journal_mode = DELETE")
            connection.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
            connection.close()
        database = open_database(path, timeout_s)
        database.close()
        for folder in (files.tasks, files.hogs):
            make_private_dirs(folder, modes.folder, gid)
    except OSError as error:
        _remove_all(created)
        if error.errno == errno.ENOSPC:
            raise DatabaseError(f"cannot create {path}: the disk is full") from None
        raise DatabaseError(f"cannot create {path}: {error.strerror}") from None
    except BaseException:
        _remove_all(created)
        raise


def _remove_all(paths: list[str]) -> None:
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)


def _group_id(group: str) -> int:
    try:
        import grp  # only init needs it: not imported on every start

        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise DatabaseError(f"no group named {group!r}: pick one of yours (`id -Gn` lists them)") from None
