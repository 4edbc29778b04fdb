"""What a task finds in its environment: its submitter's, and its node and its share of it.

The submitting shell's variables come with the task, without those that describe the submitter's
node or job (queue.captured_environment). Over them the hog lays what describes the node the task
runs on, and the task's own share of it, the way an `srun` step sees its own: a program that
sizes itself from SLURM's variables must not take the whole node when it has one core of it.
"""

import os
import socket

from hog.pilot import slurm
from hog.pilot.resources import GPU_VARIABLES
from hog.store.claims import ClaimedTask

# The node's: the hog's values (TMPDIR unset when the hog has none), unless the task's submit set
# them in its NAME=value words (they are never captured from the submitting shell).
NODE_VARIABLES = ("TMPDIR", "HOSTNAME")
MIB = 1 << 20


class TaskEnvironment:
    def __init__(self, db_path: str, hog_id: int, environ: dict[str, str] | None = None) -> None:
        environ = dict(os.environ) if environ is None else environ
        self.hog_id = str(hog_id)
        self.node = {"HOSTNAME": socket.gethostname()}
        if "TMPDIR" in environ:
            self.node["TMPDIR"] = environ["TMPDIR"]
        # The SLURM variables of the hog's job, and the queue, so that a task can submit more.
        self.base = {
            key: value
            for key, value in environ.items()
            if key.startswith(("SLURM_", "SLURMD_")) and not key.startswith("SLURM_HOG_")
        }
        self.base["SLURM_HOG_DB"] = db_path
        self.in_slurm_job = bool(slurm.job_id(environ))
        self.gpus_on_node = "SLURM_GPUS_ON_NODE" in self.base

    def of(self, task: ClaimedTask, gpu_ids: list[str]) -> dict[str, str]:
        """The task's environment; the launcher adds HOG_CPUS when it picks its slots."""
        env = {**self.node, **task.environment}
        env.update(self.base)
        cores = str(task.cores)
        env["HOG_TASK_ID"] = str(task.task_id)
        env["HOG_ATTEMPT"] = str(task.attempt)
        env["HOG_HOG_ID"] = self.hog_id
        env["HOG_CORES"] = cores
        env["OMP_NUM_THREADS"] = cores
        if task.array_index is not None:
            env["HOG_ARRAY_INDEX"] = str(task.array_index)
        if task.entry is not None:
            env["HOG_ENTRY"] = task.entry
        # Empty for a task without GPUs, on any hog: unset, a program would see every GPU.
        gpus = ",".join(gpu_ids)
        for variable in GPU_VARIABLES:
            env[variable] = gpus
        env["HOG_GPUS"] = gpus
        if self.in_slurm_job:
            # The task's share, as SLURM tells a step; the job's own (SLURM_JOB_*) stay as they are.
            env["SLURM_CPUS_ON_NODE"] = env["SLURM_CPUS_PER_TASK"] = cores
            if task.mem_bytes:
                env["SLURM_MEM_PER_NODE"] = str(-(-task.mem_bytes // MIB))
                env.pop("SLURM_MEM_PER_CPU", None)
            if self.gpus_on_node:
                env["SLURM_GPUS_ON_NODE"] = str(len(gpu_ids))
        return env
