"""A thousand hogs on a slow filesystem: what lifts the ceiling of one queue file (README).

Hogs say they are alive in a beat file of their own (hog/store/beats.py) when no write says it,
so that their writes can be paced further apart than their lease; a reaper judges a hog past its
row's lease by that file. `doctor` times write transactions that reach the disk, and the
simulator can model the slow filesystem inside its processes (scripts/latency_vfs.py).
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import apsw
from helpers import cli, cli_json, start_hog, states_of, wait_until
from test_slowfs import FSYNC_MS, slow_folder  # noqa: F401 (a fixture)

from hog.pilot.healing import heal
from hog.store import beats, claims, reaping
from hog.store.counts import count_tasks
from hog.store.db import Database, open_database
from hog.store.packing import Resources
from hog.store.paths import QueueFiles

SIMULATE = Path(__file__).resolve().parents[1] / "scripts" / "simulate.py"


def row_of(db: Path, hog_id: int) -> tuple[str, float, float]:
    """(state, heartbeat_at, lease_s) read straight from the file, without the queue's lock."""
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    connection.set_busy_timeout(10_000)  # a hog may be committing
    try:
        return connection.execute(
            "SELECT state, heartbeat_at, lease_s FROM hogs WHERE id = ?", (hog_id,)
        ).fetchall()[0]
    finally:
        connection.close()


def running_hog(db: Path) -> tuple[int, int]:
    """A real hog (heartbeat 1 s: lease 5 s) running one long task: (hog id, its pid)."""
    assert cli(db, "submit", "sleep 120").returncode == 0
    hog = start_hog(db, "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "60s")
    wait_until(lambda: states_of(db) == {1: "running"}, message="the task to run")
    ((hog_id,),) = [(row["id"],) for row in cli_json(db, "show", "-H")]
    return hog_id, hog.pid


def test_a_hog_waiting_in_line_past_its_lease_beats_its_file_and_is_not_lost(db: Path) -> None:
    hog_id, pid = running_hog(db)
    files = QueueFiles(str(db))
    lock_fd = os.open(files.lock, os.O_RDWR)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # another process holds the queue's lock a long time
        wait_until(
            lambda: (row := row_of(db, hog_id))[1] + row[2] < time.time(),
            timeout=30,
            message="the hog's row to pass its lease",
        )
        beat = beats.last_beat(files, hog_id)
        assert beat is not None and beat > time.time() - row_of(db, hog_id)[2]
        database = open_database(str(db))
        try:
            assert reaping.hogs_to_reap(database, time.time()) == []
        finally:
            database.close()
        # `status` still counts the hog that serves the default pool.
        assert [pool["hogs"] for pool in cli_json(db, "status")["pools"]] == [1]
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)
    # Its write goes through: it runs on.
    wait_until(lambda: row_of(db, hog_id)[1] + 5 > time.time(), message="the hog's next write")
    database = open_database(str(db))
    try:
        assert heal(database, host="elsewhere") == []
    finally:
        database.close()
    assert states_of(db) == {1: "running"}
    os.kill(pid, signal.SIGTERM)


def test_a_frozen_hog_is_lost_once_its_beat_file_is_past_its_lease_and_writes_nothing_after(db: Path) -> None:
    hog_id, pid = running_hog(db)
    files = QueueFiles(str(db))
    lock_fd = os.open(files.lock, os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    wait_until(lambda: beats.last_beat(files, hog_id), timeout=30, message="a beat in the file")
    os.kill(pid, signal.SIGSTOP)  # frozen while its write waits in line: it beats no more
    wait_until(lambda: _stopped(pid), message="every thread of the hog to stop")
    fcntl.flock(lock_fd, fcntl.LOCK_UN)
    os.close(lock_fd)
    lease_s = row_of(db, hog_id)[2]
    wait_until(
        lambda: beats.last_beat(files, hog_id) + lease_s < time.time(),  # type: ignore[operator]
        timeout=30,
        message="the beat to pass the lease",
    )
    database = open_database(str(db))
    try:
        assert heal(database, host="elsewhere") == [hog_id]
    finally:
        database.close()
    assert row_of(db, hog_id)[0] == "lost"
    assert states_of(db) == {1: "waiting"}
    os.kill(pid, signal.SIGCONT)  # it comes back, finds itself lost and leaves
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), message="the hog to leave")
    (task,) = cli_json(db, "show")
    assert task["state"] == "waiting" and task["attempt"] == 1


def _state(pid: int, thread: int | None = None) -> str:
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _zombie(pid: int) -> bool:
    return _state(pid) == "Z"


def _stopped(pid: int) -> bool:
    """Every thread stopped: the signal reaches them one by one, and a thread that polls for the
    lock could take it between the kill and its own stop."""
    return all(_state(pid, int(thread)) == "T" for thread in os.listdir(f"/proc/{pid}/task"))


def test_a_hog_that_finishes_leaves_no_beat_file(db: Path) -> None:
    assert cli(db, "submit", "sleep 4").returncode == 0
    hog = start_hog(db, "--cores", "1", "--heartbeat", "1s", "--idle-timeout", "1s")
    wait_until(lambda: states_of(db) == {1: "running"}, message="the task to run")
    files = QueueFiles(str(db))
    beat_file = beats.beat_path(files, 1)
    lock_fd = os.open(files.lock, os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    wait_until(lambda: os.path.exists(beat_file), timeout=30, message="the beat file")
    fcntl.flock(lock_fd, fcntl.LOCK_UN)
    os.close(lock_fd)
    assert hog.wait(timeout=60) == 0
    assert states_of(db) == {1: "done"}
    assert not os.path.exists(beat_file)


def test_doctor_times_commits_that_reach_the_disk(slow_folder: Path) -> None:  # noqa: F811
    db = slow_folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0
    result = cli(db, "doctor", "--processes", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("commit latency:")]
    # A write transaction fdatasyncs the journal twice, its folder and the database, each of
    # which the filesystem makes sleep FSYNC_MS: it cannot take less.
    assert float(line.split()[2]) >= 4 * FSYNC_MS


def test_the_simulator_models_the_slow_filesystem_without_a_mount(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    result = subprocess.run(
        [
            sys.executable, str(SIMULATE), "run", "--json", str(out),
            "--hogs", "4", "--cores", "4", "--task-s", "1", "--measure-s", "3", "--warmup-s", "1",
            "--processes", "2", "--fs", "model-nfs", "--fsync-ms", "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert summary["fewest_tasks_per_hog"] > 0 and summary["transactions_per_s"] > 0
    modelled = summary["fs_counts"]
    assert modelled["latency"] == {"metadata_ms": 1.0, "fsync_ms": 2.0, "lock_ms": 1.0}
    # Every write transaction paid its fsyncs and lock calls in the worker processes.
    assert modelled["kinds"]["fsync"] >= 4 and modelled["kinds"]["lock"] >= 11
    # Each write's hold is split by what its thread paid: 4 fsyncs of 2 ms, under the lock.
    assert summary["fs_ops_per_write"]["fsync"] == 4.0, summary["fs_ops_per_write"]
    assert summary["lock_held_fs_sleep_mean_s"] >= 4 * 0.002
    assert summary["lock_held_fs_sleep_mean_s"] < summary["lock_held_mean_s"]


def _new_queues(tmp_path: Path, *names: str) -> list[Path]:
    """An empty queue in a folder of its own for each name."""
    paths = []
    for name in names:
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "queue.sqlite")
        assert cli(paths[-1], "init").returncode == 0
    return paths


def _claiming_hog(db: Database, tasks: int) -> tuple[int, claims.ClaimRequest, list[claims.ClaimedTask]]:
    """A hog of `tasks` cores registered on `db`, which claimed a core's task each: (its id, the
    request it claims with, what it claimed)."""
    hog_id = claims.start_hog(db, claims.HogInfo("node1", os.getpid(), None, tasks, [], 1 << 40, None, 60.0))
    assert hog_id is not None
    request = claims.ClaimRequest(
        free=Resources(tasks, 0, 1 << 40),
        total=Resources(tasks, 0, 1 << 40),
        busy=[],
        seconds_left=None,
        unlimited_allowed=True,
        limit=tasks,
    )
    return hog_id, request, claims.exchange(db, hog_id, "node1", [], request, {}).claimed


def _results_of(held: list[claims.ClaimedTask]) -> list[claims.TaskResult]:
    """Each task of `held` ended well, a second long."""
    now = time.time()
    return [claims.TaskResult(t.task_id, t.attempt, "exited", now - 1, now, exit_code=0) for t in held]


def _write_steps(db_path: Path, done: int) -> int:
    """sqlite's VM steps (in hundreds) of one hog write that records 200 results and claims 200
    tasks, on a queue whose first `done` tasks have ended (the rest, 2,000, wait)."""
    assert cli(db_path, "submit", "--array", f"1-{done + 2000}", "--", "true").returncode == 0
    db = open_database(str(db_path))
    with db.transaction() as connection:
        connection.execute(
            "UPDATE tasks SET state = 'done', attempt = 1, ended_at = id WHERE id <= ?", (done,)
        )
        connection.execute(
            "INSERT INTO attempts(task_id, attempt, host, claimed_at, ended_at, reason, exit_code)"
            " SELECT id, 1, 'old', id, id, 'exited', 0 FROM tasks WHERE id <= ?",
            (done,),
        )
        count_tasks(connection, "waiting", -done)
        count_tasks(connection, "done", done)
    hog_id, request, held = _claiming_hog(db, 200)
    results = _results_of(held)
    steps = [0]

    def count() -> bool:
        steps[0] += 1
        return False  # go on

    db.connection.set_progress_handler(count, 100)
    outcome = claims.exchange(db, hog_id, "node1", results, request, {})
    db.connection.set_progress_handler(None)
    assert outcome.recorded == 200 and len(outcome.claimed) == 200
    db.close()
    return steps[0]


def test_a_hog_write_costs_the_same_whatever_the_queue_has_finished(tmp_path: Path) -> None:
    # A query that walks the ended tasks (as settling the results' children did, through
    # tasks_queue) makes every write slower as the queue's history grows: at a thousand hogs
    # the lock's holder spent milliseconds a write on it.
    fresh, old = _new_queues(tmp_path, "new", "old")
    fresh_steps, old_steps = _write_steps(fresh, 0), _write_steps(old, 40_000)
    assert old_steps < 1.2 * fresh_steps, (fresh_steps, old_steps)


class _CountedSyncs(apsw.VFS):
    """sqlite's own VFS, counting the fsyncs of every file opened through it."""

    def __init__(self) -> None:
        self.syncs = 0
        super().__init__("hog-test-syncs", "unix", makedefault=True)

    def xOpen(self, name: apsw.URIFilename | str | None, flags: list[int]) -> apsw.VFSFile:
        vfs = self

        class File(apsw.VFSFile):
            def xSync(self, flags: int) -> None:
                vfs.syncs += 1
                super().xSync(flags)

        return File("unix", name, flags)


def _write_syncs(db_path: Path, tasks: int) -> int:
    """fsyncs of one hog write that records `tasks` results and claims as many again."""
    assert cli(db_path, "submit", "--array", f"1-{2 * tasks}", "--", "true").returncode == 0
    vfs = _CountedSyncs()
    try:
        db = open_database(str(db_path))
        try:
            hog_id, request, held = _claiming_hog(db, tasks)
            starts = [claims.TaskStart(t.task_id, t.attempt, time.time() - 1) for t in held]
            vfs.syncs = 0
            outcome = claims.exchange(db, hog_id, "node1", _results_of(held), request, {}, starts=starts)
            assert outcome.recorded == tasks and len(outcome.claimed) == tasks
            return vfs.syncs
        finally:
            db.close()
    finally:
        vfs.unregister()


def test_a_large_hog_write_syncs_as_often_as_a_small_one(tmp_path: Path) -> None:
    # Past sqlite's page cache (2 MB) a transaction spills its pages to the file before COMMIT
    # and syncs the journal for each spill: on Lustre (20 ms an fsync) a thousand hogs' writes
    # held the lock a third longer for it.
    small, large = _new_queues(tmp_path, "small", "large")
    small_syncs, large_syncs = _write_syncs(small, 10), _write_syncs(large, 8000)
    assert small_syncs >= 2  # the journal and the file, at least: the VFS saw them
    assert large_syncs == small_syncs, (small_syncs, large_syncs)
