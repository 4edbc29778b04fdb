#!/usr/bin/env python3
"""A slow shared filesystem on one machine: a FUSE passthrough that adds latency and counts.

    scripts/slowfs.py mount FOLDER MOUNTPOINT [--preset nfs|lustre|none] [--fsync-ms N] ...
    scripts/slowfs.py unmount MOUNTPOINT
    scripts/slowfs.py stats MOUNTPOINT        # the counts so far, as JSON
    scripts/slowfs.py build                   # compile the server (mount does it when needed)

Every file operation is passed to FOLDER; fsync (of files and folders), lock calls (flock and
POSIX fcntl locks, which sqlite and the queue's flock need) and metadata operations (open, create,
stat, unlink, rename, mkdir, ...) first sleep their configured latency, each in its own FUSE thread
as a round trip to a file server would overlap with the others. The server is scripts/slowfs.c
(libfuse3's multithreaded loop), compiled into build/ on first use. Needs root and /dev/fuse, a C
compiler and Debian's fuse3 and libfuse3-dev (scripts/install.sh installs them as root).

Locks are real: flock is taken on the passthrough file this open made, and POSIX locks become
open-file-description locks on one file per lock owner (the kernel names one owner per process),
so processes exclude each other exactly as on a local disk.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

# Latencies in milliseconds, modelled on the figures (one round trip to the server).
PRESETS = {
    "none": {"metadata_ms": 0.0, "fsync_ms": 0.0, "lock_ms": 0.0},
    "nfs": {"metadata_ms": 1.0, "fsync_ms": 5.0, "lock_ms": 1.0},
    "lustre": {"metadata_ms": 1.0, "fsync_ms": 20.0, "lock_ms": 1.0},
}
STATS_FILE = ".slowfs-stats.json"  # beside the mount point: MOUNTPOINT + this suffix
MOUNT_TIMEOUT_S = 15.0


@dataclass
class Latency:
    metadata_ms: float
    fsync_ms: float
    lock_ms: float


def stats_path(mountpoint: str) -> str:
    return os.path.abspath(mountpoint).rstrip("/") + STATS_FILE


def server_binary() -> str:
    """The compiled server (scripts/slowfs.c), built into build/ when its source changed."""
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slowfs.c")
    with open(source, "rb") as text:
        digest = hashlib.sha1(text.read()).hexdigest()[:12]
    folder = os.path.join(os.path.dirname(os.path.dirname(source)), "build")
    binary = os.path.join(folder, f"slowfs-server-{digest}")
    if os.path.exists(binary):
        return binary
    os.makedirs(folder, exist_ok=True)
    # Test workers ask at once: one compiles, the others wait for it.
    with open(os.path.join(folder, ".slowfs-build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(binary):
            _compile(source, binary)
    return binary


def _compile(source: str, binary: str) -> None:
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "fuse3"], capture_output=True, text=True)
    if flags.returncode != 0:
        raise OSError(f"pkg-config finds no fuse3 ({flags.stderr.strip()})")
    compiler = shlex.split(os.environ.get("CC", "cc"))
    temporary = f"{binary}.{os.getpid()}"
    try:
        built = subprocess.run(
            [*compiler, "-O2", "-Wall", "-o", temporary, source, *flags.stdout.split()],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise OSError(f"{' '.join(compiler)} could not build {source}: {built.stderr.strip()[-400:]}")
        os.replace(temporary, binary)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def mount(folder: str, mountpoint: str, latency: Latency) -> int:
    """Start the server in the background and return once the mount answers."""
    for path, what in ((folder, "folder"), (mountpoint, "mount point")):
        if not os.path.isdir(path):
            print(f"slowfs: the {what} {path} is not a folder: make it first", file=sys.stderr)
            return 2
    if _mounted(mountpoint):
        print(f"slowfs: {mountpoint} is mounted already: unmount it first", file=sys.stderr)
        return 2
    log_path = stats_path(mountpoint).replace(".json", ".log")
    arguments = [server_binary(), folder, mountpoint, stats_path(mountpoint)]
    arguments += [str(value) for value in (latency.metadata_ms, latency.fsync_ms, latency.lock_ms)]
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
    if not _mounted(mountpoint):
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
    while _mounted(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    # The server writes its last counts as it exits: wait for them.
    while server_pid(mountpoint) is not None:
        if time.monotonic() > deadline:
            print(f"slowfs: the server of {mountpoint} still runs: its counts may be stale", file=sys.stderr)
            return 1
        time.sleep(0.05)
    return 0


def _mounted(mountpoint: str) -> bool:
    """Is something mounted there (by the kernel's table: a mount whose server died fails
    os.path.ismount, as its stat does, yet needs unmounting)?"""
    target = os.path.realpath(mountpoint)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1].replace("\\040", " ") == target for line in mounts if line.strip())


def server_pid(mountpoint: str) -> int | None:
    """The pid of the server of `mountpoint` while it runs, else None."""
    try:
        pid = read_stats(mountpoint)["pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            serves = os.path.abspath(mountpoint).encode() in cmdline.read().split(b"\0")
    except (OSError, ValueError, KeyError):
        return None
    return pid if serves else None


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
        server_binary()
    except OSError as error:
        return f"the server does not build: {error}; scripts/install.sh as root installs libfuse3-dev"
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
    command = commands.add_parser("mount", help="mount FOLDER on MOUNTPOINT with latency")
    command.add_argument("folder")
    command.add_argument("mountpoint")
    command.add_argument("--preset", choices=sorted(PRESETS), default="nfs", help="latencies (default nfs)")
    for latency in ("metadata", "fsync", "lock"):
        command.add_argument(
            f"--{latency}-ms", type=float, help=f"{latency} latency in milliseconds (default: the preset's)"
        )
    commands.add_parser("unmount", help="unmount MOUNTPOINT").add_argument("mountpoint")
    commands.add_parser("stats", help="print the counts of MOUNTPOINT as JSON").add_argument("mountpoint")
    commands.add_parser("build", help="compile the server into build/ (mount does it when needed)")
    arguments = parser.parse_args(argv)
    if arguments.command == "unmount":
        return unmount(arguments.mountpoint)
    if arguments.command == "stats":
        try:
            print(json.dumps(read_stats(arguments.mountpoint), indent=1))
        except (OSError, ValueError) as error:
            print(
                f"slowfs: no counts for {arguments.mountpoint} ({error}): mount it with `slowfs.py mount`",
                file=sys.stderr,
            )
            return 1
        return 0
    if arguments.command == "build":
        try:
            print(server_binary())
        except OSError as error:
            print(f"slowfs: {error}", file=sys.stderr)
            return 1
        return 0
    for name in ("metadata", "fsync", "lock"):
        given = getattr(arguments, f"{name}_ms")
        if given is not None and not 0 <= given < 1e6:
            parser.error(f"--{name}-ms {given:g}: give milliseconds from 0 to 1000000")
    problem = available()
    if problem:
        print(f"slowfs: {problem}", file=sys.stderr)
        return 1
    latency = _latency_from(arguments)
    return mount(os.path.abspath(arguments.folder), os.path.abspath(arguments.mountpoint), latency)


if __name__ == "__main__":
    sys.exit(main())
