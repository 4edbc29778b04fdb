#!/usr/bin/env python3
"""A slow shared filesystem on one machine: a FUSE passthrough that adds latency and counts.

    scripts/slowfs.py mount FOLDER MOUNTPOINT [--preset nfs|lustre|none] [--fsync-ms N] ...
    scripts/slowfs.py unmount MOUNTPOINT
    scripts/slowfs.py stats MOUNTPOINT        # the counts so far, as JSON

Every file operation is passed to FOLDER; fsync (of files and folders), lock calls (flock and
POSIX fcntl locks, which sqlite and the queue's flock need) and metadata operations (open, create,
stat, unlink, rename, mkdir, ...) first sleep their configured latency, each in its own FUSE thread
as a round trip to a file server would overlap with the others. Needs root (or fusermount3) and
/dev/fuse; the `mfusepy` package and Debian's fuse3 (scripts/install.sh installs both as root).

Locks are real: flock is taken on the passthrough file this open made, and POSIX locks become
open-file-description locks on one file per lock owner (the kernel names one owner per process),
so processes exclude each other exactly as on a local disk.
"""

import argparse
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass

# Latencies in milliseconds, modelled on the figures (one round trip to the server).
PRESETS = {
    "none": {"metadata_ms": 0.0, "fsync_ms": 0.0, "lock_ms": 0.0},
    "nfs": {"metadata_ms": 1.0, "fsync_ms": 5.0, "lock_ms": 1.0},
    "lustre": {"metadata_ms": 1.0, "fsync_ms": 20.0, "lock_ms": 1.0},
}
STATS_FILE = ".slowfs-stats.json"  # beside the mount point: MOUNTPOINT + this suffix
MOUNT_TIMEOUT_S = 15.0
_FLOCK_STRUCT = "@hhqqi4x"  # struct flock on Linux x86_64/aarch64: type, whence, start, len, pid


@dataclass
class Latency:
    metadata_ms: float
    fsync_ms: float
    lock_ms: float


def stats_path(mountpoint: str) -> str:
    return os.path.abspath(mountpoint).rstrip("/") + STATS_FILE


def _build_operations(folder: str, latency: Latency, stats_file: str):
    import mfusepy

    class SlowPassthrough(mfusepy.Operations):
        use_ns = True

        def __init__(self) -> None:
            self.root = os.path.realpath(folder)
            self.counts: dict[str, int] = {}  # by operation
            self.kinds: dict[str, int] = {}  # by latency class: metadata, fsync, lock
            self.slept_s: dict[str, float] = {}
            self.guard = threading.Lock()
            # POSIX locks: one file description per (path, lock owner), so that one process's
            # locks merge and different processes' conflict, as fcntl locks do.
            self.owner_fds: dict[tuple[str, int], int] = {}
            self.stop = threading.Event()
            self._dump()
            threading.Thread(target=self._dump_loop, daemon=True).start()

        # -- bookkeeping ------------------------------------------------------------------

        def _pay(self, kind: str, name: str) -> None:
            delay_s = getattr(latency, f"{kind}_ms") / 1000.0
            with self.guard:
                self.counts[name] = self.counts.get(name, 0) + 1
                self.kinds[kind] = self.kinds.get(kind, 0) + 1
                self.slept_s[kind] = self.slept_s.get(kind, 0.0) + delay_s
            if delay_s > 0:
                time.sleep(delay_s)

        def _dump(self) -> None:
            with self.guard:
                data = {
                    "latency": asdict(latency),
                    "counts": dict(self.counts),
                    "kinds": dict(self.kinds),
                    "slept_s": dict(self.slept_s),
                }
            temporary = stats_file + ".tmp"
            with open(temporary, "w") as out:
                json.dump(data, out)
            os.replace(temporary, stats_file)

        def _dump_loop(self) -> None:
            while not self.stop.wait(0.5):
                with contextlib.suppress(OSError):
                    self._dump()

        def _full(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def destroy(self, path: str) -> None:
            self.stop.set()
            with contextlib.suppress(OSError):
                self._dump()

        # -- metadata ---------------------------------------------------------------------

        def getattr(self, path: str, fh=None) -> dict:
            self._pay("metadata", "stat")
            info = os.fstat(fh.fh) if fh is not None and fh.fh else os.lstat(self._full(path))
            names = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
            attrs = {name: getattr(info, name) for name in names}
            attrs.update(st_atime=info.st_atime_ns, st_mtime=info.st_mtime_ns, st_ctime=info.st_ctime_ns)
            return attrs

        def access(self, path: str, amode: int) -> int:
            self._pay("metadata", "access")
            if not os.access(self._full(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def readdir(self, path: str, fh: int):
            self._pay("metadata", "readdir")
            return [".", "..", *os.listdir(self._full(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._full(path))

        def statfs(self, path: str) -> dict:
            info = os.statvfs(self._full(path))
            names = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
            return {name: getattr(info, name) for name in (*names, "f_flag", "f_frsize", "f_namemax")}

        def chmod(self, path: str, mode: int) -> int:
            self._pay("metadata", "chmod")
            os.chmod(self._full(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            self._pay("metadata", "chown")
            os.chown(self._full(path), uid, gid)
            return 0

        def utimens(self, path: str, times=None) -> int:
            self._pay("metadata", "utimens")
            os.utime(self._full(path), ns=times)
            return 0

        def mkdir(self, path: str, mode: int) -> int:
            self._pay("metadata", "mkdir")
            os.mkdir(self._full(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            self._pay("metadata", "rmdir")
            os.rmdir(self._full(path))
            return 0

        def unlink(self, path: str) -> int:
            self._pay("metadata", "unlink")
            os.unlink(self._full(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            self._pay("metadata", "rename")
            os.rename(self._full(old), self._full(new))
            return 0

        def symlink(self, target: str, source: str) -> int:
            self._pay("metadata", "symlink")
            os.symlink(source, self._full(target))
            return 0

        def link(self, target: str, source: str) -> int:
            self._pay("metadata", "link")
            os.link(self._full(source), self._full(target))
            return 0

        def mknod(self, path: str, mode: int, dev: int) -> int:
            self._pay("metadata", "mknod")
            os.mknod(self._full(path), mode, dev)
            return 0

        # -- files ------------------------------------------------------------------------

        def open(self, path: str, fi) -> int:
            self._pay("metadata", "open")
            fi.fh = os.open(self._full(path), fi.flags & ~os.O_CREAT)
            return 0

        def create(self, path: str, mode: int, fi) -> int:
            self._pay("metadata", "create")
            fi.fh = os.open(self._full(path), fi.flags | os.O_CREAT, mode)
            return 0

        def read(self, path: str, size: int, offset: int, fi) -> bytes:
            return os.pread(fi.fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fi) -> int:
            return os.pwrite(fi.fh, data, offset)

        def truncate(self, path: str, length: int, fh=None) -> int:
            if fh is not None and fh.fh:
                os.ftruncate(fh.fh, length)
            else:
                os.truncate(self._full(path), length)
            return 0

        def flush(self, path: str, fi) -> int:
            return 0

        def release(self, path: str, fi) -> int:
            os.close(fi.fh)
            return 0

        def fsync(self, path: str, datasync: int, fi) -> int:
            self._pay("fsync", "fsync_file")
            (os.fdatasync if datasync else os.fsync)(fi.fh)
            return 0

        def fsyncdir(self, path: str, datasync: int, fh) -> int:
            self._pay("fsync", "fsyncdir")
            return 0

        # -- locks ------------------------------------------------------------------------

        def flock(self, path: str, fi, operation: int) -> int:
            # One unlock per write transaction of the queue: its count is their number.
            self._pay("lock", "flock_unlock" if operation & fcntl.LOCK_UN else "flock")
            fcntl.flock(fi.fh, operation)
            return 0

        def lock(self, path: str, fi, cmd: int, lock) -> int:
            request = lock.contents
            key = (path, fi.lock_owner)
            whole_unlock = request.l_type == fcntl.F_UNLCK and request.l_start == 0 and request.l_len == 0
            with self.guard:
                held = key in self.owner_fds
            if whole_unlock and not held:
                # libfuse unlocks on every close; a client that holds no lock asks no server.
                return 0
            self._pay("lock", "fcntl")
            with self.guard:
                fd = self.owner_fds.get(key)
                if fd is None and whole_unlock:
                    return 0
                if fd is None:
                    fd = os.open(self._full(path), os.O_RDWR)
                    self.owner_fds[key] = fd
                if whole_unlock and cmd != fcntl.F_GETLK:
                    # Closing the description drops all of the owner's locks: what a process's
                    # unlock of the whole file (or its close) means.
                    del self.owner_fds[key]
                    os.close(fd)
                    return 0
            ofd = {
                fcntl.F_GETLK: fcntl.F_OFD_GETLK,
                fcntl.F_SETLK: fcntl.F_OFD_SETLK,
                fcntl.F_SETLKW: fcntl.F_OFD_SETLKW,
            }[cmd]
            packed = struct.pack(
                _FLOCK_STRUCT, request.l_type, request.l_whence, request.l_start, request.l_len, 0
            )
            try:
                answer = fcntl.fcntl(fd, ofd, packed)
            except BlockingIOError:
                raise mfusepy.FuseOSError(errno.EAGAIN) from None
            if cmd == fcntl.F_GETLK:
                l_type, l_whence, l_start, l_len, _ = struct.unpack(_FLOCK_STRUCT, answer)
                request.l_type, request.l_whence = l_type, l_whence
                request.l_start, request.l_len = l_start, l_len
                request.l_pid = -1 if l_type != fcntl.F_UNLCK else 0
            return 0

    return SlowPassthrough()


def _serve(folder: str, mountpoint: str, latency: Latency) -> None:
    import mfusepy

    operations = _build_operations(folder, latency, stats_path(mountpoint))
    # Every waiter for a lock holds a FUSE thread until it gets it: allow as many as hogs.
    mfusepy.FUSE(
        operations,
        mountpoint,
        raw_fi=True,
        foreground=True,
        allow_other=True,
        default_permissions=True,
        max_threads=4096,
        max_idle_threads=64,
    )


def mount(folder: str, mountpoint: str, latency: Latency) -> int:
    """Start the server in the background and return once the mount answers."""
    for path, what in ((folder, "folder"), (mountpoint, "mount point")):
        if not os.path.isdir(path):
            print(f"slowfs: the {what} {path} is not a folder: make it first", file=sys.stderr)
            return 2
    if os.path.ismount(mountpoint):
        print(f"slowfs: {mountpoint} is mounted already: unmount it first", file=sys.stderr)
        return 2
    log_path = stats_path(mountpoint).replace(".json", ".log")
    arguments = [sys.executable, os.path.abspath(__file__), "serve", folder, mountpoint]
    for name, value in asdict(latency).items():
        arguments += [f"--{name.replace('_ms', '').replace('_', '-')}-ms", str(value)]
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            arguments, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while time.monotonic() < deadline:
        if os.path.ismount(mountpoint):
            print(f"slowfs: {folder} on {mountpoint} ({_describe(latency)}), server pid {server.pid}")
            return 0
        if server.poll() is not None:
            break
        time.sleep(0.05)
    with open(log_path) as log:
        tail = log.read().strip().splitlines()[-3:]
    print(f"slowfs: mounting {mountpoint} failed: {' / '.join(tail) or 'no message'}", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        server.kill()
    return 1


def unmount(mountpoint: str) -> int:
    if not os.path.ismount(mountpoint):
        print(f"slowfs: {mountpoint} is not mounted", file=sys.stderr)
        return 1
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while (result := subprocess.run(command, capture_output=True, text=True)).returncode != 0:
        if "busy" not in result.stderr or time.monotonic() > deadline:
            print(f"slowfs: unmounting {mountpoint} failed: {result.stderr.strip()}", file=sys.stderr)
            return 1
        time.sleep(0.2)  # a process that used it is still exiting
    deadline = time.monotonic() + MOUNT_TIMEOUT_S
    while os.path.ismount(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    return 0


def read_stats(mountpoint: str) -> dict:
    with open(stats_path(mountpoint)) as data:
        return json.load(data)


def _describe(latency: Latency) -> str:
    return f"metadata {latency.metadata_ms:g} ms, fsync {latency.fsync_ms:g} ms, lock {latency.lock_ms:g} ms"


def available() -> str | None:
    """None when this machine can mount a slow filesystem, else why not."""
    if os.geteuid() != 0:
        return "mounting FUSE needs root here"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    try:
        ctypes.CDLL("libfuse3.so.3")
    except OSError:
        return "libfuse3 is missing: run scripts/install.sh as root (it installs Debian's fuse3)"
    try:
        import mfusepy  # noqa: F401
    except ImportError:
        return "the mfusepy package is missing: run scripts/install.sh"
    return None


def _latency_from(arguments: argparse.Namespace) -> Latency:
    values = dict(PRESETS[arguments.preset])
    for name in ("metadata", "fsync", "lock"):
        given = getattr(arguments, f"{name}_ms")
        if given is not None:
            values[f"{name}_ms"] = given
    return Latency(**values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("mount", "serve"):
        command = commands.add_parser(
            name, help="mount FOLDER on MOUNTPOINT with latency" if name == "mount" else None
        )
        command.add_argument("folder")
        command.add_argument("mountpoint")
        command.add_argument(
            "--preset", choices=sorted(PRESETS), default="nfs", help="latencies (default nfs)"
        )
        for latency in ("metadata", "fsync", "lock"):
            command.add_argument(f"--{latency}-ms", type=float, help=f"{latency} latency in milliseconds")
    commands.add_parser("unmount", help="unmount MOUNTPOINT").add_argument("mountpoint")
    commands.add_parser("stats", help="print the counts of MOUNTPOINT as JSON").add_argument("mountpoint")
    arguments = parser.parse_args(argv)
    if arguments.command == "unmount":
        return unmount(arguments.mountpoint)
    if arguments.command == "stats":
        print(json.dumps(read_stats(arguments.mountpoint), indent=1))
        return 0
    problem = available()
    if problem:
        print(f"slowfs: {problem}", file=sys.stderr)
        return 1
    latency = _latency_from(arguments)
    if arguments.command == "serve":
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        _serve(os.path.abspath(arguments.folder), os.path.abspath(arguments.mountpoint), latency)
        return 0
    return mount(os.path.abspath(arguments.folder), os.path.abspath(arguments.mountpoint), latency)


if __name__ == "__main__":
    sys.exit(main())
