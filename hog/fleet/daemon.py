"""One monitor per queue (or pool): the lock that makes it the only one, who holds it, and the
monitor run in the foreground or started and stopped as a daemon."""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time

from hog.errors import HogError, MonitorRunningError
from hog.fleet.monitor import Monitor, MonitorConfig
from hog.pilot.slurm import node_name
from hog.store import queue
from hog.store.db import Database, open_database

# `status`, `wait` and `--status` probe the lock for a moment to see whether a monitor runs: a
# monitor starting meanwhile tries again for this long before it takes the lock for another's.
LOCK_PROBE_GRACE_S = 1.0


def _take_monitor_lock(config: MonitorConfig, db: Database) -> int:
    fd = config.files.open_beside(config.lock_path, os.O_RDWR)
    deadline = time.monotonic() + LOCK_PROBE_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            os.close(fd)
            raise MonitorRunningError(
                f"a monitor already serves {config.served}: {_holder_text(config, db)}"
            ) from None


def _holder_text(config: MonitorConfig, db: Database) -> str:
    holder = _holder(config, db)
    if not holder:
        return "its host and pid are unknown"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started_at", 0)))
    return (
        f"pid {holder.get('pid')} on {holder.get('host')} since {since}; "
        f"stop it with `slurm-hog monitor{config.pool_option} --stop`"
    )


def _holder(config: MonitorConfig, db: Database) -> dict | None:
    text = queue.get_meta(db, config.meta_key)
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def run_monitor(config: MonitorConfig) -> int:
    db = open_database(config.db_path, config.timeout_s)
    db.check_secure()
    lock_fd = _take_monitor_lock(config, db)
    holder = {
        "host": node_name(),
        "pid": os.getpid(),
        "started_at": time.time(),
        "start_ticks": _own_start_ticks(),
    }
    queue.set_meta(db, config.meta_key, json.dumps(holder))
    pid_fd = config.files.open_beside(config.pid_path + ".tmp", os.O_WRONLY | os.O_TRUNC)
    with os.fdopen(pid_fd, "w") as pid_file:
        pid_file.write(f"{os.getpid()}\n")
    os.replace(config.pid_path + ".tmp", config.pid_path)
    monitor = Monitor(config, db)

    def request_stop(signum: int, frame: object) -> None:
        monitor.stop_requested = True

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, request_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return monitor.run()
    finally:
        with contextlib.suppress(HogError):
            queue.set_meta(db, config.meta_key, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.pid_path)
        os.close(lock_fd)
        db.close()


def _own_start_ticks() -> str:
    from hog.pilot.procs import process_start_ticks

    return process_start_ticks(os.getpid())


def _running_holder(config: MonitorConfig) -> dict | None:
    """The monitor holding the lock, or None when none runs."""
    try:
        # Read-only is enough for flock; no lock file, no monitor (and none is made for asking).
        fd = os.open(config.lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise HogError(
            f"cannot tell whether a monitor runs: permission denied for {config.lock_path}"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            db = open_database(config.db_path, config.timeout_s)
            try:
                return _holder(config, db) or {}
            finally:
                db.close()
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def daemon_status(config: MonitorConfig) -> tuple[str, bool]:
    holder = _running_holder(config)
    if holder is None:
        return f"no monitor serves {config.served}", False
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started_at", 0)))
    return (
        f"a monitor serves {config.served}: pid {holder.get('pid')} on {holder.get('host')} "
        f"since {since}, log {config.log_path}",
        True,
    )


def start_daemon(config: MonitorConfig, verbosity: int = 0) -> str:
    """Start a monitor with `config` in the background (logging as `-v` given `verbosity` times)."""
    open_database(config.db_path, config.timeout_s).close()
    holder = _running_holder(config)
    if holder is not None:
        return (
            f"a monitor already serves {config.served} "
            f"(pid {holder.get('pid')} on {holder.get('host')}): nothing to do"
        )
    argv = [sys.executable, "-m", "hog", *(["-" + "v" * verbosity] if verbosity else []), *config.to_argv()]
    log_fd = config.files.open_beside(config.log_path, os.O_WRONLY | os.O_APPEND)
    with os.fdopen(log_fd, "ab") as log_file:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HogError(f"the monitor exited at once (status {process.returncode}): see {config.log_path}")
        if _running_holder(config):
            return f"monitor started: pid {process.pid}, log {config.log_path}, pid file {config.pid_path}"
        time.sleep(0.1)
    return f"monitor starting: pid {process.pid}, log {config.log_path}"


def stop_daemon(config: MonitorConfig, hogs_after: str = "its hogs keep running") -> str:
    """Stop the detached monitor; the message says so, and then `hogs_after`."""
    holder = _running_holder(config)
    if holder is None:
        return f"no monitor serves {config.served}: nothing to stop"
    if holder.get("host") != node_name():
        raise HogError(f"the monitor runs on {holder.get('host')} (pid {holder.get('pid')}): stop it there")
    pid = int(holder.get("pid", 0))
    from hog.pilot.procs import process_start_ticks

    if not pid or process_start_ticks(pid) != holder.get("start_ticks"):
        raise HogError(f"the monitor's pid {pid} is not the process that took the lock: not signalling it")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _running_holder(config) is None:
            return f"monitor {pid} stopped; {hogs_after}"
        time.sleep(0.1)
    raise HogError(f"monitor {pid} did not stop within 30 s")
