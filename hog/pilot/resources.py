"""What a hog may hand out: cores, GPUs and memory, detected or given."""

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from hog.errors import UsageError

log = logging.getLogger(__name__)

GPU_VARIABLES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
MAX_GPUS = 1024
_COUNT = r"[0-9]+"
# A GPU's index, or its UUID (GPU-..., MIG-...) as CUDA_VISIBLE_DEVICES also takes it.
_GPU_ID = r"[0-9]+|(?:GPU|MIG)-[0-9A-Za-z/-]+"


@dataclass(frozen=True)
class NodeResources:
    cores: int
    cpu_ids: list[int] | None  # the CPUs to pin tasks to, one per core; None: do not pin
    gpus: list[str]
    mem_bytes: int


def detect(
    cores: int | None = None,
    gpus: str | None = None,
    mem_bytes: int | None = None,
    environ: dict[str, str] | None = None,
) -> NodeResources:
    environ = dict(os.environ) if environ is None else environ
    affinity = sorted(os.sched_getaffinity(0))
    if cores is None:
        slurm_cpus = environ.get("SLURM_CPUS_ON_NODE", "")
        cores = int(slurm_cpus) if slurm_cpus.isdigit() and int(slurm_cpus) > 0 else len(affinity)
    # More slots than CPUs we may run on (SLURM can claim more than exist): share them unpinned.
    cpu_ids = affinity[:cores] if cores <= len(affinity) else None
    if cpu_ids is None:
        log.warning(
            "%d cores asked for but this process may use only %d CPUs: tasks are not pinned",
            cores,
            len(affinity),
        )
    gpu_ids = parse_gpus(gpus) if gpus is not None else detect_gpus(environ)
    if mem_bytes is None:
        mem_bytes = detect_memory(environ)
    return NodeResources(cores, cpu_ids, gpu_ids, mem_bytes)


def parse_gpus(text: str) -> list[str]:
    """`4` means GPUs 0-3; `0,2` means those ids: indices, or UUIDs as nvidia-smi -L shows them."""
    text = text.strip()
    if re.fullmatch(_COUNT, text):
        if int(text) > MAX_GPUS:
            raise UsageError(f"bad --gpus {text}: more GPUs than a node has; give a count up to {MAX_GPUS}")
        return [str(index) for index in range(int(text))]
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(re.fullmatch(_GPU_ID, part) for part in ids):
        raise UsageError(f"bad --gpus {text!r}: give a count like 4, or ids like 0,1 or GPU-<uuid>")
    if len(set(ids)) != len(ids):
        raise UsageError(f"bad --gpus {text!r}: an id appears twice")
    return ids


def detect_gpus(environ: dict[str, str]) -> list[str]:
    for variable in ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = environ.get(variable, "").strip()
        if value and value != "NoDevFiles":
            return [part for part in value.split(",") if part]
    if shutil.which("nvidia-smi"):
        try:
            listing = subprocess.run(
                ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("nvidia-smi -L failed (%s): assuming no GPUs", error)
            return []
        count = sum(1 for line in listing.splitlines() if line.startswith("GPU "))
        return [str(index) for index in range(count)]
    return []


def detect_memory(environ: dict[str, str]) -> int:
    per_node = environ.get("SLURM_MEM_PER_NODE", "")
    if per_node.isdigit() and int(per_node) > 0:
        return int(per_node) << 20
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
