"""Shared GPUs on the local SLURM cluster's GPU node n4 (Gres=gpu:2): the hog learns its two
devices from SLURM and packs half-GPU tasks two to a device."""

import json
import sys
from pathlib import Path

import pytest
import test_slurm
from helpers import REPO, cli, tasks
from test_slurm import all_attempts, finish, monitor

pytestmark = pytest.mark.slurm
slurm_env = test_slurm.slurm_env  # the cluster's environment, a fixture
TASK = REPO / "tests" / "gpu_share_task.py"


def test_half_gpu_tasks_run_four_at_once_on_the_two_gpus_of_n4(
    db: Path,
    slurm_env: dict,
    tmp_path: Path,
) -> None:
    command = f"{sys.executable} {TASK} {tmp_path} 0.5 halves 4 0.2"
    for _ in range(4):
        result = cli(db, "submit", "--gpus", "0.5", "-o", "/dev/null", command, env=slurm_env)
        assert result.returncode == 0, result.stderr
    process = monitor(
        db, slurm_env, "--command-prefix", "srun -N1 --exclusive --gres=gpu:2 -t 5", "--hogs", "1", "--once"
    )
    assert finish(process, timeout=180) == 0
    assert [task["state"] for task in tasks(db)] == ["done"] * 4, cli(
        db, "check", "1-4", env=slurm_env
    ).stdout
    assert {attempt.host for attempt in all_attempts(db)} == {"n4"}
    runs = [json.loads(path.read_text()) for path in (tmp_path / "seen").glob("*.json")]
    assert sorted(run["CUDA_VISIBLE_DEVICES"] for run in runs) == ["0", "0", "1", "1"]
    assert all(
        run["CUDA_VISIBLE_DEVICES"] == run["HIP_VISIBLE_DEVICES"] == run["ROCR_VISIBLE_DEVICES"]
        for run in runs
    )


def test_tune_runs_its_samples_through_srun_on_n4_and_picks_two_per_gpu(
    db: Path, slurm_env: dict, tmp_path: Path
) -> None:
    contended = REPO / "tests" / "contended_task.py"
    assert cli(db, "kind", "set", "train", "--gpus", "1", "-o", "/dev/null", env=slurm_env).returncode == 0
    line = f"{sys.executable} {contended} {tmp_path} 1.0 1 1.2 2.5 6\n"
    assert cli(db, "submit", "--kind", "train", "--file", "-", input=line * 24, env=slurm_env).returncode == 0
    prefix = "srun -N1 --exclusive --gres=gpu:2 -t 5"
    result = cli(
        db, "tune", "--kind", "train", "--cores", "8", "-c", prefix, "--json", env=slurm_env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["best"] == "2 per GPU", report
    assert report["kind_set"].endswith("kind set train --gpus 0.5 --stdout /dev/null")
    assert {attempt.host for attempt in all_attempts(db)} == {"n4"}
