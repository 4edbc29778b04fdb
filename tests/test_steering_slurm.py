"""`hogs stop` on hogs in the local SLURM cluster: through the queue, through scancel when a hog
does not answer, and for a hog still pending in SLURM's queue."""

from pathlib import Path

import pytest
from helpers import cli, cli_json, wait_until
from test_slurm import finish, monitor, run, slurm_env

pytestmark = pytest.mark.slurm
__all__ = ["slurm_env"]  # the fixture, shared with test_slurm


def hogs(db: Path, env: dict) -> dict[int, dict]:
    return {hog["id"]: hog for hog in cli_json(db, "show", "-H", env=env)}


def tasks_of(db: Path, env: dict, hog_id: int) -> list[dict]:
    """The tasks whose first attempt ran on `hog_id`, with everything `check --full` says."""
    ids = [str(task["id"]) for task in cli_json(db, "show", env=env)]
    found = cli_json(db, "check", *ids, "--full", env=env)
    return [task for task in found if task["attempts"] and task["attempts"][0]["hog_id"] == hog_id]


def submit(db: Path, env: dict, command: str, count: int) -> None:
    result = cli(db, "submit", "--file", "-", input=f"{command}\n" * count, env=env)
    assert result.returncode == 0, result.stderr


def test_drain_a_slurm_hog_its_tasks_finish_and_the_other_hog_works_on(
    db: Path, slurm_env: dict, tmp_path: Path
) -> None:
    gate = tmp_path / "go"  # the first tasks run until the test has asked for the drain
    # A node-full (4 cores) for each of two hogs.
    submit(db, slurm_env, f"while [ ! -e {gate} ]; do sleep 0.1; done", 8)
    process = monitor(db, slurm_env, "--backend", "sbatch", "--walltime", "5m", "--hogs", "2", "--once")
    try:
        wait_until(
            lambda: [h for h in hogs(db, slurm_env).values() if h["running"] == 4][1:],
            timeout=120,
            message="two hogs running four tasks each",
        )
        drained, other = sorted(hogs(db, slurm_env))[:2]
        result = cli(db, "hogs", "stop", str(drained), env=slurm_env)
        assert result.returncode == 0, result.stderr
        assert "is draining" in result.stdout
        gate.touch()
        submit(db, slurm_env, "sleep 1", 4)  # more work after the stop: not for the draining hog
        wait_until(lambda: hogs(db, slurm_env)[drained]["state"] == "finished", timeout=120)
        assert hogs(db, slurm_env)[drained]["end_reason"] == "drained by hogs stop"
        assert hogs(db, slurm_env)[other]["state"] == "running", "the other hog keeps working"
        mine = tasks_of(db, slurm_env, drained)
        assert len(mine) == 4
        assert all(task["state"] == "done" and len(task["attempts"]) == 1 for task in mine)
        assert finish(process, timeout=300) == 0
    finally:
        if process.poll() is None:
            process.kill()
    later = cli_json(db, "check", "9-12", "--full", env=slurm_env)
    assert all(task["state"] == "done" for task in later)
    assert all(task["attempts"][-1]["hog_id"] != drained for task in later)


def test_a_slurm_hog_that_does_not_answer_is_stopped_through_scancel(db: Path, slurm_env: dict) -> None:
    submit(db, slurm_env, "sleep 60", 4)
    # A 30 s heartbeat: once the starts of the tasks that fill it are written, the hog is silent
    # for 30 s (a hog with a free core would look for work every second).
    process = monitor(
        db, slurm_env, "--backend", "sbatch", "--walltime", "5m", "--hogs", "1", "--heartbeat", "30s"
    )
    try:
        hog = wait_until(
            lambda: next(
                (
                    h
                    for h in hogs(db, slurm_env).values()
                    if h["running"] == 4
                    and all(t["attempts"][-1]["started_at"] for t in tasks_of(db, slurm_env, h["id"]))
                ),
                None,
            ),
            timeout=120,
            message="a hog that has started four tasks",
        )
        result = cli(db, "hogs", "stop", "--now", "--wait", "2s", str(hog["id"]), env=slurm_env)
        assert result.returncode == 0, result.stderr
        assert f"did not answer within 2 s: asked SLURM (scancel {hog['backend_id']})" in result.stdout
        wait_until(
            lambda: all(t["attempts"][0]["ended_at"] for t in tasks_of(db, slurm_env, hog["id"])),
            timeout=120,
            message="the tasks to be given back",
        )
        for task in tasks_of(db, slurm_env, hog["id"]):
            assert task["attempts"][0]["reason"] == "released", task["attempts"][0]
            assert task["state"] in ("waiting", "running") and task["retries_used"] == 0
    finally:
        assert cli(db, "cancel", "--all", env=slurm_env).returncode == 0
        process.terminate()
        finish(process, timeout=60)
        for row in hogs(db, slurm_env).values():
            run(["scancel", row["backend_id"]], slurm_env)


def test_a_hog_pending_in_slurm_is_cancelled_with_its_job(db: Path, slurm_env: dict) -> None:
    assert cli(db, "submit", "true", env=slurm_env).returncode == 0
    process = monitor(db, slurm_env, "--backend", "sbatch", "--sbatch-args", "--begin=now+600", "--hogs", "1")
    try:
        (row,) = wait_until(lambda: [h for h in hogs(db, slurm_env).values() if h["backend_id"]], timeout=30)
        result = cli(db, "hogs", "stop", "--all", env=slurm_env)
        assert result.returncode == 0, result.stderr
        assert f"had not started: cancelled, and its SLURM job {row['backend_id']} too" in result.stdout
        assert hogs(db, slurm_env)[row["id"]]["state"] == "cancelled"
        state = run(["squeue", "-h", "-t", "all", "-j", row["backend_id"], "-o", "%T"], slurm_env).stdout
        assert state.strip() in ("", "CANCELLED"), state
        # The monitor starts another for the waiting task; hogs a user stopped before they
        # started are not hogs that fail to start, which would make it back off.
        for _ in range(3):
            wait_until(
                lambda: [
                    h for h in hogs(db, slurm_env).values() if h["state"] == "pending" and h["backend_id"]
                ],
                timeout=30,
            )
            assert cli(db, "hogs", "stop", "--all", env=slurm_env).returncode == 0
        wait_until(lambda: [h for h in hogs(db, slurm_env).values() if h["state"] == "pending"], timeout=30)
        assert "fail to start" not in Path(f"{db}.monitor.out").read_text()
    finally:
        process.terminate()
        finish(process, timeout=60)
        for hog in hogs(db, slurm_env).values():
            run(["scancel", hog["backend_id"]], slurm_env)
