"""The queue on a slow shared filesystem (scripts/slowfs.py, a FUSE passthrough with latency).

Mounting needs root, /dev/fuse, and Debian's fuse3 and libfuse3-dev to build the server
(scripts/install.sh brings them as root): skipped with the reason elsewhere, a failure in CI.
Nothing here asserts on timings beyond the latency the filesystem itself sleeps.
"""

import fcntl
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import apsw
import pytest
from helpers import cli, cli_json, heal_from_elsewhere, start_hog, wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "slowfs.py"
FSYNC_MS = 5.0


def load_slowfs():
    """scripts/slowfs.py as a module (scripts/ is not a package)."""
    if "hog_slowfs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hog_slowfs", SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["hog_slowfs"] = module
        spec.loader.exec_module(module)
    return sys.modules["hog_slowfs"]


def slowfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def slow_folder(tmp_path: Path):
    """A folder on the slow filesystem (NFS preset: 1 ms metadata and locks, 5 ms fsync)."""
    problem = load_slowfs().available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the slow filesystem cannot mount: {problem} (CI needs it)")
        pytest.skip(f"the slow filesystem cannot mount: {problem}")
    backing, mountpoint = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mountpoint.mkdir()
    mounted = slowfs("mount", str(backing), str(mountpoint), "--preset", "nfs", "--fsync-ms", str(FSYNC_MS))
    assert mounted.returncode == 0, mounted.stderr
    try:
        yield mountpoint
    finally:
        slowfs("unmount", str(mountpoint))


def stats(mountpoint: Path) -> dict:
    return load_slowfs().read_stats(str(mountpoint))


def counts(db: Path) -> dict[str, int]:
    return {state: n for state, n in cli_json(db, "status")["tasks"].items() if n}


def successes(db: Path) -> list[tuple[int, int]]:
    connection = apsw.Connection(str(db))
    try:
        return connection.execute(
            "SELECT task_id, count(*) FROM attempts WHERE reason = 'exited' AND exit_code = 0 "
            "GROUP BY task_id"
        ).fetchall()
    finally:
        connection.close()


def test_mounts_passes_files_through_counts_and_unmounts(slow_folder: Path) -> None:
    (slow_folder / "note.txt").write_text("through")
    assert (slow_folder.parent / "backing" / "note.txt").read_text() == "through"
    with open(slow_folder / "note.txt", "r+") as note:
        os.fsync(note.fileno())
    counts = wait_until(lambda: stats(slow_folder)["counts"].get("fsync_file"), message="counted fsync")
    assert counts >= 1
    assert stats(slow_folder)["counts"]["create"] >= 1
    server = [line for line in Path(f"{slow_folder}.slowfs-stats.log").read_text().splitlines() if line]
    assert not any("Traceback" in line for line in server)
    assert slowfs("unmount", str(slow_folder)).returncode == 0
    assert not os.path.ismount(slow_folder)
    assert not (slow_folder / "note.txt").exists(), "the files stay in the backing folder only"
    again = slowfs("unmount", str(slow_folder))
    assert again.returncode == 1 and "not mounted" in again.stderr


def test_mount_refuses_a_missing_folder(tmp_path: Path) -> None:
    result = slowfs("mount", str(tmp_path / "nowhere"), str(tmp_path))
    assert result.returncode == 2 and "not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_latencies_and_a_mount_never_made_get_a_clear_error(tmp_path: Path) -> None:
    for latency in ("-3", "inf", "nan"):
        result = slowfs("mount", str(tmp_path), str(tmp_path), "--fsync-ms", latency)
        assert result.returncode == 2 and "--fsync-ms" in result.stderr and "milliseconds" in result.stderr
    result = slowfs("stats", str(tmp_path / "never"))
    assert result.returncode == 1 and "no counts" in result.stderr
    assert not os.path.ismount(tmp_path)


def test_a_wait_for_the_lock_on_the_mount_ends_at_the_timeout(slow_folder: Path) -> None:
    # The queue bounds its waits for the lock with an alarm: on the mount too (its waits are
    # interruptible), a user sees the same clean refusal as on a local disk, not a hang.
    db = slow_folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0
    with open(f"{db}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = cli(db, "--timeout", "1", "submit", "echo blocked", timeout=60)
    assert refused.returncode != 0 and "--timeout" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert cli_json(db, "status")["tasks"].get("waiting", 0) == 0


def test_locks_follow_a_file_renamed_while_locked(slow_folder: Path) -> None:
    first = slow_folder / "first"
    first.write_text("x")
    with open(first, "r+") as holder:
        fcntl.lockf(holder, fcntl.LOCK_EX)
        first.rename(slow_folder / "second")
        script = (
            "import fcntl, sys\n"
            "f = open(sys.argv[1], 'r+')\n"
            "try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n"
        )
        other = [sys.executable, "-c", script, str(slow_folder / "second")]
        assert subprocess.run(other, timeout=30).returncode == 3, "another process got the lock"
        fcntl.lockf(holder, fcntl.LOCK_UN)
        assert subprocess.run(other, timeout=30).returncode == 0, "the unlock did not reach the file"


def test_a_mount_whose_server_died_still_unmounts(slow_folder: Path) -> None:
    os.kill(stats(slow_folder)["pid"], signal.SIGKILL)
    wait_until(lambda: load_slowfs().server_pid(str(slow_folder)) is None, message="server gone")
    result = slowfs("unmount", str(slow_folder))
    assert result.returncode == 0, result.stderr
    assert str(slow_folder) not in Path("/proc/self/mounts").read_text()


def test_doctor_sees_working_locks_and_a_longer_commit(slow_folder: Path) -> None:
    db = slow_folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0
    result = cli(db, "doctor", "--processes", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "locking works here" in result.stdout
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("commit latency:")]
    median_ms = float(line.split()[2])
    # A commit fsyncs at least the journal and the database: never less than two fsyncs.
    assert median_ms >= 2 * FSYNC_MS
    assert "transactions/s" in line and "tasks/s" in line
    assert stats(slow_folder)["counts"]["flock"] > 0 and stats(slow_folder)["counts"]["fcntl"] > 0


def test_a_small_real_run_on_the_slow_filesystem(slow_folder: Path) -> None:
    db = slow_folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0
    lines = "".join(f"echo {n}\n" for n in range(40))
    assert cli(db, "submit", "--file", "-", input=lines).returncode == 0
    hog = start_hog(db, "--cores", "2", "--idle-timeout", "1s", log_path=slow_folder.parent / "hog.log")
    assert hog.wait(timeout=180) == 0, (slow_folder.parent / "hog.log").read_text()
    assert counts(db) == {"done": 40}
    assert sorted(n for _, n in successes(db)) == [1] * 40
    assert cli(db, "log", "7").stdout == "6\n", "output files are written through"
    # On a shared filesystem the tasks that run at once make their files in different folders.
    folder = Path(f"{db}.logs") / "tasks" / "000000"
    assert sorted(path.name for path in folder.iterdir()) == [str(k) for k in range(8)]
    assert (folder / "7" / "7.1.out").read_text() == "6\n"
    assert cli(db, "cleanup").stdout.strip() == "deleted 40 tasks, 80 files, 110 B"
    assert not any(folder.glob("*/*"))


def test_a_hog_killed_9_on_the_slow_filesystem_loses_nothing_runs_nothing_twice(
    slow_folder: Path,
) -> None:
    db = slow_folder / "queue.sqlite"
    assert cli(db, "init").returncode == 0
    assert cli(db, "submit", "--file", "-", input="sleep 0.02\n" * 150).returncode == 0
    hog = start_hog(db, "--cores", "2", "--heartbeat", "1s", log_path=slow_folder.parent / "hog1.log")
    wait_until(lambda: cli_json(db, "status")["tasks"].get("done", 0) >= 10, timeout=120, message="some done")
    hog.kill()
    hog.wait()
    heal_from_elsewhere(db)
    assert "running" not in counts(db), "a task stayed with the dead hog"
    survivor = start_hog(db, "--cores", "2", "--idle-timeout", "1s", log_path=slow_folder.parent / "hog2.log")
    assert survivor.wait(timeout=300) == 0, (slow_folder.parent / "hog2.log").read_text()
    assert counts(db) == {"done": 150}
    done = successes(db)
    assert len(done) == 150 and {n for _, n in done} == {1}, "a result was recorded twice"
    connection = apsw.Connection(str(db))
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        connection.close()
