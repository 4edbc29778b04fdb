"""End to end on a real local SLURM cluster (scripts/slurm-cluster.sh: nodes n1-n4, 4 CPUs each,
n4 with 2 GPUs through GRES). Skipped without one, except in CI, where that is a failure."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, child_env, cli, cli_json, holds_for, task_counts, wait_until

from hog.store import queue
from hog.store.db import open_database

pytestmark = pytest.mark.slurm
CLUSTER = REPO / "scripts" / "slurm-cluster.sh"
HOG_OPTIONS = ("--heartbeat", "1s", "--idle-timeout", "3s")


@pytest.fixture(scope="session")
def slurm_env() -> dict:
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        message = "no local SLURM cluster: start one with scripts/slurm-cluster.sh start"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI needs it; scripts/test.sh starts it)")
        pytest.skip(message)
    exports = subprocess.run([str(CLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    env = child_env()
    for line in exports.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value.strip("'\"")
    return env


def run(argv: list[str], env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)


def monitor(db: Path, env: dict, *args: str) -> subprocess.Popen:
    log = open(f"{db}.monitor.out", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "monitor", "--poll", "1s", *HOG_OPTIONS, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def submit_lines(db: Path, line: str, count: int, *options: str, env: dict) -> None:
    result = cli(db, "submit", *options, "--file", "-", input="\n".join([line] * count) + "\n", env=env)
    assert result.returncode == 0, result.stderr


def all_attempts(db: Path) -> list[queue.Attempt]:
    database = open_database(str(db))
    try:
        ids = [row[0] for row in queue.iter_tasks(database)]
        return [attempt for task in queue.get_tasks(database, ids) for attempt in task.attempts]
    finally:
        database.close()


def peak_per_host(attempts: list[queue.Attempt]) -> dict[str, int]:
    """Most attempts running at once on each host."""
    events: dict[str, list[tuple[float, int]]] = {}
    for attempt in attempts:
        events.setdefault(attempt.host, []).extend([(attempt.started_at, 1), (attempt.ended_at, -1)])
    peaks = {}
    for host, points in events.items():
        running = peak = 0
        for _, step in sorted(points, key=lambda p: (p[0], p[1])):
            running += step
            peak = max(peak, running)
        peaks[host] = peak
    return peaks


def finish(process: subprocess.Popen, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()


def test_srun_prefix_runs_500_tasks_on_three_whole_nodes(db: Path, slurm_env: dict) -> None:
    submit_lines(db, "sleep 0.0$((RANDOM % 3))", 500, env=slurm_env)
    process = monitor(db, slurm_env, "--command-prefix", "srun -N1 --exclusive -t 5", "--hogs", "3", "--once")
    assert finish(process, timeout=300) == 0
    assert task_counts(db)["done"] == 500
    attempts = all_attempts(db)
    hosts = {attempt.host for attempt in attempts}
    assert hosts <= {"n1", "n2", "n3", "n4"} and hosts, hosts
    assert all(peak <= 4 for peak in peak_per_host(attempts).values()), peak_per_host(attempts)
    hogs = cli_json(db, "show", "-H", env=slurm_env)
    assert 1 <= len(hogs) <= 3 + 1
    assert all(hog["slurm_job_id"] for hog in hogs), "each hog knows its SLURM job"
    assert all(hog["cores"] == 4 for hog in hogs), "cores come from SLURM_CPUS_ON_NODE"


def test_sbatch_backend_follows_hogs_by_job_id(db: Path, slurm_env: dict) -> None:
    submit_lines(db, "sleep 0.0$((RANDOM % 3))", 300, env=slurm_env)
    process = monitor(db, slurm_env, "--backend", "sbatch", "--walltime", "5m", "--hogs", "3", "--once")
    assert finish(process, timeout=300) == 0
    assert task_counts(db)["done"] == 300
    hogs = cli_json(db, "show", "-H", env=slurm_env)
    assert hogs and all(hog["backend"] == "sbatch" for hog in hogs)
    assert all(hog["backend_id"] == hog["slurm_job_id"] for hog in hogs)
    assert all(hog["state"] == "finished" for hog in hogs)


def test_hog_reads_its_end_from_slurm_and_drains_before_the_kill(db: Path, slurm_env: dict) -> None:
    (endless,) = [int(cli(db, "submit", "sleep 600", env=slurm_env).stdout)]
    (too_long,) = [int(cli(db, "submit", "-t", "5m", "true", env=slurm_env).stdout)]
    started = time.monotonic()
    hog = run(
        [
            "srun",
            "-N1",
            "--exclusive",
            "-t",
            "1",
            sys.executable,
            "-m",
            "hog",
            "--db",
            str(db),
            "hog",
            "--heartbeat",
            "1s",
            "--idle-timeout",
            "5m",
            "--margin",
            "20s",
        ],
        slurm_env,
        timeout=180,
    )
    assert hog.returncode == 0, hog.stderr[-2000:]
    assert time.monotonic() - started < 60 + 5, "the hog waited for SLURM's kill"
    (row,) = cli_json(db, "show", "-H", env=slurm_env)
    assert row["state"] == "finished" and row["end_reason"] == "walltime"
    assert row["end_by"] is not None
    states = {task["id"]: task for task in cli_json(db, "check", str(endless), str(too_long), env=slurm_env)}
    assert states[endless]["state"] == "waiting" and states[endless]["attempts"] == 1
    assert states[too_long]["state"] == "waiting" and states[too_long]["attempts"] == 0


def test_scancel_of_a_hog_gives_its_tasks_to_another(db: Path, slurm_env: dict, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    # `&&`: SLURM signals the job's processes one by one, so the shell may outlive its sleep
    # long enough to run what follows; a task must not record work it was stopped in.
    submit_lines(db, f"sleep 2 && echo $HOG_TASK_ID >> {done}", 24, env=slurm_env)
    process = monitor(db, slurm_env, "--backend", "sbatch", "--walltime", "5m", "--hogs", "2", "--once")
    try:
        victim = wait_until(
            lambda: next((h for h in cli_json(db, "show", "-H", env=slurm_env) if h["running"]), None),
            timeout=60,
            message="a hog running tasks",
        )
        assert run(["scancel", victim["backend_id"]], slurm_env).returncode == 0
        assert finish(process, timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()
    rows = {hog["id"]: hog for hog in cli_json(db, "show", "-H", env=slurm_env)}
    assert rows[victim["id"]]["state"] in ("finished", "lost")
    assert sorted(map(int, done.read_text().split())) == list(range(1, 25))
    assert task_counts(db)["done"] == 24


def test_gpu_tasks_run_two_at_a_time_on_the_gpu_node(db: Path, slurm_env: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    line = 'echo "$CUDA_VISIBLE_DEVICES $(date +%s.%N)"; sleep 1; date +%s.%N'
    submit_lines(db, line, 4, "-g", "1", "-o", str(out / "{id}.txt"), env=slurm_env)
    process = monitor(
        db, slurm_env, "--command-prefix", "srun -N1 --exclusive --gres=gpu:2 -t 5", "--hogs", "1", "--once"
    )
    assert finish(process, timeout=180) == 0
    runs = []
    for path in sorted(out.iterdir()):
        first, last = path.read_text().splitlines()
        device, start = first.split()
        runs.append((device, float(start), float(last)))
    assert len(runs) == 4
    assert {attempt.host for attempt in all_attempts(db)} == {"n4"}
    assert {device for device, _, _ in runs} == {"0", "1"}
    concurrent = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :] if a[1] < b[2] and b[1] < a[2]]
    assert concurrent, "GPU tasks did not run two at a time"
    assert all(a[0] != b[0] for a, b in concurrent), "two running tasks shared a GPU"


def test_node_failure_loses_the_hog_and_a_replacement_finishes_its_tasks(
    db: Path, slurm_env: dict, tmp_path: Path
) -> None:
    done = tmp_path / "done.txt"
    submit_lines(db, f"sleep 3 && echo $HOG_TASK_ID >> {done}", 12, env=slurm_env)
    process = monitor(db, slurm_env, "--command-prefix", "srun -N1 --exclusive -t 5", "--hogs", "1", "--once")
    cluster_dir = Path(slurm_env.get("SLURM_HOG_CLUSTER_DIR", "/tmp/slurm-hog-cluster"))
    try:
        victim = wait_until(
            lambda: next((h for h in cli_json(db, "show", "-H", env=slurm_env) if h["running"]), None),
            timeout=60,
            message="a hog running tasks",
        )
        slurmd_pid = int((cluster_dir / "run" / f"slurmd-{victim['host']}.pid").read_text())
        os.kill(slurmd_pid, signal.SIGKILL)
        os.kill(victim["pid"], signal.SIGKILL)
        assert finish(process, timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()
        subprocess.run([str(CLUSTER), "start"], capture_output=True, timeout=180)
    rows = {hog["id"]: hog for hog in cli_json(db, "show", "-H", env=slurm_env)}
    assert rows[victim["id"]]["state"] == "lost"
    assert len(rows) >= 2
    assert {row["host"] for row in rows.values() if row["id"] != victim["id"]} - {victim["host"]}
    assert task_counts(db)["done"] == 12
    finished = list(map(int, done.read_text().split()))
    assert sorted(set(finished)) == list(range(1, 13))


def test_locking_check_contends_from_several_nodes(db: Path, slurm_env: dict) -> None:
    result = cli(
        db,
        "doctor",
        "--processes",
        "2",
        "--command-prefix",
        "srun -N2 --ntasks-per-node=2 -t 2",
        env=slurm_env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # 2 local workers and 4 through srun, 50 increments each.
    assert "300 locked increments" in result.stdout and "locking works" in result.stdout


def test_a_hog_still_pending_in_slurm_is_not_lost(db: Path, slurm_env: dict) -> None:
    assert cli(db, "submit", "true", env=slurm_env).returncode == 0
    # --begin keeps the job pending for a while, as a busy cluster would.
    process = monitor(db, slurm_env, "--backend", "sbatch", "--sbatch-args", "--begin=now+600", "--hogs", "1")
    try:
        wait_until(
            lambda: [h for h in cli_json(db, "show", "-H", env=slurm_env) if h["backend_id"]],
            timeout=30,
            message="a submitted hog",
        )
        # Several monitor passes (--poll 1s) and more than a lease (3 s + 2 s): still pending.
        assert holds_for(
            lambda: [h["state"] for h in cli_json(db, "show", "-H", env=slurm_env)] == ["pending"], seconds=6
        )
        (row,) = cli_json(db, "show", "-H", env=slurm_env)
        assert (
            run(["squeue", "-h", "-j", row["backend_id"], "-o", "%T"], slurm_env).stdout.strip() == "PENDING"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        finish(process, timeout=30)
        for hog in cli_json(db, "show", "-H", env=slurm_env):
            run(["scancel", hog["backend_id"]], slurm_env)


def test_a_five_minute_allocation_runs_tasks_with_the_default_margin(db: Path, slurm_env: dict) -> None:
    """The default margin is a tenth of the allocation here (30 s), not 5 minutes."""
    submit_lines(db, "sleep 0.2", 120, env=slurm_env)
    process = monitor(db, slurm_env, "--command-prefix", "srun -N1 --exclusive -t 5", "--hogs", "2", "--once")
    assert finish(process, timeout=300) == 0
    assert task_counts(db)["done"] == 120


def test_a_margin_not_shorter_than_the_job_is_refused_by_the_hog(db: Path, slurm_env: dict) -> None:
    assert cli(db, "submit", "true", env=slurm_env).returncode == 0
    hog_argv = [sys.executable, "-m", "hog", "--db", str(db), "hog", "--margin", "5m"]
    hog = run(["srun", "-N1", "--exclusive", "-t", "1", *hog_argv], slurm_env, timeout=120)
    assert hog.returncode == 2, hog.stderr[-2000:]
    assert "--margin 5m is not shorter than" in hog.stderr and "SLURM job" in hog.stderr
    assert cli_json(db, "show", "-H", env=slurm_env) == []
    assert task_counts(db)["waiting"] == 1


def test_a_task_sees_its_own_share_of_the_slurm_job(db: Path, slurm_env: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    login = dict(slurm_env, TMPDIR="/login/tmp", HOSTNAME="login1")
    pattern = str(out / "{id}.env")
    for cores, mem in (("1", "100M"), ("2", "200M")):
        assert cli(db, "submit", "-c", cores, "--mem", mem, "-o", pattern, "env", env=login).returncode == 0
    hog_argv = [sys.executable, "-m", "hog", "--db", str(db), "hog", *HOG_OPTIONS]
    hog = run(["srun", "-N1", "--exclusive", "-t", "5", *hog_argv], dict(slurm_env, TMPDIR=str(node_tmp)))
    assert hog.returncode == 0, hog.stderr[-2000:]
    (row,) = cli_json(db, "show", "-H", env=slurm_env)
    assert row["cores"] == 4 and task_counts(db)["done"] == 2
    for task_id, cores, mem in ((1, "1", "100"), (2, "2", "200")):
        lines = (out / f"{task_id}.env").read_text().splitlines()
        env = dict(line.split("=", 1) for line in lines if "=" in line)
        assert env["SLURM_JOB_ID"] == row["slurm_job_id"] and env["SLURMD_NODENAME"] == row["host"]
        assert env["SLURM_CPUS_ON_NODE"] == env["SLURM_CPUS_PER_TASK"] == cores
        assert env["SLURM_MEM_PER_NODE"] == mem
        assert env["TMPDIR"] == str(node_tmp)
