"""The store's own rules: the files beside a queue, records read by field name, hog transitions
guarded by their table, and SQL that takes its state words from states.py."""

import ast
import os
import re
import stat
import time
from pathlib import Path

import pytest

from hog.gpushare import GPU_UNITS
from hog.store import claims, hoglist, queue, reaping, states, submitting
from hog.store import db as hogdb
from hog.store.packing import Resources
from hog.store.paths import OWNER_AND_GROUP, OWNER_ONLY, QueueFiles, make_private_dirs

STORE = Path(__file__).resolve().parent.parent / "hog" / "store"
BIG_MEM = 1 << 40


def new_db(tmp_path: Path) -> hogdb.Database:
    path = str(tmp_path / "queue.sqlite")
    hogdb.create_database(path)
    return hogdb.open_database(path, 30)


def hog_info(host: str = "node1") -> claims.HogInfo:
    return claims.HogInfo(host, os.getpid(), "4242", 8, ["0", "1"], BIG_MEM, None, 30.0)


def hog_state(db: hogdb.Database, hog_id: int) -> str:
    return db.query_one("SELECT state FROM hogs WHERE id = ?", (hog_id,))[0]


def claim_all(db: hogdb.Database, hog_id: int, now: float | None = None) -> list[claims.ClaimedTask]:
    size = Resources(64, 2 * GPU_UNITS, BIG_MEM)
    request = claims.ClaimRequest(size, size, [], None, True, 10)
    return claims.exchange(db, hog_id, "node1", [], request, {}, now=now).claimed


# -- the files beside the queue --------------------------------------------------------------


def test_the_files_beside_a_queue_keep_their_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = QueueFiles("q.sqlite")
    logs = f"{tmp_path}/q.sqlite.logs"
    # The lock and the monitor's files keep the path as given; the logs are absolute.
    assert files.lock == "q.sqlite.lock"
    assert (files.monitor_pid, files.monitor_log, files.monitor_lock) == (
        "q.sqlite.monitor.pid",
        "q.sqlite.monitor.log",
        "q.sqlite.monitor.lock",
    )
    assert files.logs == logs
    assert files.task_output(7, 1, "out") == f"{logs}/tasks/000000/7.1.out"
    assert files.task_output(1234, 3, "err") == f"{logs}/tasks/000001/1234.3.err"
    assert files.hog_log(12) == f"{logs}/hogs/hog-12.log"
    assert files.hog_pids(12) == f"{logs}/hogs/hog-12.pids"


def test_init_makes_the_folders_hogs_and_monitors_write_to(tmp_path):
    old_umask = os.umask(0o022)
    try:
        db = new_db(tmp_path)
    finally:
        os.umask(old_umask)
    assert db.lock_path == db.files.lock == db.path + ".lock"
    for folder in (db.files.logs, db.files.tasks, db.files.hogs):
        assert stat.S_IMODE(os.stat(folder).st_mode) == OWNER_ONLY.folder
    assert db.files.private_modes() == OWNER_ONLY
    os.chmod(db.path, 0o660)  # shared with its group: so are the logs
    assert db.files.private_modes() == OWNER_AND_GROUP
    db.close()


def test_private_folders_get_their_mode_at_every_level(tmp_path):
    old_umask = os.umask(0o077)
    try:
        make_private_dirs(str(tmp_path / "a" / "b" / "c"), 0o770)
    finally:
        os.umask(old_umask)
    for folder in ("a", "a/b", "a/b/c"):
        assert stat.S_IMODE((tmp_path / folder).stat().st_mode) == 0o770


# -- records, read by field name --------------------------------------------------------------


def test_each_query_fills_its_record_field_by_field(tmp_path):
    db = new_db(tmp_path)
    # Every field a distinct value, so that two columns swapped would show.
    options = submitting.SubmitOptions(
        cores=3,
        gpus=2 * GPU_UNITS,
        mem_bytes=5 << 20,
        time_limit_s=600.0,
        priority=9,
        max_retries=4,
        name="named",
        stdout_pattern="o-{id}",
        stderr_pattern="e-{id}",
        cwd=str(tmp_path),
        environment={"ONLY": "this"},
    )
    submitting.submit(db, [("printf '%s' x", '["printf", "%s", "x"]')], options, now=1000.0)
    hog_id = claims.start_hog(db, hog_info(), now=1001.0)
    (task,) = claim_all(db, hog_id, now=1001.0)
    assert task._asdict() == {
        "task_id": 1,
        "attempt": 1,
        "command": "printf '%s' x",
        "cores": 3,
        "gpus": 2 * GPU_UNITS,
        "mem_bytes": 5 << 20,
        "time_limit_s": 600.0,
        "max_retries": 4,
        "cwd": str(tmp_path),
        "stdout_pattern": "o-{id}",
        "stderr_pattern": "e-{id}",
        "name": "named",
        "argv": ["printf", "%s", "x"],
        "environment": {"ONLY": "this"},
        "array_index": None,
        "entry": None,
    }
    (hog,) = hoglist.iter_hogs(db)
    assert (hog.id, hog.state, hog.host, hog.backend, hog.slurm_job_id, hog.gpus) == (
        hog_id,
        states.HOG_RUNNING,
        "node1",
        "manual",
        "4242",
        "0,1",
    )
    assert (hog.cores, hog.running, hog.tasks_run, hog.started_at) == (8, 1, 0, 1001.0)
    queue.cancel(db, [1])
    (detail,) = queue.get_tasks(db, [1])
    assert detail.cancel_requested is True and detail.argv == ["printf", "%s", "x"]
    assert (detail.state, detail.submitted_at, detail.cwd, detail.max_retries) == (
        states.RUNNING,
        1000.0,
        str(tmp_path),
        4,
    )
    result = claims.TaskResult(1, 1, states.REASON_CANCELLED, 1002.0, 1003.5, None, 15, cores="0,1,2")
    claims.exchange(db, hog_id, "node1", [result], None, {}, now=1004.0)
    (row,) = queue.iter_tasks(db)
    assert row._asdict() == {
        "id": 1,
        "state": states.CANCELLED,
        "name": "named",
        "cores": 3,
        "gpus": 2 * GPU_UNITS,
        "priority": 9,
        "attempt": 1,
        "exit_code": None,
        "signal": 15,
        "host": "node1",
        "started_at": 1002.0,
        "ended_at": 1003.5,
        "command": "printf '%s' x",
        "pool": "default",
    }
    (attempt,) = queue.get_tasks(db, [1])[0].attempts
    assert (attempt.task_id, attempt.attempt, attempt.hog_id, attempt.claimed_at) == (1, 1, hog_id, 1001.0)
    assert (attempt.reason, attempt.signal, attempt.cores, attempt.ended_at) == (
        states.REASON_CANCELLED,
        15,
        "0,1,2",
        1003.5,
    )
    (hog,) = hoglist.iter_hogs(db)
    assert (hog.running, hog.tasks_run, hog.heartbeat_at) == (0, 1, 1004.0)
    db.close()


# -- hog transitions --------------------------------------------------------------------------


def test_an_ended_hog_never_moves_again(tmp_path):
    db = new_db(tmp_path)
    hog_id = claims.start_hog(db, hog_info())
    claims.exchange(db, hog_id, "node1", [], None, {}, finish_reason="idle")
    assert hog_state(db, hog_id) == states.HOG_FINISHED
    assert claims.set_hog_state(db, hog_id, states.HOG_CANCELLED, "too late") is False
    assert reaping.reap_lost_hogs(db, now=time.time() + 10_000, also_lost=[hog_id]) == []
    assert claims.start_hog(db, hog_info(), hog_id) is None
    assert claims.exchange(db, hog_id, "node1", [], None, {}).given_up
    assert db.query_one("SELECT state, end_reason FROM hogs WHERE id = ?", (hog_id,)) == (
        states.HOG_FINISHED,
        "idle",
    )
    db.close()


def test_hog_moves_are_the_ones_the_transition_table_allows(tmp_path, monkeypatch):
    db = new_db(tmp_path)
    first = claims.create_pending_hog(db, "prefix", "login1", 30.0)
    second = claims.create_pending_hog(db, "prefix", "login1", 30.0)
    assert claims.set_hog_state(db, first, states.HOG_CANCELLED, "could not start")
    # With a table that lets a pending hog only start, the same move changes nothing.
    monkeypatch.setitem(states.HOG_TRANSITIONS, states.HOG_PENDING, frozenset({states.HOG_RUNNING}))
    assert claims.set_hog_state(db, second, states.HOG_CANCELLED, "could not start") is False
    assert reaping.reap_lost_hogs(db, also_lost=[second]) == []
    assert hog_state(db, second) == states.HOG_PENDING
    assert claims.start_hog(db, hog_info(), second) == second
    db.close()


def test_a_hog_move_no_state_may_make_is_refused_and_rolled_back(tmp_path, monkeypatch):
    db = new_db(tmp_path)
    submitting.submit(db, [("true", None)], submitting.SubmitOptions(cwd=str(tmp_path)))
    hog_id = claims.start_hog(db, hog_info())
    claim_all(db, hog_id)
    with pytest.raises(RuntimeError, match="ended in one of"):
        claims.set_hog_state(db, hog_id, states.HOG_PENDING, "back to the start")
    monkeypatch.setattr(
        states,
        "HOG_TRANSITIONS",
        {old: targets - {states.HOG_LOST} for old, targets in states.HOG_TRANSITIONS.items()},
    )
    with pytest.raises(RuntimeError, match="no hog may move to lost"):
        claims.set_hog_state(db, hog_id, states.HOG_LOST, "test")
    assert hog_state(db, hog_id) == states.HOG_RUNNING
    assert db.query_one("SELECT state FROM tasks WHERE id = 1")[0] == states.RUNNING
    db.close()


# -- state words -----------------------------------------------------------------------------

WORDS = {
    *states.TASK_STATES,
    *states.HOG_STATES,
    *(value for name, value in vars(states).items() if name.startswith("REASON_")),
}


@pytest.mark.parametrize("module", sorted(p.name for p in STORE.glob("*.py") if p.name != "states.py"))
def test_store_sql_takes_state_words_from_states(module):
    tree = ast.parse((STORE / module).read_text())
    quoted = re.compile("'({})'".format("|".join(map(re.escape, WORDS))))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found = quoted.search(node.value)
            assert not found, (
                f"{module}:{node.lineno} spells {found.group(0)}: use the constant from states.py"
            )


def test_the_cycle_collector_waits_while_a_write_holds_the_lock(tmp_path):
    import gc

    db = new_db(tmp_path)
    assert gc.isenabled()
    with db.transaction():
        assert not gc.isenabled()  # a collection here would hold every hog's line
    assert gc.isenabled()
    with pytest.raises(RuntimeError), db.transaction():
        raise RuntimeError("a failed write")
    assert gc.isenabled()
    gc.disable()  # whoever turned it off keeps it off
    try:
        with db.transaction():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
