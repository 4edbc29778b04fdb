"""How many tasks per GPU (or cores per task) run a workload fastest, measured for real.

For each setting in turn, a sample of the workload's waiting tasks is given that share
(tuning.take_sample) and run by a hog started for it alone (`hog --bundle`, here or through a
command prefix such as `srun -N1 --gres=gpu:2`), which leaves once the sample is done. Its
throughput is the sample's tasks done over the time from its first start to its last end.
"""

import os
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from typing import NamedTuple

from hog import gpushare
from hog.errors import HogError, UsageError
from hog.pilot.options import HogOptions
from hog.store.db import Database
from hog.store.paths import QueueFiles
from hog.store.tuning import Measured, first_needs, measure, take_sample

# The tune hog leaves this soon after its sample is done, and beats often enough to be seen.
TUNE_HOG_OPTIONS = HogOptions(idle_timeout_s=1.0, heartbeat_s=5.0)


class Setting(NamedTuple):
    per_gpu: int | None  # tasks sharing one GPU (GPU work), else None
    cores: int  # cores per task
    gpus: int  # GPU units per task

    @property
    def label(self) -> str:
        if self.per_gpu is not None:
            return f"{self.per_gpu} per GPU"
        return f"{self.cores} core{'s' if self.cores != 1 else ''} per task"

    @property
    def option(self) -> tuple[str, str]:
        """The submit option that asks for this setting."""
        if self.per_gpu is not None:
            return "gpus", gpushare.text(self.gpus)
        return "cores", str(self.cores)


class Trial(NamedTuple):
    setting: Setting
    task_ids: list[int]
    measured: Measured
    hog_status: int

    @property
    def tasks_per_s(self) -> float | None:
        if not self.measured.done or not self.measured.seconds:
            return None
        return self.measured.done / self.measured.seconds


class Workload(NamedTuple):
    name: str | None
    kind: str | None

    @property
    def words(self) -> str:
        return f"kind {self.kind!r}" if self.kind is not None else f"name {self.name!r}"


def settings_for(db: Database, workload: Workload, per_gpu: list[int], cores: list[int]) -> list[Setting]:
    """GPU work (its tasks ask for GPUs) tries `per_gpu` tasks per GPU, with the cores its tasks
    ask for; CPU work tries `cores` per task."""
    needs = first_needs(db, workload.name, workload.kind)
    if needs is None:
        raise UsageError(f"no task of {workload.words} waits: submit some, then tune them")
    if needs.gpus:
        return [Setting(k, needs.cores, gpushare.GPU_UNITS // k) for k in per_gpu]
    return [Setting(None, c, 0) for c in cores]


def run_trials(
    db: Database,
    workload: Workload,
    settings: list[Setting],
    sample: int,
    hog: HogOptions,
    prefix: str | None = None,
    on_trial=None,
) -> list[Trial]:
    """Run each setting's sample on a hog of its own, one after the other."""
    trials = []
    token = f"{int(time.time())}-{os.getpid()}"
    for index, setting in enumerate(settings):
        bundle = f"tune-{token}-{index}"
        task_ids = take_sample(
            db, sample, setting.cores, setting.gpus, bundle, name=workload.name, kind=workload.kind
        )
        if not task_ids:
            break  # the workload ran out of waiting tasks
        status = _run_hog(db, bundle, hog, prefix)
        trial = Trial(setting, task_ids, measure(db, task_ids), status)
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    return trials


def best(trials: list[Trial]) -> Trial | None:
    """The fastest trial whose sample all ended done."""
    complete = [t for t in trials if t.measured.not_done == 0 and t.tasks_per_s is not None]
    return max(complete, key=lambda t: t.tasks_per_s or 0.0, default=None)


def log_path(db: Database, bundle: str) -> str:
    return os.path.join(QueueFiles(db.path).hogs, f"{bundle}.log")


def _run_hog(db: Database, bundle: str, hog: HogOptions, prefix: str | None) -> int:
    """Run the hog of one trial to its end; its log goes beside the queue's hog logs."""
    options = replace(
        hog, idle_timeout_s=TUNE_HOG_OPTIONS.idle_timeout_s, heartbeat_s=TUNE_HOG_OPTIONS.heartbeat_s
    )
    argv = [
        *(shlex.split(prefix) if prefix else []),
        sys.executable,
        "-m",
        "hog",
        "--db",
        os.path.abspath(db.path),
        "--timeout",
        str(db.timeout_s),
        "hog",
        "--bundle",
        bundle,
        *options.to_argv(),
    ]
    files = QueueFiles(db.path)
    files.make_folders(files.hogs)
    log_fd = files.open_beside(log_path(db, bundle), os.O_WRONLY | os.O_APPEND)
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, start_new_session=True
        )
    except OSError as error:
        raise HogError(f"cannot start a hog with {shlex.join(argv[:3])}...: {error}") from None
    finally:
        os.close(log_fd)
    try:
        return process.wait()
    except BaseException:
        # Interrupted: the hog gives its tasks back to the queue on SIGTERM.
        process.terminate()
        process.wait()
        raise
