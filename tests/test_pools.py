"""Pools through the CLI and with real hogs and monitors: a task names its pool, a hog and a
monitor serve one, and status, wait and show -H say which pool stands where."""

import signal
import sqlite3
import subprocess
from pathlib import Path

import apsw
import pytest
from helpers import cli, cli_json, holds_for, rows_of, start_hog, task_counts, wait_until
from test_monitor import HOG_OPTIONS, start_monitor

from hog.fleet.monitor import FUTILE_HOGS_LIMIT, Monitor, MonitorConfig
from hog.pilot.options import HogOptions
from hog.store import claims, schema
from hog.store.db import open_database


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def hogs(db: Path) -> list[dict]:
    return cli_json(db, "show", "-H")  # type: ignore[return-value]


def submit(db: Path, *args: str, count: int = 1) -> subprocess.CompletedProcess:
    return ok(cli(db, "submit", *args, "--file", "-", input="true\n" * count))


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["g p", "", "-gpu", ".hidden", "a/b", "gpu'", "x" * 65, "gpü"])
@pytest.mark.parametrize("command", [("submit", "true"), ("hog",), ("monitor", "--once")])
def test_a_pool_name_with_odd_characters_is_refused(db: Path, name: str, command: tuple) -> None:
    before = rows_of(db, "SELECT count(*) FROM tasks")
    result = cli(db, command[0], "--pool", name, *command[1:])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"bad --pool {name!r}: a pool name is up to 64 letters" in result.stderr
    assert rows_of(db, "SELECT count(*) FROM tasks") == before
    assert rows_of(db, "SELECT count(*) FROM hogs") == [(0,)]


def test_the_database_and_the_claim_know_pools(db: Path) -> None:
    assert rows_of(db, "PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
    ok(cli(db, "submit", "--pool", "gpu", "true"))
    ok(cli(db, "submit", "true"))
    assert rows_of(db, "SELECT pool FROM tasks ORDER BY id") == [("gpu",), ("default",)]
    assert rows_of(db, "SELECT pool FROM submissions ORDER BY id") == [("gpu",), ("default",)]
    # A claim reads its pool's waiting tasks in order through their index: no scan past others.
    params = dict.fromkeys(
        ("pool", "cores", "devices", "mem", "seconds_left", "unlimited", "window", "bundle")
    )
    connection = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        plan = " ".join(
            row[-1] for row in connection.execute("EXPLAIN QUERY PLAN " + claims._CANDIDATES, params)
        )
    finally:
        connection.close()
    assert "USING INDEX tasks_pool_waiting" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


# -- hogs serve one pool ----------------------------------------------------------------------


def test_a_hog_claims_only_tasks_of_its_pool(db: Path, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    line = f'echo "$HOG_TASK_ID {{pool}}" >> {ran}\n'
    ok(cli(db, "submit", "--file", "-", input=line.format(pool="default") * 3))
    ok(cli(db, "submit", "--pool", "gpu", "--file", "-", input=line.format(pool="gpu") * 2))
    ok(cli(db, "submit", "--pool", "gpu", "--array", "1-2", f'echo "$HOG_TASK_ID gpu" >> {ran}'))
    hog = start_hog(db, "--pool", "gpu", *HOG_OPTIONS)
    assert hog.wait(timeout=120) == 0
    assert sorted(ran.read_text().split("\n")[:-1]) == ["4 gpu", "5 gpu", "6 gpu", "7 gpu"]
    assert task_counts(db)["waiting"] == 3
    (row,) = hogs(db)
    assert row["pool"] == "gpu"
    hog = start_hog(db, *HOG_OPTIONS)
    assert hog.wait(timeout=120) == 0
    assert task_counts(db)["done"] == 7
    assert [row["pool"] for row in hogs(db)] == ["gpu", "default"]


def test_a_monitor_per_pool_starts_hogs_of_its_pool_only(db: Path, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    ok(cli(db, "submit", "--file", "-", input=f'echo "$HOG_HOG_ID default" >> {ran}\n' * 6))
    ok(cli(db, "submit", "--pool", "big", "--file", "-", input=f'echo "$HOG_HOG_ID big" >> {ran}\n' * 4))
    default = start_monitor(db, "--hogs", "1", "--once", "--cores", "2")
    big = start_monitor(db, "--pool", "big", "--hogs", "2", "--once", "--cores", "1")
    try:
        assert default.wait(timeout=180) == 0
        assert big.wait(timeout=180) == 0
    finally:
        stop(default)
        stop(big)
    assert task_counts(db)["done"] == 10
    pools = {row["id"]: row["pool"] for row in hogs(db)}
    for line in ran.read_text().splitlines():
        hog_id, pool = line.split()
        assert pools[int(hog_id)] == pool, line
    assert [row["cores"] for row in hogs(db) if row["pool"] == "big"] == [1] * pools_count(pools, "big")
    assert 1 <= pools_count(pools, "big") <= 2 and pools_count(pools, "default") == 1


def pools_count(pools: dict[int, str], pool: str) -> int:
    return sum(1 for name in pools.values() if name == pool)


def test_two_monitors_for_one_pool_are_refused_and_other_pools_are_not(db: Path) -> None:
    first = start_monitor(db, "--pool", "gpu", "--hogs", "1")
    other = start_monitor(db, "--hogs", "1")
    try:
        wait_until(lambda: cli(db, "monitor", "--pool", "gpu", "--status").returncode == 0, message="gpu up")
        wait_until(lambda: cli(db, "monitor", "--status").returncode == 0, message="default up")
        second = cli(db, "monitor", "--pool", "gpu", "--hogs", "1", "--poll", "0.5s")
        assert second.returncode == 1
        assert "Traceback" not in second.stderr
        assert f"a monitor already serves pool gpu of {db}: pid {first.pid} on" in second.stderr
        assert "stop it with `slurm-hog monitor --pool gpu --stop`" in second.stderr
        assert other.poll() is None and first.poll() is None
    finally:
        stop(first)
        stop(other)


def test_daemon_status_and_stop_act_on_the_monitor_of_one_pool(db: Path) -> None:
    started = ok(cli(db, "monitor", "--pool", "gpu", "--daemon", "--hogs", "1", "--poll", "0.5s"))
    assert f"{db}.monitor-gpu.pid" in started.stdout
    try:
        assert Path(f"{db}.monitor-gpu.pid").exists() and Path(f"{db}.monitor-gpu.log").exists()
        status = cli(db, "monitor", "--pool", "gpu", "--status")
        assert status.returncode == 0 and f"a monitor serves pool gpu of {db}: pid" in status.stdout
        default = cli(db, "monitor", "--status")
        assert default.returncode == 1 and default.stdout.strip() == f"no monitor serves {db}"
        assert ok(cli(db, "monitor", "--stop")).stdout.strip() == f"no monitor serves {db}: nothing to stop"
    finally:
        stopped = ok(cli(db, "monitor", "--pool", "gpu", "--stop"))
    assert "stopped" in stopped.stdout
    assert cli(db, "monitor", "--pool", "gpu", "--status").returncode == 1
    assert not Path(f"{db}.monitor-gpu.pid").exists()


# -- what status, wait and show -H say ---------------------------------------------------------


def unserved(pool: str, count: int) -> str:
    tasks = "1 waiting task" if count == 1 else f"{count} waiting tasks"
    return f"{tasks} of pool {pool}: no hog of pool {pool} runs and no monitor serves it"


def test_status_shows_pools_and_names_a_pool_nothing_serves(db: Path) -> None:
    submit(db, count=2)
    warned = ok(cli(db, "submit", "--pool", "gpu", "true"))
    assert "submit: no hog of pool gpu runs and no monitor serves it" in warned.stderr
    assert "slurm-hog monitor --pool gpu --daemon" in warned.stderr
    monitor = start_monitor(db, "--hogs", "1", "--command-prefix", "sleep 600")  # hogs never start
    try:
        wait_until(lambda: cli(db, "monitor", "--status").returncode == 0, message="monitor up")
        status = cli_json(db, "status")
        assert status["unserved_pools"] == {"gpu": 1}
        by_pool = {row["pool"]: row for row in status["pools"]}
        assert by_pool["default"]["waiting"] == 2 and by_pool["default"]["monitor"] is True
        assert by_pool["gpu"] == {"pool": "gpu", "waiting": 1, "running": 0, "hogs": 0, "monitor": False}
        text = ok(cli(db, "status")).stdout
        assert "pool       waiting    running    hogs  monitor" in text
        assert unserved("gpu", 1) in text
        assert "pool default" not in text
        # Submitting to a pool a monitor serves says nothing.
        assert ok(cli(db, "submit", "true")).stderr == ""
    finally:
        stop(monitor)


def test_waiting_tasks_that_fit_no_hog_of_their_pool_are_named(db: Path) -> None:
    """A 1-GPU task of the default pool fits none of its pool's hogs, whatever the GPU pool has."""
    ok(cli(db, "submit", "--pool", "gpu", "-g", "1", "true"))
    hog = start_hog(db, "--pool", "gpu", "--gpus", "2", *HOG_OPTIONS)
    assert hog.wait(timeout=120) == 0
    assert cli_json(db, "status")["waiting_fit_no_hog"] == 0
    ok(cli(db, "submit", "-g", "1", "true"))
    ok(cli(db, "submit", "--pool", "gpu", "-g", "1", "true"))
    ok(cli(db, "submit", "--pool", "cpu", "-g", "1", "true"))  # no hog of its pool seen: not named
    hog = start_hog(db, "--gpus", "0", "--cores", "1", "--mem", "1G", *HOG_OPTIONS)
    assert hog.wait(timeout=120) == 0
    status = cli_json(db, "status")
    assert status["waiting_fit_no_hog"] == 1
    assert status["unserved_pools"] == {"cpu": 1, "default": 1, "gpu": 1}
    text = ok(cli(db, "status")).stdout
    assert (
        "1 waiting task fits none of the hogs seen (at most 1 core, 0 GPUs, 1.0 GiB): task 2 asks for "
        "1 core, 1 GPU; it waits until a larger hog starts"
    ) in text


def test_wait_says_once_which_pool_nothing_serves(db: Path) -> None:
    submit(db, count=2)
    ok(cli(db, "submit", "--pool", "gpu", "--file", "-", input="true\ntrue\n"))
    hog = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "30s")  # a default hog, alive
    try:
        wait_until(lambda: task_counts(db)["done"] == 2, message="the default tasks done")
        result = cli(db, "wait", "--max-wait", "2s", "--poll", "0.1s")
        assert result.returncode == 3
        assert result.stderr.count(f"wait: {unserved('gpu', 2)}") == 1, result.stderr
        assert "no hog runs and no monitor serves" not in result.stderr
        # Only the pools of the tasks waited for are named.
        assert "pool gpu" not in cli(db, "wait", "--max-wait", "1s", "1", "2").stderr
    finally:
        stop(hog)


def test_a_hog_started_by_hand_beside_a_monitor_of_its_pool_is_allowed_and_said(db: Path) -> None:
    monitor = start_monitor(db, "--pool", "gpu", "--hogs", "1")
    hog = start_hog(db, "--pool", "gpu", "--heartbeat", "1s", "--idle-timeout", "60s")
    other = start_hog(db, "--heartbeat", "1s", "--idle-timeout", "60s")
    try:
        wait_until(lambda: cli(db, "monitor", "--pool", "gpu", "--status").returncode == 0, message="up")
        wait_until(lambda: len([r for r in hogs(db) if r["state"] == "running"]) == 2, message="hogs up")
        rows = {row["pool"]: row for row in hogs(db)}
        text = ok(cli(db, "show", "-H")).stdout
        assert (
            f"hog {rows['gpu']['id']} of pool gpu was started by hand while a monitor serves pool gpu: "
            "both run its tasks, and the monitor counts it against its --hogs"
        ) in text
        assert f"hog {rows['default']['id']} " not in text
        # It runs the pool's tasks, and the monitor (--hogs 1) starts none beside it.
        ok(cli(db, "submit", "--pool", "gpu", "true"))
        wait_until(lambda: task_counts(db)["done"] == 1, message="the gpu task done")
        assert holds_for(lambda: len(hogs(db)) == 2, 1.5)
    finally:
        stop(monitor)
        stop(hog)
        stop(other)


# -- --gather ---------------------------------------------------------------------------------


def test_gather_holds_back_a_trickle_and_starts_at_a_hog_full(db: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    gate = f"sh -c 'while [ ! -e {go} ]; do sleep 0.05; done; exec \"$@\"' {go}"
    monitor = start_monitor(db, "--hogs", "4", "--cores", "4", "--gather", "10m", "--command-prefix", gate)
    try:
        wait_until(lambda: cli(db, "monitor", "--status").returncode == 0, message="monitor up")
        submit(db, count=1)
        submit(db, count=1)
        assert holds_for(lambda: not hogs(db), 2.0), "a hog for a trickle of 2 tasks"
        submit(db, count=2)  # 4 one-core tasks: a hog-full
        wait_until(lambda: len(hogs(db)) == 1, message="a hog for a hog-full")
        submit(db, count=1)  # a trickle again: no second hog yet
        assert holds_for(lambda: len(hogs(db)) == 1, 2.0), "a second hog for one task"
        go.touch()
        wait_until(lambda: task_counts(db)["done"] == 5, message="all done")
    finally:
        go.touch()
        stop(monitor)


def test_gather_starts_a_hog_for_fewer_when_its_time_is_up(db: Path) -> None:
    submit(db, count=1)
    monitor = start_monitor(db, "--hogs", "2", "--cores", "4", "--gather", "1s", "--once")
    assert monitor.wait(timeout=120) == 0
    assert task_counts(db)["done"] == 1
    assert len(hogs(db)) == 1


def test_a_monitor_of_a_pool_is_sized_by_its_own_pool(db: Path, tmp_path: Path) -> None:
    """GPU tasks of one pool ask for hogs by the GPUs they need; a queue of CPU tasks of another
    pool changes nothing."""
    go = tmp_path / "go"
    gate = f"sh -c 'while [ ! -e {go} ]; do sleep 0.05; done; exec \"$@\"' {go}"
    submit(db, count=40)
    submit(db, "--pool", "gpu", "-g", "1", count=5)
    monitor = start_monitor(
        db, "--pool", "gpu", "--hogs", "8", "--once", "--cores", "8", "--gpus", "2", "--command-prefix", gate
    )
    try:
        wait_until(lambda: len(hogs(db)) >= 3, message="3 GPU hogs asked for")
        assert holds_for(lambda: len(hogs(db)) == 3, 1.5), "hogs beyond the GPUs the tasks need"
        assert {row["pool"] for row in hogs(db)} == {"gpu"}
    finally:
        go.touch()
        assert monitor.wait(timeout=120) == 0
    counts = {state: count for state, count in task_counts(db).items() if count}
    assert counts == {"done": 5, "waiting": 40}


def test_a_queue_from_before_pools_puts_its_tasks_and_hogs_in_the_default_pool(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    before = schema.MIGRATIONS.index(schema.SCHEMA_POOLS)
    for migration in schema.MIGRATIONS[:before]:
        old.executescript(migration)
    old.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    old.execute(f"PRAGMA user_version = {before}")
    old.execute("INSERT INTO environments(id, variables) VALUES (1, '')")
    old.execute(
        "INSERT INTO submissions(id, submitted_at, cwd, environment_id, cores, gpus, max_retries)"
        " VALUES (1, 0, '/', 1, 1, 0, 0)"
    )
    old.execute("INSERT INTO tasks(id, submission_id, command) VALUES (1, 1, 'true')")
    old.execute("UPDATE state_counts SET tasks = 1 WHERE state = 'waiting'")
    old.execute("INSERT INTO hogs(state, backend, created_at, lease_s) VALUES ('finished', 'manual', 0, 5)")
    old.commit()
    old.close()
    (tmp_path / "old.sqlite.lock").touch(mode=0o600)
    path.chmod(0o600)
    assert ok(cli(path, "submit", "--pool", "gpu", "true")).stdout.strip() == "2"
    assert rows_of(path, "PRAGMA user_version") == [(schema.SCHEMA_VERSION,)]
    assert rows_of(path, "SELECT id, pool FROM tasks ORDER BY id") == [(1, "default"), (2, "gpu")]
    assert [row["pool"] for row in hogs(path)] == ["default"]
    hog = start_hog(path, *HOG_OPTIONS)
    assert hog.wait(timeout=120) == 0
    assert rows_of(path, "SELECT id, state FROM tasks ORDER BY id") == [(1, "done"), (2, "waiting")]


def test_hogs_of_another_pool_that_leave_idle_do_not_make_a_monitor_give_up(db: Path) -> None:
    """Three GPU hogs that found nothing to run say nothing about the default pool's tasks."""
    config = MonitorConfig.from_options(str(db), 30, "true", 2, "prefix", "", 1.0, True, HogOptions(cores=1))
    monitor = Monitor(config, open_database(str(db)))
    try:
        monitor.last_pass_at = 0.0
        for _ in range(FUTILE_HOGS_LIMIT):
            info = claims.HogInfo("node", 1, None, 1, [], 1 << 30, None, 5.0, pool="gpu")
            hog_id = claims.start_hog(monitor.db, info)
            assert hog_id is not None
            claims.set_hog_state(monitor.db, hog_id, "finished", "idle")
        ok(cli(db, "submit", "true"))
        monitor.one_pass()  # a monitor that took them for its own would give up here
        assert [(row["pool"], row["backend"]) for row in hogs(db)][-1] == ("default", "prefix")
    finally:
        monitor.db.close()


def test_a_workflow_file_names_pools_and_export_keeps_them(db: Path, tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(
        '{"tasks": [{"name": "prep", "command": "true"},'
        ' {"name": "train", "command": "true", "pool": "gpu", "after": ["prep"]}]}'
    )
    ok(cli(db, "submit", "--workflow", str(flow), "--bundle", "flow"))
    assert rows_of(db, "SELECT pool FROM tasks ORDER BY id") == [("default",), ("gpu",)]
    exported = ok(cli(db, "export", "--bundle", "flow")).stdout
    copy = tmp_path / "copy.json"
    copy.write_text(exported)
    ok(cli(db, "submit", "--workflow", str(copy)))
    assert rows_of(db, "SELECT pool FROM tasks ORDER BY id")[2:] == [("default",), ("gpu",)]
    flow.write_text('{"tasks": [{"name": "x", "command": "true", "pool": "g p"}]}')
    before = rows_of(db, "SELECT count(*) FROM tasks")
    result = cli(db, "submit", "--workflow", str(flow))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert '"pool"' in result.stderr and "a pool name is up to 64 letters" in result.stderr
    assert rows_of(db, "SELECT count(*) FROM tasks") == before


def test_show_lists_the_tasks_and_hogs_of_one_pool(db: Path) -> None:
    ok(cli(db, "submit", "true"))
    ok(cli(db, "submit", "--pool", "gpu", "true"))
    hog = start_hog(db, "--pool", "gpu", *HOG_OPTIONS)
    assert hog.wait(timeout=120) == 0
    assert [(task["id"], task["pool"]) for task in cli_json(db, "show", "--pool", "gpu")] == [(2, "gpu")]
    assert [task["pool"] for task in cli_json(db, "show")] == ["default", "gpu"]
    assert [row["pool"] for row in cli_json(db, "show", "-H", "--pool", "gpu")] == ["gpu"]
    assert cli_json(db, "show", "-H", "--pool", "default") == []
    bad = cli(db, "show", "--pool", "a b")
    assert bad.returncode == 2 and "bad --pool 'a b'" in bad.stderr


# -- kinds and tune ---------------------------------------------------------------------------


def test_a_kind_names_a_pool_and_submit_warns_when_nothing_serves_it(db: Path) -> None:
    ok(cli(db, "kind", "set", "train", "--pool", "gpu", "--gpus", "0.5"))
    warned = ok(cli(db, "submit", "--kind", "train", "true"))
    assert "submit: no hog of pool gpu runs and no monitor serves it" in warned.stderr
    ok(cli(db, "submit", "--kind", "train", "--pool", "default", "true"))  # the command line wins
    assert rows_of(db, "SELECT pool FROM tasks ORDER BY id") == [("gpu",), ("default",)]
    bad = cli(db, "kind", "set", "odd", "--pool", "a b")
    assert bad.returncode == 2 and "bad --pool 'a b'" in bad.stderr
    assert "odd" not in ok(cli(db, "kind", "list")).stdout


def test_tune_runs_a_sample_of_another_pool_on_its_own_hog(db: Path) -> None:
    ok(cli(db, "submit", "--pool", "big", "--name", "prep", "--file", "-", input="true\n" * 4))
    result = ok(cli(db, "tune", "--name", "prep", "--cores-per-task", "1,2", "--sample", "2", "--cores", "2"))
    assert "best:" in result.stdout, result.stdout
    assert task_counts(db)["done"] == 4
    assert {row["pool"] for row in hogs(db)} == {"default"}  # tune's hogs, which ran the sample


def test_monitor_stop_drain_drains_the_hogs_of_its_own_pool_only(db: Path) -> None:
    ok(cli(db, "submit", "sleep 1"))
    ok(cli(db, "monitor", "--daemon", "--hogs", "1", "--cores", "1", "--heartbeat", "1s", "--poll", "0.5s"))
    try:
        wait_until(lambda: [h for h in hogs(db) if h["state"] == "running"], message="the default pool's hog")
        ok(cli(db, "monitor", "--pool", "gpu", "--stop", "--drain"))
        assert holds_for(lambda: [h["state"] for h in hogs(db)] == ["running"], 1.0), (
            "another pool's hog drained"
        )
    finally:
        ok(cli(db, "monitor", "--stop", "--drain"))
    wait_until(lambda: [h["end_reason"] for h in hogs(db)] == ["drained by hogs stop"], timeout=30)
