"""The doorbell beside the queue: a few bytes that say "look again" without reading the database.

FILE.doorbell holds three counters (little-endian, 8 bytes each). A transaction that changes what
someone waits for bumps the matching counter after its COMMIT, while it still holds the queue's
lock (so bumps never race):

    WORK    tasks became waiting (submit, release, retry, a parent's end, a requeue): idle hogs claim
    ENDED   tasks ended (done, failed, timed out, cancelled): `run` clients read their task's state
    CANCEL  a running task's cancel was asked for: its hog kills it now, not at its next poll

After them, the ids of the last ENDS tasks a hog recorded the end of, in a ring (with how many were
ever written): a client waiting for one task reads its row when its id is there, not at every end
of any task (with a thousand clients, a thousand reads of the database per end).

A reader keeps the file open and reads it (544 bytes) with one pread: a page-cache hit on a local
disk (a few microseconds), one small read on a parallel filesystem whose caches are coherent
(Lustre, GPFS). On NFS a client may see a bump only when its attribute cache expires (`acregmin`,
3 s by default): readers also look at the database on a slower clock, so a missed bump costs
latency, never a task. The doorbell carries no data the queue depends on: losing or deleting it
only slows the wake-ups until the next bump makes it again.
"""

import os
import time

import apsw

from hog.store import states

LISTEN_S = 0.01  # how often a hog or a client listens while it waits for something
LISTEN_COST_SHARE = 100  # ... stretched so that reads take at most 1% of the time

WORK, ENDED, CANCEL = 0, 1, 2
_SLOTS = 3
_WIDTH = 8  # bytes per counter, little-endian (int.from_bytes: no struct to import in a client)
_SIZE = _SLOTS * _WIDTH
ENDS = 64  # task ids in the ring of ended tasks
_RING_AT = _SIZE + _WIDTH  # after the counters and the number of ids ever written
_FULL = _RING_AT + ENDS * _WIDTH
_ENDED_STATES = frozenset(states.ENDED_STATES)
SILENT = (0,) * _SLOTS  # the counters of a doorbell not made yet


class Connection(apsw.Connection):
    """The queue's connection: notes, during a transaction, which counters its COMMIT bumps."""

    rings = 0  # a bit per counter; Database.transaction clears it at BEGIN and rings after COMMIT
    ended_ids: tuple[int, ...] = ()  # the tasks whose end it records; cleared at BEGIN too


def note(connection: apsw.Connection, slot: int) -> None:
    """Bump counter `slot` when the transaction in progress commits."""
    if isinstance(connection, Connection):
        connection.rings |= 1 << slot


def note_ended(connection: apsw.Connection, task_ids: list[int]) -> None:
    """These tasks' ends are recorded by the transaction in progress: their ids go in the ring."""
    if isinstance(connection, Connection):
        connection.ended_ids += tuple(task_ids)


def note_counted(connection: apsw.Connection, state: str, delta: int) -> None:
    """The counts of `state` grew by `delta`: every change of a task's state passes here."""
    if delta > 0:
        if state == states.WAITING:
            note(connection, WORK)
        elif state in _ENDED_STATES:
            note(connection, ENDED)


def ring(fd: int, rings: int, ended_ids: tuple[int, ...] = ()) -> None:
    """Bump the counters in the bit set `rings` and add `ended_ids` to the ring; the caller holds
    the queue's lock. A doorbell that cannot be written (a full disk, a reader's permissions) only
    delays wake-ups."""
    try:
        data = os.pread(fd, _FULL, 0)
        values = list(_counters(data)) if len(data) >= _SIZE else [0] * _SLOTS
        for slot in range(_SLOTS):
            if rings & (1 << slot):
                values[slot] = (values[slot] + 1) % (1 << (8 * _WIDTH))
        written = int.from_bytes(data[_SIZE:_RING_AT], "little")
        if ended_ids:
            ids = bytearray(data[_RING_AT:_FULL].ljust(ENDS * _WIDTH, b"\0"))
            for task_id in ended_ids:
                at = (written % ENDS) * _WIDTH
                ids[at : at + _WIDTH] = task_id.to_bytes(_WIDTH, "little")
                written += 1
            # The ids before the count that shows them, for a reader on this machine.
            os.pwrite(fd, bytes(ids), _RING_AT)
        header = [*values, written % (1 << (8 * _WIDTH))]
        os.pwrite(fd, b"".join(value.to_bytes(_WIDTH, "little") for value in header), 0)
    except OSError:
        pass


def _counters(data: bytes) -> tuple[int, ...]:
    return tuple(int.from_bytes(data[start : start + _WIDTH], "little") for start in range(0, _SIZE, _WIDTH))


class Listener:
    """Reads the doorbell of one queue: `read()` gives its counters, None while there is none.

    `interval_s` is how long to wait before the next read: LISTEN_S, or more where a read is slow
    (a 544-byte read is a few microseconds on a local disk: 100 reads a second cost nothing; a 1 ms
    read on a network filesystem is made every 0.1 s).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self.interval_s = LISTEN_S
        self._marked: tuple[int, ...] | None = None
        self._data = b""  # what the last read read
        self._ends_seen: int | None = None  # ids ever written at the last `may_have_ended`

    def may_have_ended(self, task_id: int) -> bool:
        """After the last read showed ENDED moved: whether `task_id` may be one of the tasks that
        ended since the last call (False only when the ring shows every end since, and not it)."""
        data = self._data
        if len(data) < _FULL:
            return True  # a doorbell with no ring (an older slurm-hog's, or none)
        written = int.from_bytes(data[_SIZE:_RING_AT], "little")
        seen, self._ends_seen = self._ends_seen, written
        if seen is None or written == seen or written - seen > ENDS:
            return True  # first look, ends without ids (a cancel), or more than the ring holds
        wanted = task_id.to_bytes(_WIDTH, "little")
        for number in range(seen, written):
            at = _RING_AT + (number % ENDS) * _WIDTH
            if data[at : at + _WIDTH] == wanted:
                return True
        return False

    def mark(self) -> None:
        """Note the counters now, before looking at the queue: `wait_for` hears what moves after."""
        self._marked = self.read()

    def wait_for(self, counter: int, until_mono: float, not_before_mono: float = 0.0) -> bool:
        """Sleep until `counter` (WORK, ENDED, CANCEL) has moved since the mark, but not before
        `not_before_mono`, or until `until_mono` (monotonic times); whether it moved. Without a
        doorbell this sleeps until `until_mono`."""
        time.sleep(max(0.0, min(not_before_mono, until_mono) - time.monotonic()))
        while True:
            values = self.read()
            if values is not None and self._marked is not None and values[counter] != self._marked[counter]:
                return True
            self._marked = self._marked or values  # a doorbell made meanwhile: what it says now
            left = until_mono - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.interval_s, left))

    @property
    def hearing(self) -> bool:
        """Whether the doorbell is open here (it exists and may be read)."""
        return self._fd is not None

    def read(self) -> tuple[int, ...] | None:
        started = time.monotonic()
        try:
            return self._read()
        finally:
            self.interval_s = max(LISTEN_S, (time.monotonic() - started) * LISTEN_COST_SHARE)

    def _read(self) -> tuple[int, ...] | None:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None  # not rung yet (a new or older queue), or not readable
        try:
            self._data = data = os.pread(self._fd, _FULL, 0)
        except OSError:
            self.close()
            return None
        if len(data) < _SIZE:
            return SILENT  # made, not yet written
        return _counters(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
