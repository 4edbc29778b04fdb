"""The hog's idle clock: its free cores integrated over time, by why they were free.

The loop samples it once a turn; between turns the ledger does not change (a task's end wakes
the loop), so each interval is charged to what the previous turn saw. The sums ride on the
heartbeat (store/usage.py), and `report` splits the idle time by them.
"""

import os
import time

from hog.store.usage import HogUsage

STARTUP, LOCK, EMPTY, DRAIN = range(4)


def process_start_epoch() -> float:
    """When this process started (epoch seconds): the interpreter's start-up is the hog's too."""
    try:
        # Field 22 of /proc/self/stat (the 20th after the command's closing parenthesis) is the
        # start in clock ticks after boot; /proc/uptime the time since boot, to 10 ms (/proc/stat's
        # btime is whole seconds).
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as uptime:
            since_boot = float(uptime.read().split()[0])
        now = time.time()
        return min(now, now - since_boot + ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


class IdleClock:
    def __init__(self, cores: int, launched_at: float | None = None, now_mono: float | None = None) -> None:
        self.launched_at = process_start_epoch() if launched_at is None else launched_at
        self.core_s = [0.0, 0.0, 0.0, 0.0]
        # Every core was idle from the process's start until now: registering, the slots' start.
        self.core_s[STARTUP] = cores * max(0.0, time.time() - self.launched_at)
        self.last_mono = time.monotonic() if now_mono is None else now_mono
        self.idle_cores = cores
        self.cause = STARTUP

    def sample(self, now_mono: float, idle_cores: int, cause: int) -> None:
        """Charge the time since the last sample to what it saw; remember what is seen now."""
        self.core_s[self.cause] += self.idle_cores * max(0.0, now_mono - self.last_mono)
        self.last_mono = now_mono
        self.idle_cores = max(0, idle_cores)
        self.cause = cause

    def usage(self, lock_wait_s: float) -> HogUsage:
        return HogUsage(self.launched_at, *self.core_s, lock_wait_s)
