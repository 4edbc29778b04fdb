"""Hogs that an executor keeps on this machine (HogExecutor(..., local_hogs=N)), so that the
same code runs on a laptop: the monitor's own passes with the `nohup` prefix, driven by the
executor's thread instead of a monitor process, for the executor's pool (pool=). Like a
monitor's, they start while calls wait, are replaced when they die (their tasks go back to the
queue at once), and leave when idle; the executor stops those it started when it shuts down.
"""

import contextlib
import logging
import os
import signal
import subprocess
import time

from hog.fleet.monitor import Monitor, MonitorConfig
from hog.pilot.options import HogOptions
from hog.pools import DEFAULT_POOL
from hog.store.db import Database

log = logging.getLogger(__name__)

# Local hogs leave after this long without work; the next waiting call starts new ones.
LOCAL_IDLE_TIMEOUT_S = 120.0
# Heartbeats of local hogs: the executor notices a dead one by its process, not its lease.
LOCAL_HEARTBEAT_S = 10.0
STOP_WAIT_S = 15.0


class LocalHogs:
    def __init__(self, db: Database, hogs: int, cores: int | None = None, pool: str = DEFAULT_POOL) -> None:
        if cores is None:
            cores = max(1, len(os.sched_getaffinity(0)) // hogs)
        options = HogOptions(
            cores=cores, idle_timeout_s=LOCAL_IDLE_TIMEOUT_S, heartbeat_s=LOCAL_HEARTBEAT_S, pool=pool
        )
        config = MonitorConfig.from_options(
            db_path=os.path.abspath(db.path),
            timeout_s=db.timeout_s or 300.0,
            prefix="nohup",
            hogs=hogs,
            backend="prefix",
            sbatch_args="",
            poll_s=1.0,
            once=False,
            hog_options=options,
        )
        self.monitor = Monitor(config, db)
        self.monitor.files.make_folders(self.monitor.files.hogs)
        self.started: list[subprocess.Popen] = []

    def one_pass(self) -> None:
        """Heal and start hogs for waiting work, as a monitor's pass; errors are logged."""
        try:
            self.monitor.one_pass()
        except Exception as error:  # a bad pass must not stop the executor's thread
            log.warning("local hogs: %s", error)
        backend = self.monitor.backend
        for child in getattr(backend, "children", {}).values():
            if child not in self.started:
                self.started.append(child)

    def stop(self) -> None:
        """SIGTERM to the hogs started here (their running tasks go back), and wait for them."""
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for process in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        self.started.clear()
