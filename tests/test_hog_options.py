"""What a new user types to `hog` and `monitor`: walltimes and margins, conflicting options, GPUs,
and the environment a task finds on its node (issue 13)."""

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import child_env, cli, cli_json, start_hog, task_counts
from test_cli import assert_refused, snapshot

FAST = ("--heartbeat", "1s", "--idle-timeout", "1s")


def submit(db: Path, *args: str, env: dict | None = None) -> int:
    result = cli(db, "submit", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["first"]


def finish(process: subprocess.Popen, timeout: float = 60) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()


def fake_slurm_job(tmp_path: Path, seconds_left: float, **variables: str) -> dict:
    """The environment of a process in SLURM job 4242, whose `squeue` says the job ends in
    `seconds_left` (as SLURM 22.05 tells it: no SLURM_JOB_END_TIME)."""
    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    squeue = bin_dir / "squeue"
    squeue.write_text(f"#!/bin/sh\necho {int(time.time() + seconds_left)}\n")
    squeue.chmod(0o755)
    env = child_env(SLURM_JOB_ID="4242", **variables)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def monitor(db: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hog", "--db", str(db), "monitor", "--poll", "0.5s", *FAST, "--once", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# -- refused at once, before anything is written -------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        # The first slurm_hog.py read these as hours, SLURM as minutes: neither is guessed.
        (["hog", "-t", "4"], "4h or 4m?"),
        (["hog", "--walltime", "4"], "4h or 4m?"),
        (["hog", "-m", "5"], "5h or 5m?"),
        (["hog", "--margin", "1.5"], "1.5h or 1.5m?"),
        (["monitor", "--once", "-t", "4"], "4h or 4m?"),
        (["monitor", "--once", "-m", "5"], "5h or 5m?"),
        # A margin not shorter than the allocation would start no task without --time.
        (["hog", "-t", "4m", "-m", "5m"], "--margin 5m is not shorter"),
        (["monitor", "--once", "-t", "4m", "-m", "5m"], "--margin 5m is not shorter"),
        (["hog", "--end-time", "100"], "--end-time"),
        # Options that contradict each other.
        (["hog", "--walltime", "5m", "--end-time", "100"], "give one of them"),
        (["monitor", "--once", "--walltime", "5m", "--end-time", "4000000000"], "give one of them"),
        (["monitor", "--stop", "--status"], "--status and --stop"),
        (["monitor", "--daemon", "--stop"], "--daemon and --stop"),
        # GPUs are a count or ids.
        (["hog", "--gpus", "abc"], "--gpus"),
        (["hog", "--gpus", "-1"], "--gpus"),
        (["hog", "--gpus", "0,0"], "twice"),
        (["monitor", "--once", "--gpus", "abc"], "--gpus"),
    ],
)
def test_hog_and_monitor_refuse_options_that_cannot_work(db: Path, args: list[str], phrase: str) -> None:
    submit(db, "true")
    before = snapshot(db)
    result = cli(db, *args, *FAST, timeout=60)
    assert_refused(result, phrase)
    assert result.returncode == 2, result.stderr
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "args", [["-t", "4:00:00"], ["-t", "90s", "-m", "1m"], ["-t", "1-0"], ["--gpus", "0,GPU-5f2c-9a"]]
)
def test_walltimes_with_units_and_gpu_ids_are_taken(db: Path, args: list[str]) -> None:
    # With nothing to run, the hog leaves after its idle timeout.
    result = cli(db, "hog", *args, *FAST, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["hog", "monitor"])
def test_every_duration_option_says_its_forms_and_what_a_bare_number_means(db: Path, name: str) -> None:
    text = " ".join(cli(db, name, "--help", env=child_env(COLUMNS="200")).stdout.split())

    def forms(option: str) -> str:
        """What the help of `option` says after "DURATION:", up to the end of its sentence."""
        return text.split(f"{option} DURATION ", 1)[1].split("DURATION: ", 1)[1].split(".", 1)[0]

    for option in ("--walltime", "--margin"):
        assert "15m, 2h" in forms(option) and "a bare number is refused (4h or 4m?)" in forms(option)
    for option in ("--idle-timeout", "--heartbeat", *(["--poll"] if name == "monitor" else [])):
        assert "15m, 2h" in forms(option) and "a bare number is minutes" in forms(option)
    assert "(default 1m)" in text and "(default 30s)" in text
    assert "smaller of 5m and 10% of the allocation" in text
    assert "[default: (" not in text


# -- the margin scales with the allocation --------------------------------------------------------


def test_a_four_minute_walltime_runs_tasks_by_default(db: Path) -> None:
    """`hog -t 4m`: the default margin is a tenth of it (24 s), not 5 minutes."""
    result = cli(db, "submit", "--file", "-", input="true\ntrue\n")
    assert result.returncode == 0, result.stderr
    hog = start_hog(db, *FAST, "-t", "4m")
    assert finish(hog) == 0
    assert task_counts(db)["done"] == 2
    (row,) = cli_json(db, "show", "-H")
    assert row["tasks_run"] == 2


def test_a_five_minute_slurm_job_runs_tasks_by_default(db: Path, tmp_path: Path) -> None:
    """The monitor's hogs in a 5-minute allocation (as `srun -t 5` gives) run tasks without
    --time: a margin of 30 s, not 5 minutes."""
    env = fake_slurm_job(tmp_path, seconds_left=300)
    result = cli(db, "submit", "--file", "-", input="true\n" * 20, env=env)
    assert result.returncode == 0, result.stderr
    finished = monitor(db, "--hogs", "1", env=env)
    assert finished.returncode == 0, finished.stderr
    assert task_counts(db)["done"] == 20
    assert all(row["slurm_job_id"] == "4242" for row in cli_json(db, "show", "-H"))


def test_a_hog_whose_margin_is_not_shorter_than_its_slurm_job_says_so(db: Path, tmp_path: Path) -> None:
    env = fake_slurm_job(tmp_path, seconds_left=240)
    task_id = submit(db, "true")
    before = snapshot(db)
    result = cli(db, "hog", *FAST, "--margin", "5m", env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "margin" in line]
    assert "--margin 5m is not shorter than" in line and "SLURM job 4242" in line
    assert "give a shorter --margin" in line
    assert snapshot(db) == before
    assert cli_json(db, "check", str(task_id))[0]["state"] == "waiting"


def test_the_monitor_names_the_margin_when_its_hogs_refuse_it(db: Path, tmp_path: Path) -> None:
    env = fake_slurm_job(tmp_path, seconds_left=240)
    submit(db, "true")
    result = monitor(db, "--hogs", "1", "--margin", "5m", env=env)
    assert result.returncode == 1
    assert "giving up: hogs fail to start" in result.stderr
    assert "--margin 5m is not shorter than" in result.stderr
    rows = cli_json(db, "show", "-H")
    assert rows and all(row["state"] == "cancelled" and row["started_at"] is None for row in rows)
    assert all("--margin 5m" in row["end_reason"] for row in rows)


# -- what a task finds in its environment ---------------------------------------------------------


def environment_of(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_a_task_takes_its_node_from_the_hog_and_its_share_of_it(db: Path, tmp_path: Path) -> None:
    """TMPDIR, HOSTNAME and the job's SLURM variables are the hog's, not the submitter's; the
    variables that size a step say the task's own cores, memory and GPUs."""
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    login = child_env(TMPDIR="/login/tmp", HOSTNAME="login1", SLURM_CPUS_ON_NODE="64", SLURM_JOB_ID="1")
    pattern = str(out / "{id}.env")
    small = submit(db, "-c", "1", "--mem", "100M", "-g", "1", "-o", pattern, "env", env=login)
    wide = submit(db, "-c", "2", "-o", pattern, "env", env=login)
    own_tmp = submit(db, "-o", pattern, "TMPDIR=/mine", "env", env=login)
    hog_env = child_env(
        SLURM_JOB_ID="4242",
        SLURM_JOB_PARTITION="short",
        SLURMD_NODENAME="fake7",
        SLURM_CPUS_ON_NODE="2",
        SLURM_CPUS_PER_TASK="2",
        SLURM_MEM_PER_NODE="4096",
        SLURM_GPUS_ON_NODE="2",
        TMPDIR=str(node_tmp),
        HOSTNAME="login1",
    )
    hog = start_hog(db, *FAST, "-t", "10m", "--gpus", "0,1", env=hog_env)
    assert finish(hog) == 0
    assert task_counts(db)["done"] == 3
    small_env, wide_env = environment_of(out / f"{small}.env"), environment_of(out / f"{wide}.env")
    for env in (small_env, wide_env):
        assert env["TMPDIR"] == str(node_tmp)
        assert env["HOSTNAME"] == socket.gethostname()
        assert (env["SLURM_JOB_ID"], env["SLURM_JOB_PARTITION"], env["SLURMD_NODENAME"]) == (
            "4242",
            "short",
            "fake7",
        )
    assert (small_env["SLURM_CPUS_ON_NODE"], small_env["SLURM_CPUS_PER_TASK"]) == ("1", "1")
    assert small_env["SLURM_MEM_PER_NODE"] == "100"
    assert small_env["SLURM_GPUS_ON_NODE"] == "1" and small_env["CUDA_VISIBLE_DEVICES"] in ("0", "1")
    assert (wide_env["SLURM_CPUS_ON_NODE"], wide_env["SLURM_CPUS_PER_TASK"]) == ("2", "2")
    assert wide_env["SLURM_MEM_PER_NODE"] == "4096", "without --mem, the job's memory"
    assert wide_env["SLURM_GPUS_ON_NODE"] == "0" and wide_env["CUDA_VISIBLE_DEVICES"] == ""
    assert environment_of(out / f"{own_tmp}.env")["TMPDIR"] == "/mine", "the submit's own NAME=value"


def test_outside_slurm_a_task_gets_no_slurm_variables_and_no_login_tmpdir(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "task.env"
    login = child_env(TMPDIR="/login/tmp", HOSTNAME="login1", SLURM_CPUS_ON_NODE="64")
    submit(db, "-o", str(out), "env", env=login)
    hog_env = child_env()
    for name in [name for name in hog_env if name.startswith(("SLURM", "TMPDIR"))]:
        del hog_env[name]
    hog = start_hog(db, *FAST, env=hog_env)
    assert finish(hog) == 0
    env = environment_of(out)
    assert "TMPDIR" not in env
    assert env["HOSTNAME"] == socket.gethostname()
    assert not [name for name in env if name.startswith("SLURM_") and name != "SLURM_HOG_DB"]


def test_gpu_variables_are_empty_for_a_task_on_a_hog_without_gpus(db: Path, tmp_path: Path) -> None:
    """Unset, a program would see every GPU of the node (a hog told --gpus 0 on a GPU node)."""
    out = tmp_path / "task.env"
    submit(db, "-o", str(out), "env")
    hog = start_hog(db, *FAST, "--gpus", "0", env=child_env(CUDA_VISIBLE_DEVICES="0,1"))
    assert finish(hog) == 0
    env = environment_of(out)
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "HOG_GPUS"):
        assert env[name] == "", name
