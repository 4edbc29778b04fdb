"""What SLURM tells a job about itself, and the few commands slurm-hog runs."""

import logging
import os
import socket
import subprocess

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30


def node_name(environ: dict[str, str] | None = None) -> str:
    # Several local slurmd's share one hostname; SLURMD_NODENAME tells them apart.
    environ = os.environ if environ is None else environ
    return environ.get("SLURMD_NODENAME") or socket.gethostname()


def job_id(environ: dict[str, str] | None = None) -> str | None:
    environ = os.environ if environ is None else environ
    return environ.get("SLURM_JOB_ID") or environ.get("SLURM_JOBID")


def job_end_time(slurm_job_id: str) -> float | None:
    """When the job's time limit ends, as epoch seconds; None when unlimited or unknown.

    SLURM 22.05 sets no SLURM_JOB_END_TIME, so ask squeue (DESIGN.md).
    """
    env = dict(os.environ, SLURM_TIME_FORMAT="%s")
    try:
        result = subprocess.run(
            ["squeue", "-h", "-j", slurm_job_id, "-o", "%e"],
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        log.warning("cannot ask squeue for the end of job %s: %s", slurm_job_id, error)
        return None
    text = result.stdout.strip()
    if result.returncode != 0 or not text.isdigit():
        log.info("squeue gave no end time for job %s (%r)", slurm_job_id, text or result.stderr.strip())
        return None
    return float(text)
