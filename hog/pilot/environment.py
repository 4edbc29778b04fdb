"""What a task finds in its environment: its submitter's, SLURM's job, the queue, its place."""

import os

from hog.pilot.resources import GPU_VARIABLES
from hog.store.claims import ClaimedTask


class TaskEnvironment:
    def __init__(self, db_path: str, hog_id: int, has_gpus: bool) -> None:
        self.hog_id = str(hog_id)
        self.has_gpus = has_gpus  # without GPUs on the node, GPU variables are left as they are
        # The hog's SLURM variables (its job's, not those of the shell that submitted the task),
        # and the queue, so that a task can submit more tasks.
        self.base = {
            key: value
            for key, value in os.environ.items()
            if key.startswith(("SLURM_", "SLURMD_")) and not key.startswith("SLURM_HOG_")
        }
        self.base["SLURM_HOG_DB"] = db_path

    def of(self, task: ClaimedTask, gpu_ids: list[str]) -> dict[str, str]:
        """The task's environment; the launcher adds HOG_CPUS when it picks its slots."""
        env = dict(task.environment)
        env.update(self.base)
        env["HOG_TASK_ID"] = str(task.task_id)
        env["HOG_ATTEMPT"] = str(task.attempt)
        env["HOG_HOG_ID"] = self.hog_id
        env["HOG_CORES"] = str(task.cores)
        env["OMP_NUM_THREADS"] = str(task.cores)
        if task.array_index is not None:
            env["HOG_ARRAY_INDEX"] = str(task.array_index)
        if task.entry is not None:
            env["HOG_ENTRY"] = task.entry
        if self.has_gpus:
            for variable in GPU_VARIABLES:
                env[variable] = ",".join(gpu_ids)
            env["HOG_GPUS"] = ",".join(gpu_ids)
        return env
