"""Two pools on the local SLURM cluster (scripts/slurm-cluster.sh): CPU tasks through `srun` on
n1-n3, GPU tasks through sbatch to n4 and its two GPUs, each pool with its own monitor."""

import subprocess
from pathlib import Path

import pytest
from helpers import cli, cli_json, holds_for, wait_until
from test_slurm import all_attempts, finish, monitor, slurm_env, submit_lines

pytestmark = pytest.mark.slurm
__all__ = ["slurm_env"]  # the fixture, shared with test_slurm


def hogs(db: Path, env: dict) -> list[dict]:
    return cli_json(db, "show", "-H", env=env)  # type: ignore[return-value]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        finish(process, timeout=30)


def test_cpu_and_gpu_pools_each_run_on_their_own_nodes(db: Path, slurm_env: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    submit_lines(db, "sleep 0.2", 24, env=slurm_env)
    gpu_line = 'echo "$CUDA_VISIBLE_DEVICES"; sleep 2'
    submit_lines(db, gpu_line, 6, "--pool", "gpu", "-g", "1", "-o", str(out / "{id}.txt"), env=slurm_env)
    gpu_tasks = range(25, 31)
    cpu = monitor(
        db, slurm_env, "--command-prefix", "srun -N1 --exclusive -x n4 -t 5", "--hogs", "2", "--once"
    )
    # Hogs of 4 cores and 2 GPUs: six 1-GPU tasks ask for three (by cores alone, two).
    gpu = monitor(
        db,
        slurm_env,
        *("--pool", "gpu", "--backend", "sbatch", "--sbatch-args", "--gres=gpu:2", "--walltime", "5m"),
        *("--cores", "4", "--gpus", "2", "--hogs", "8", "--once"),
    )
    try:
        wait_until(
            lambda: len([h for h in hogs(db, slurm_env) if h["pool"] == "gpu"]) >= 3,
            timeout=120,
            message="three GPU hogs asked for",
        )
        assert holds_for(lambda: len([h for h in hogs(db, slurm_env) if h["pool"] == "gpu"]) == 3, 2.0), (
            "GPU hogs beyond what the GPUs the tasks need can use"
        )
        assert finish(cpu, timeout=300) == 0
        assert finish(gpu, timeout=300) == 0
    finally:
        stop(cpu)
        stop(gpu)
    assert cli_json(db, "status", env=slurm_env)["tasks"]["done"] == 30
    rows = hogs(db, slurm_env)
    assert {h["backend"] for h in rows if h["pool"] == "gpu"} == {"sbatch"}
    assert {h["backend"] for h in rows if h["pool"] == "default"} == {"prefix"}
    assert len([h for h in rows if h["pool"] == "gpu"]) == 3
    hosts = {attempt.task_id: attempt.host for attempt in all_attempts(db)}
    assert {hosts[task_id] for task_id in gpu_tasks} == {"n4"}
    assert {host for task_id, host in hosts.items() if task_id not in gpu_tasks} <= {"n1", "n2", "n3"}
    devices = {path.read_text().strip() for path in out.iterdir()}
    assert devices == {"0", "1"}, devices


def test_gather_holds_back_a_trickle_until_a_hog_full_waits(db: Path, slurm_env: dict) -> None:
    process = monitor(
        db,
        slurm_env,
        *("--command-prefix", "srun -N1 --exclusive -x n4 -t 5", "--hogs", "2", "--cores", "4"),
        *("--gather", "10m"),
    )
    try:
        wait_until(
            lambda: cli(db, "monitor", "--status", env=slurm_env).returncode == 0, message="monitor up"
        )
        submit_lines(db, "true", 3, env=slurm_env)
        assert holds_for(lambda: not hogs(db, slurm_env), 3.0), "a hog for three tasks of four"
        submit_lines(db, "true", 1, env=slurm_env)
        wait_until(lambda: cli_json(db, "status", env=slurm_env)["tasks"]["done"] == 4, timeout=120)
        (row,) = hogs(db, slurm_env)
        assert row["slurm_job_id"]
    finally:
        stop(process)
