"""The monitor with real local hogs (the nohup prefix), and the sbatch backend's parsing."""

import fcntl
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import psutil
import pytest
from helpers import child_env, cli, cli_json, holds_for, states_of, task_counts, wait_until

from hog.fleet.backends import PrefixBackend, SbatchBackend, hog_command
from hog.fleet.monitor import Monitor, MonitorConfig
from hog.fleet.sizing import HogSize, hogs_for
from hog.gpushare import GPU_UNITS
from hog.pilot.options import HogOptions
from hog.store import claims, states
from hog.store.db import open_database
from hog.store.packing import Resources

HOG_OPTIONS = ("--heartbeat", "1s", "--idle-timeout", "2s")


def start_monitor(db: Path, *args: str) -> subprocess.Popen:
    log = open(f"{db}.monitor-{len(list(Path(db).parent.glob('*.monitor-*')))}.out", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "hog", "--db", str(db), "monitor", "--poll", "0.5s", *HOG_OPTIONS, *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )


def hogs(db: Path) -> list[dict]:
    return cli_json(db, "show", "-H")  # type: ignore[return-value]


def most_at_once(rows: list[dict]) -> int:
    events = []
    for hog in rows:
        start = hog["started_at"] or hog["created_at"]
        events += [(start, 1), (hog["ended_at"] or float("inf"), -1)]
    running = peak = 0
    for _, step in sorted(events, key=lambda event: (event[0], event[1])):
        running += step
        peak = max(peak, running)
    return peak


def alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def submit_lines(db: Path, line: str, count: int) -> None:
    result = cli(db, "submit", "--file", "-", input="\n".join([line] * count) + "\n")
    assert result.returncode == 0, result.stderr


def test_monitor_runs_500_tasks_with_at_most_3_hogs_and_leaves_none(db: Path) -> None:
    submit_lines(db, "sleep 0.0$((RANDOM % 4))", 500)
    monitor = start_monitor(db, "--hogs", "3", "--once")
    assert monitor.wait(timeout=240) == 0
    assert task_counts(db)["done"] == 500
    rows = hogs(db)
    assert len(rows) >= 1 and most_at_once(rows) <= 3
    assert {hog["state"] for hog in rows} == {"finished"}
    assert sum(hog["tasks_run"] for hog in rows) == 500
    assert not any(alive(hog["pid"]) for hog in rows), "a hog outlived the monitor's --once"


def test_one_waiting_task_is_enough_to_start_a_hog(db: Path) -> None:
    assert cli(db, "submit", "true").returncode == 0
    monitor = start_monitor(db, "--hogs", "4", "--once")
    assert monitor.wait(timeout=60) == 0
    assert task_counts(db)["done"] == 1
    assert len(hogs(db)) == 1, "one task needs one hog, not four"


def test_killed_hog_is_replaced_and_its_tasks_run_once_elsewhere(db: Path, tmp_path: Path) -> None:
    done = tmp_path / "done.txt"
    submit_lines(db, f"sleep 1; echo $HOG_TASK_ID >> {done}", 16)
    monitor = start_monitor(db, "--hogs", "2", "--once")
    try:
        victim = wait_until(
            lambda: next((h for h in hogs(db) if h["state"] == "running" and h["running"]), None),
            message="a hog running tasks",
        )
        os.kill(victim["pid"], signal.SIGKILL)
        assert monitor.wait(timeout=120) == 0
    finally:
        if monitor.poll() is None:
            monitor.kill()
    rows = {hog["id"]: hog for hog in hogs(db)}
    assert rows[victim["id"]]["state"] == "lost"
    assert len(rows) >= 3, "no replacement was started"
    assert most_at_once(list(rows.values())) <= 2 + 1  # the victim's end is recorded late
    assert sorted(map(int, done.read_text().split())) == list(range(1, 17))
    assert set(states_of(db).values()) == {"done"}


def test_killing_the_monitor_leaves_hogs_running_and_a_new_one_adopts_them(db: Path) -> None:
    submit_lines(db, "sleep 0.5", 24)
    first = start_monitor(db, "--hogs", "2")
    live = wait_until(
        lambda: [h for h in hogs(db) if h["state"] == "running"] if len(hogs(db)) == 2 else None,
        message="two hogs running",
    )
    wait_until(lambda: all(h["state"] == "running" for h in hogs(db)), message="both hogs started")
    first.kill()
    first.wait()
    assert all(alive(hog["pid"]) for hog in hogs(db)), "hogs died with their monitor"
    second = start_monitor(db, "--hogs", "2", "--once")
    assert second.wait(timeout=120) == 0
    assert task_counts(db)["done"] == 24
    assert len(hogs(db)) == 2, "the new monitor started hogs instead of adopting the live ones"
    assert live


def test_a_second_monitor_on_the_same_database_refuses(db: Path) -> None:
    first = start_monitor(db, "--hogs", "1")
    try:
        wait_until(lambda: cli(db, "monitor", "--status").returncode == 0, message="first monitor up")
        second = cli(db, "monitor", "--hogs", "1", "--poll", "0.5s")
        assert second.returncode != 0
        assert "already serves" in second.stderr and str(first.pid) in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0


def test_a_monitor_starts_while_status_probes_its_lock(db: Path) -> None:
    """`status`, `wait` and `monitor --status` hold the monitor's lock for a moment to look: a
    monitor starting then must not take that for another monitor."""
    lock = f"{db}.monitor.lock"
    probe = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(probe, fcntl.LOCK_SH)
    monitor = start_monitor(db, "--hogs", "1")
    try:
        # It has opened the lock file: it is trying to take the lock while the probe holds it.
        wait_until(
            lambda: (
                monitor.poll() is not None
                or lock in [f.path for f in psutil.Process(monitor.pid).open_files()]
            ),
            message="the monitor at its lock",
        )
        os.close(probe)
        wait_until(lambda: cli(db, "monitor", "--status").returncode == 0, message="the monitor up")
        assert monitor.poll() is None, "it took a probe for another monitor"
    finally:
        if monitor.poll() is None:
            monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=20)


def test_daemon_status_and_stop(db: Path) -> None:
    started = cli(db, "monitor", "--daemon", "--hogs", "1", "--poll", "0.5s")
    assert started.returncode == 0, started.stderr
    try:
        again = cli(db, "monitor", "--daemon", "--hogs", "1")
        assert again.returncode == 0 and "already serves" in again.stdout
        status = cli(db, "monitor", "--status")
        assert status.returncode == 0 and "pid" in status.stdout
        assert Path(f"{db}.monitor.pid").exists()
    finally:
        stopped = cli(db, "monitor", "--stop")
    assert stopped.returncode == 0, stopped.stderr
    assert cli(db, "monitor", "--status").returncode == 1
    assert not Path(f"{db}.monitor.pid").exists()


# -- the sbatch backend's parsing, against fake SLURM commands ----------------------------------


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'echo "$@" > {tmp_path}/sbatch.args; echo "4242;hogtest"',
        "squeue": 'printf "4242 RUNNING\\n4243 COMPLETED\\n4244 PENDING\\n9999 RUNNING\\n"',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_sbatch_backend_submits_a_script_and_parses_the_job_id(fake_slurm: Path) -> None:
    backend = SbatchBackend("-p short --account lab", walltime_s=3600)
    argv = hog_command(str(fake_slurm / "q.sqlite"), 300, 7, HogOptions(walltime_s=3600))
    job_id = backend.start(7, argv, str(fake_slurm / "hog-7.log"))
    assert job_id == "4242"
    args = (fake_slurm / "sbatch.args").read_text().split()
    assert args[:4] == ["--parsable", "-p", "short", "--account"]
    script = Path(args[-1]).read_text()
    assert "#SBATCH --time=60" in script and "#SBATCH --exclusive" in script
    assert "--hog-id 7" in script and "--walltime 3600s" in script
    assert script.splitlines()[-1].startswith("exec ")


def test_sbatch_backend_follows_jobs_by_id(fake_slurm: Path) -> None:
    backend = SbatchBackend("", walltime_s=None)
    assert backend.alive(["4242", "4243", "4244", "5000"]) == {
        "4242": True,
        "4243": False,
        "4244": True,
        "5000": False,
    }


def test_monitor_gives_up_when_hogs_cannot_start(db: Path) -> None:
    assert cli(db, "submit", "true").returncode == 0
    monitor = start_monitor(db, "--hogs", "2", "--once", "--command-prefix", "false")
    assert monitor.wait(timeout=60) == 1
    rows = hogs(db)
    assert 3 <= len(rows) <= 4 and all(hog["state"] == "lost" for hog in rows)
    log_text = "".join(p.read_text() for p in Path(db).parent.glob("*.monitor-*.out"))
    assert "giving up: hogs fail to start" in log_text


def test_a_prefix_hog_that_ended_before_it_was_followed_is_not_taken_for_alive(tmp_path: Path) -> None:
    backend = PrefixBackend(["sh", "-c", "exit 1", "hog"])
    backend_id = backend.start(1, ["hog"], str(tmp_path / "hog.log"))
    _, ticks, _ = backend_id.split("@")
    # The start time is read before the child is reaped, so even a child already gone has one.
    assert ticks, backend_id
    wait_until(lambda: backend.child_ended(), message="the hog command ended")
    assert backend.alive([backend_id]) == {backend_id: False}
    # An id whose start time could not be read is never taken for a live process.
    gone = subprocess.Popen(["true"])
    gone.wait()
    unknown_start = f"{gone.pid}@@{backend.host}"
    assert backend.alive([unknown_start]) == {unknown_start: False}


def test_monitor_gives_up_on_tasks_no_hog_can_run(db: Path) -> None:
    assert cli(db, "submit", "-c", "64", "true").returncode == 0
    monitor = start_monitor(db, "--hogs", "1", "--once", "--cores", "2")
    assert monitor.wait(timeout=90) == 1
    log_text = "".join(p.read_text() for p in Path(db).parent.glob("*.monitor-*.out"))
    assert "no hog can run the 1 waiting task:" in log_text
    assert task_counts(db)["waiting"] == 1


def test_monitor_survives_a_pass_that_cannot_write_a_hog_log(db: Path) -> None:
    """An OSError while starting a hog (here its log path is a folder) costs one pass, not the
    monitor: the hog that could not start is cancelled with the reason, the next one runs the task."""
    (Path(f"{db}.logs") / "hogs" / "hog-1.log").mkdir(parents=True)
    assert cli(db, "submit", "true").returncode == 0
    monitor = start_monitor(db, "--hogs", "1", "--once")
    assert monitor.wait(timeout=60) == 0
    rows = {hog["id"]: hog for hog in hogs(db)}
    assert rows[1]["state"] == "cancelled" and "could not start" in rows[1]["end_reason"]
    assert rows[2]["state"] == "finished"
    assert task_counts(db)["done"] == 1
    log_text = "".join(p.read_text() for p in Path(db).parent.glob("*.monitor-*.out"))
    assert "Is a directory" in log_text and "trying again" in log_text


# -- a hog counts against --hogs until its backend has ended ------------------------------------


def hog_processes(monitor: subprocess.Popen) -> int:
    """The monitor's hog processes alive now (a zombie holds no node)."""
    count = 0
    try:
        children = psutil.Process(monitor.pid).children()
    except psutil.NoSuchProcess:
        return 0
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "--hog-id" in child.cmdline():
                count += 1
        except psutil.NoSuchProcess:
            pass
    return count


def test_a_hog_that_has_said_goodbye_counts_until_its_process_has_ended(db: Path) -> None:
    """Hogs that leave at their walltime while work waits: each replacement must wait until the
    leaving hog's process is gone, not only its row (the window is a few milliseconds, so many
    hogs come and go)."""
    submit_lines(db, "sleep 0.1", 300)
    # A 6 s walltime stops a hog after a second of work (it stops 5 s before the end).
    leaving = ("--walltime", "6s", "--margin", "0.5s", "--idle-timeout", "1s", "--poll", "0.1s")
    monitor = start_monitor(db, "--hogs", "2", "--once", *leaving)
    peak = 0
    try:
        while monitor.poll() is None:
            peak = max(peak, hog_processes(monitor))
            assert peak <= 2, f"{peak} hog processes at once under --hogs 2"
            time.sleep(0.002)
    finally:
        if monitor.poll() is None:
            monitor.kill()
    assert monitor.returncode == 0
    assert task_counts(db)["done"] == 300
    assert len(hogs(db)) >= 6, "too few hogs came and went to test anything"


def write_fake_squeue(bin_dir: Path, lines: str) -> None:
    (bin_dir / "squeue").write_text(f"#!/bin/sh\nprintf '{lines}'\n")


def sbatch_monitor(db: Path, hogs: int) -> Monitor:
    config = MonitorConfig.from_options(
        str(db), 30, None, hogs, "sbatch", "", 1.0, False, HogOptions(cores=2)
    )
    return Monitor(config, open_database(str(db)))


@pytest.mark.parametrize(
    ("state", "still_listed", "ended"),
    [
        # It has said goodbye, but its job is still completing.
        (states.HOG_FINISHED, "4242 COMPLETING\\n", "4242 COMPLETED\\n"),
        # Declared lost (no heartbeat), but its job runs on: a hung node is still allocated.
        (states.HOG_LOST, "4242 RUNNING\\n", ""),
    ],
    ids=["finished-completing", "lost-running"],
)
def test_an_ended_hog_whose_job_squeue_still_lists_counts(
    db: Path, fake_slurm: Path, state: str, still_listed: str, ended: str
) -> None:
    monitor = sbatch_monitor(db, hogs=1)
    try:
        hog_id = claims.create_pending_hog(monitor.db, "sbatch", "login", 60)
        claims.set_hog_backend(monitor.db, hog_id, "4242", str(fake_slurm / "hog.log"))
        claims.set_hog_state(monitor.db, hog_id, state, "ended")
        assert cli(db, "submit", "true").returncode == 0
        write_fake_squeue(fake_slurm / "fake-bin", still_listed)
        monitor.one_pass()
        assert not (fake_slurm / "sbatch.args").exists(), "a second job while the first is listed"
        assert [hog["id"] for hog in hogs(db)] == [hog_id]
        # Once squeue says the job ended, or lists it no more, the next one is submitted.
        write_fake_squeue(fake_slurm / "fake-bin", ended)
        monitor.one_pass()
        assert (fake_slurm / "sbatch.args").exists()
        assert len(hogs(db)) == 2
    finally:
        monitor.db.close()


# -- demand counts every resource ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_options", "tasks", "hog_options", "wanted"),
    [
        (("-g", "1"), 6, ("--cores", "4", "--gpus", "2"), 3),  # by cores alone: 2
        (("--mem", "2G"), 3, ("--cores", "4", "--mem", "3G"), 3),  # by cores alone: 1
    ],
    ids=["gpus", "memory"],
)
def test_the_monitor_asks_for_hogs_by_every_resource_tasks_need(
    db: Path, tmp_path: Path, task_options: tuple, tasks: int, hog_options: tuple, wanted: int
) -> None:
    go = tmp_path / "go"
    # Hogs wait for the test to let them start: what the monitor asked for is all there is.
    gate = f"sh -c 'while [ ! -e {go} ]; do sleep 0.05; done; exec \"$@\"' {go}"
    result = cli(db, "submit", "--file", "-", *task_options, input="true\n" * tasks)
    assert result.returncode == 0, result.stderr
    monitor = start_monitor(db, "--hogs", "8", "--once", "--command-prefix", gate, *hog_options)
    try:
        wait_until(lambda: len(hogs(db)) >= wanted, message=f"{wanted} hogs asked for")
        assert all(hog["state"] == "pending" for hog in hogs(db))
        assert holds_for(lambda: len(hogs(db)) == wanted, 1.5), "more hogs than the tasks can use"
    finally:
        go.touch()
        assert monitor.wait(timeout=120) == 0
    assert task_counts(db)["done"] == tasks


@pytest.mark.parametrize(
    ("needs", "size", "wanted"),
    [
        ([((1, 1, 0), 7)], (64, 2, None), 4),  # 1-GPU tasks, 2 per hog
        ([((1, 0, 10 << 30), 7)], (64, None, 32 << 30), 3),  # 10 GiB tasks, 3 per 32 GiB hog
        ([((40, 0, 0), 3)], (64, None, None), 3),  # one 40-core task per 64-core hog
        ([((1, 0, 0), 100), ((1, 1, 0), 2)], (64, 2, None), 2),  # GPU tasks share hogs with others
        ([((1, 1, 0), 5)], (64, 0, None), 0),  # no hog has a GPU: more hogs would not help
        ([((1, Fraction(1, 2), 0), 9)], (64, 2, None), 3),  # half-GPU tasks, 4 per 2-GPU hog
        ([((1, 1, 0), 5)], (64, None, None), 1),  # GPUs not known yet: counted by cores
        ([((128, 0, 0), 1), ((1, 0, 0), 1)], (64, None, None), 1),  # too big for a hog: not counted
    ],
)
def test_hogs_for_counts_the_resource_that_asks_for_most(needs: list, size: tuple, wanted: int) -> None:

    in_units = [(Resources(cores, int(gpus * GPU_UNITS), mem), count) for (cores, gpus, mem), count in needs]
    assert hogs_for(in_units, HogSize(*size)) == wanted


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (("--backend", "sbatch", "--command-prefix", "srun -N1"), "--command-prefix is for --backend prefix"),
        (("--sbatch-args", "-p short"), "--sbatch-args is for --backend sbatch"),
    ],
)
def test_options_of_the_other_backend_are_refused(db: Path, options: tuple[str, ...], named: str) -> None:
    before = db.read_bytes()
    result = cli(db, "monitor", "--once", *options)
    assert result.returncode == 2 and named in result.stderr
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == before


def test_a_daemon_monitor_is_started_again_with_its_backends_options_only(db: Path) -> None:
    config = MonitorConfig.from_options(
        str(db), 60.0, None, 2, "sbatch", "-p short", 5.0, False, HogOptions(walltime_s=3600.0)
    )
    argv = config.to_argv()
    assert "--command-prefix" not in argv and argv[argv.index("--sbatch-args") + 1] == "-p short"
    again = MonitorConfig.from_options(str(db), 60.0, "srun -N1", 2, "prefix", "", 5.0, False, HogOptions())
    assert "--sbatch-args" not in again.to_argv()
