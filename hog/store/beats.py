"""A hog's liveness outside the write lock: FILE.logs/hogs/hog-N.beat, rewritten in place.

With a thousand hogs on a file that commits 10-20 transactions a second (NFS, Lustre), a write
from each hog within half its lease is already more than the file commits (README: 1,000 hogs,
lease 92 s: ~22 writes a second asked of a file that did 10-14). So a hog whose writes are paced
further apart than its heartbeat says it is alive in a file of its own: the epoch seconds of its
last beat, 8 bytes written with one pwrite and an fdatasync (so that a reader on another node sees
it: NFS's close-to-open consistency, with the reader opening the file afresh). Nobody waits in
line for it, and no other hog shares its pages.

A reaper judges a hog by the newer of its row's `heartbeat_at` and this file: a hog is lost when
both are older than its lease. Only hogs whose row is past its lease are looked at, so a queue
whose hogs write often (a few hogs, a fast disk) never opens these files.

A hog still writes to the database at least every LONGEST_WRITE_SPACING_S: its results wait no
longer than that, and a reader that counts live hogs from their rows alone (`run`'s "nothing
alive", `pools`) allows a row's heartbeat that much more than the lease (ALIVE_SQL).
"""

import contextlib
import os

from hog.store.paths import QueueFiles

# Each write on Lustre costs ~110 ms of filesystem whatever it carries: with a thousand hogs of 10 s
# tasks, writes 5 minutes apart at most kept the lock busy all the time (a line of 45 s, which a
# user's `submit` joins too); 10 minutes lets the spacing reach the hogs' share (pacing.py).
LONGEST_WRITE_SPACING_S = 600.0
_WIDTH = 8  # bytes: the beat's epoch milliseconds, little-endian

# A running hog counted as live from its row alone: its heartbeat within its lease, or, as it may
# beat its file instead, within its lease and twice the longest spacing of its writes (a paced
# write may wait in line as long again).
ALIVE_SQL = f"(state = ? AND heartbeat_at + lease_s + {2 * LONGEST_WRITE_SPACING_S:.0f} >= ?)"


def beat_path(files: QueueFiles, hog_id: int) -> str:
    return os.path.join(files.hogs, f"hog-{hog_id}.beat")


class Beater:
    """The hog's side: `beat(now)` rewrites its file (opened once, made as private as the queue)."""

    def __init__(self, files: QueueFiles, hog_id: int) -> None:
        self.files = files
        self.path = beat_path(files, hog_id)
        self._fd: int | None = None

    def beat(self, now: float) -> bool:
        """Say the hog is alive at `now` (epoch seconds); False when the file cannot be written
        (the hog then relies on its database writes alone, as before)."""
        try:
            if self._fd is None:
                self._fd = self.files.open_beside(self.path, os.O_WRONLY)
            os.pwrite(self._fd, round(now * 1000).to_bytes(_WIDTH, "little"), 0)
            os.fdatasync(self._fd)
        except OSError:
            self.close()
            return False
        return True

    def close(self, remove: bool = False) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if remove:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def last_beat(files: QueueFiles, hog_id: int) -> float | None:
    """When the hog last beat its file (epoch seconds), None without a readable beat."""
    try:
        # Opened afresh each time: on NFS the open revalidates what a kept descriptor may cache.
        fd = os.open(beat_path(files, hog_id), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, _WIDTH, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) != _WIDTH:
        return None
    return int.from_bytes(data, "little") / 1000.0


def beating(files: QueueFiles, hog_id: int, lease_s: float, now: float) -> bool:
    """Did the hog beat its file within its lease?"""
    beat = last_beat(files, hog_id)
    return beat is not None and beat + lease_s >= now
