"""`hogs stop` and `monitor --stop --drain` on real hogs under nohup: through the queue file, and
through a signal when a hog does not answer in time."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import child_env, cli, cli_json, wait_until

HOG_OPTIONS = ("--cores", "1", "--heartbeat", "1s", "--idle-timeout", "30s")


def nohup_hog(db: Path, *options: str) -> subprocess.Popen:
    """A hog as a user starts one by hand: under nohup, in its own session."""
    log = open(f"{db}.hog-{len(hogs(db))}.out", "ab")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(
        ["nohup", sys.executable, "-m", "hog", "--db", str(db), "hog", *(options or HOG_OPTIONS)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )


def hogs(db: Path) -> dict[int, dict]:
    return {hog["id"]: hog for hog in cli_json(db, "show", "-H")}


def full(db: Path, task_id: int) -> dict:
    return cli_json(db, "check", str(task_id), "--full")[0]


def submit(db: Path, command: str, *options: str) -> int:
    result = cli(db, "submit", *options, command)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def started_on(db: Path, task_id: int) -> int | None:
    """The hog running `task_id` once its start is in the queue."""
    task = full(db, task_id)
    last = task["attempts"][-1] if task["attempts"] else None
    if task["state"] == "running" and last and last["started_at"]:
        return last["hog_id"]
    return None


def digest(db: Path) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_drain_lets_the_running_task_finish_and_the_other_hog_works_on(
    db: Path, processes: list, tmp_path: Path
) -> None:
    gate = tmp_path / "go"  # the first task runs until the test has asked for the drain
    first = submit(db, f"while [ ! -e {gate} ]; do sleep 0.1; done; echo finished")
    processes.append(nohup_hog(db))
    draining_hog = wait_until(lambda: started_on(db, first), message="the first task to start")
    rest = [submit(db, "sleep 0.5") for _ in range(4)]
    processes.append(nohup_hog(db))
    wait_until(lambda: len(hogs(db)) == 2 and all(h["state"] == "running" for h in hogs(db).values()))

    result = cli(db, "hogs", "stop", str(draining_hog))
    assert result.returncode == 0, result.stderr
    assert "is draining: its running tasks finish, nothing new starts" in result.stdout
    assert result.stdout.startswith(f"hog {draining_hog} on ")
    gate.touch()

    wait_until(lambda: hogs(db)[draining_hog]["state"] == "finished", timeout=30, message="the hog to drain")
    drained = hogs(db)[draining_hog]
    assert drained["end_reason"] == "drained by hogs stop"
    task = full(db, first)
    assert task["state"] == "done" and len(task["attempts"]) == 1, "the running task finished where it was"
    wait_until(lambda: all(full(db, task_id)["state"] == "done" for task_id in rest), timeout=60)
    other = next(hog_id for hog_id in hogs(db) if hog_id != draining_hog)
    assert {full(db, task_id)["attempts"][-1]["hog_id"] for task_id in rest} == {other}
    assert hogs(db)[other]["state"] == "running", "the other hog keeps working"


def test_now_sends_the_running_task_back_and_another_hog_runs_it(db: Path, processes: list) -> None:
    # Long on its first attempt only: the stop must find it running, the next hog ends it soon.
    task_id = submit(db, 'if [ "$HOG_ATTEMPT" = 1 ]; then sleep 60; fi')
    processes.append(nohup_hog(db))
    stopped_hog = wait_until(lambda: started_on(db, task_id), message="the task to start")
    processes.append(nohup_hog(db))
    wait_until(lambda: len(hogs(db)) == 2)

    result = cli(db, "hogs", "stop", "--now", str(stopped_hog))
    assert result.returncode == 0, result.stderr

    wait_until(lambda: hogs(db)[stopped_hog]["state"] == "finished", timeout=30)
    assert hogs(db)[stopped_hog]["end_reason"] == "stopped by hogs stop --now"
    wait_until(lambda: full(db, task_id)["state"] == "done", timeout=60, message="the task to run again")
    attempts = full(db, task_id)["attempts"]
    assert attempts[0]["hog_id"] == stopped_hog and attempts[0]["reason"] == "released"
    assert attempts[-1]["hog_id"] != stopped_hog and attempts[-1]["exit_code"] == 0
    assert full(db, task_id)["retries_used"] == 0, "a stop uses up no retry"


@pytest.mark.parametrize(
    ("options", "signal_name", "state"), [((), "SIGUSR1", "done"), (("--now",), "SIGTERM", "waiting")]
)
def test_a_hog_that_does_not_answer_in_time_is_signalled(
    db: Path, processes: list, tmp_path: Path, options: tuple, signal_name: str, state: str
) -> None:
    # A 30 s heartbeat: after its start is written, the hog talks to the queue 30 s later (or
    # when its task ends, which waits for the test).
    gate = tmp_path / "go"
    task_id = submit(db, f"while [ ! -e {gate} ]; do sleep 0.1; done")
    hog = nohup_hog(db, "--cores", "1", "--heartbeat", "30s", "--idle-timeout", "1s")
    processes.append(hog)
    hog_id = wait_until(lambda: started_on(db, task_id), message="the task's start to be written")

    result = cli(db, "hogs", "stop", *options, "--wait", "1s", str(hog_id))
    assert result.returncode == 0, result.stderr
    assert f"did not answer within 1 s: sent {signal_name} to its process {hog.pid}" in result.stdout
    if state == "done":
        gate.touch()  # a draining hog waits for its task; a stopped one has killed it
    assert hog.wait(timeout=30) == 0
    assert full(db, task_id)["state"] == state


def test_stop_all_and_monitor_stop_drain_leave_hogs_started_by_hand_alone(db: Path, processes: list) -> None:
    tasks = [submit(db, "sleep 2") for _ in range(3)]
    result = cli(
        db, "monitor", "--daemon", "--hogs", "2", "--cores", "1", "--heartbeat", "1s", "--poll", "1s"
    )
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: [h for h in hogs(db).values() if h["backend"] == "prefix" and h["state"] == "running"][1:],
        timeout=60,
        message="two hogs the monitor started",
    )
    processes.append(nohup_hog(db))
    manual = wait_until(lambda: [h["id"] for h in hogs(db).values() if h["backend"] == "manual"])[0]

    result = cli(db, "monitor", "--stop", "--drain")
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    started_by_monitor = [h["id"] for h in hogs(db).values() if h["backend"] == "prefix"]
    assert len(started_by_monitor) == 2
    wait_until(lambda: all(hogs(db)[i]["state"] == "finished" for i in started_by_monitor), timeout=30)
    assert all(hogs(db)[i]["end_reason"] == "drained by hogs stop" for i in started_by_monitor)
    assert hogs(db)[manual]["state"] == "running"
    wait_until(lambda: all(full(db, task_id)["state"] == "done" for task_id in tasks), timeout=60)
    started = [a for task_id in tasks for a in full(db, task_id)["attempts"] if a["started_at"]]
    assert all(a["reason"] == "exited" and a["exit_code"] == 0 for a in started), "no task was interrupted"

    result = cli(db, "hogs", "stop", "--all", "--now")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: hogs(db)[manual]["state"] == "finished", timeout=30)
    result = cli(db, "hogs", "stop", "--all")
    assert (result.returncode, result.stdout.strip()) == (0, "no hog is pending or running: nothing to stop")


def test_bad_stops_say_why_and_change_nothing(db: Path, processes: list) -> None:
    submit(db, "true")
    processes.append(nohup_hog(db, "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "1s"))
    wait_until(lambda: hogs(db) and hogs(db)[1]["state"] == "finished", timeout=30)
    before = digest(db)
    for args, words in [
        ((), "say which hogs to stop"),
        (("1", "--all"), "say which hogs to stop"),
        (("99",), "no hog 99"),
        (("x",), "bad hog id 'x'"),
        (("0",), "ids start at 1"),
        (("1", "--wait", "soon"), "bad --wait 'soon'"),
    ]:
        result = cli(db, "hogs", "stop", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert digest(db) == before, args
    result = cli(db, "hogs", "stop", "1")
    assert result.returncode == 1
    assert "hog 1 is already finished: left alone" in result.stderr
    assert "nothing stopped" in result.stderr
    for args, words in [
        (("--drain",), "--drain goes with --stop"),
        (("--follow",), "--follow goes with --log"),
    ]:
        result = cli(db, "monitor", *args)
        assert result.returncode == 2 and words in result.stderr, result.stderr
