"""The core on a real sqlite file: opening, submitting, claiming, guarded writes, counts, locks."""

import fcntl
import json
import multiprocessing
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import apsw
import pytest
from helpers import child_env, cli, cli_json

from hog.errors import DatabaseError, LockTimeoutError, NotFoundError, UsageError
from hog.store import claims, counts, queue, reaping, schema, states, submitting
from hog.store import db as hogdb
from hog.store.cleanup import cleanup
from hog.store.packing import Resources

BIG_MEM = 1 << 40


# -- helpers ---------------------------------------------------------------------------------


def new_db(tmp_path: Path, name: str = "queue.sqlite", timeout_s: float = 30) -> hogdb.Database:
    path = str(tmp_path / name)
    hogdb.create_database(path)
    return hogdb.open_database(path, timeout_s)


def options(**overrides) -> submitting.SubmitOptions:
    values = {"cwd": "/tmp", "environment": {"PATH": "/usr/bin:/bin", "HOME": "/root"}}
    values.update(overrides)
    return submitting.SubmitOptions(**values)


def commands(count: int, prefix: str = "echo") -> list[tuple[str, None]]:
    return [(f"{prefix} {number}", None) for number in range(count)]


def register_hog(db: hogdb.Database, cores: int = 4, lease_s: float = 30) -> int:
    info = claims.HogInfo(
        host="node1",
        pid=os.getpid(),
        slurm_job_id=None,
        cores=cores,
        gpus=[],
        mem_bytes=BIG_MEM,
        end_by=None,
        lease_s=lease_s,
    )
    hog_id = claims.start_hog(db, info)
    assert hog_id is not None
    return hog_id


def claim_request(limit: int, cores: int = 64) -> claims.ClaimRequest:
    """What rounds.py's _claim_request builds for an idle hog without a walltime."""
    size = Resources(cores, 0, BIG_MEM)
    return claims.ClaimRequest(
        free=size, total=size, busy=[], seconds_left=None, unlimited_allowed=True, limit=limit
    )


def claim(db: hogdb.Database, hog_id: int, limit: int) -> list[claims.ClaimedTask]:
    outcome = claims.exchange(db, hog_id, "node1", [], claim_request(limit), {})
    assert not outcome.given_up
    return outcome.claimed


def result(task: claims.ClaimedTask, exit_code: int | None = 0, reason: str = states.REASON_EXITED):
    now = time.time()
    return claims.TaskResult(
        task.task_id, task.attempt, reason, started_at=now - 1, ended_at=now, exit_code=exit_code
    )


def report(db: hogdb.Database, hog_id: int, results: list[claims.TaskResult]) -> claims.Exchange:
    return claims.exchange(db, hog_id, "node1", results, None, {})


def counted(db: hogdb.Database) -> dict[str, int]:
    return {state: n for state, n in db.query("SELECT state, tasks FROM state_counts") if n}


def actual(db: hogdb.Database) -> dict[str, int]:
    return dict(db.query("SELECT state, count(*) FROM tasks GROUP BY state"))


def assert_counts_true(db: hogdb.Database) -> None:
    assert counted(db) == actual(db)
    assert queue.status(db).tasks == {s: actual(db).get(s, 0) for s in states.TASK_STATES}


def task_row(db: hogdb.Database, task_id: int) -> tuple:
    return db.query_one("SELECT state, attempt, hog_id, exit_code FROM tasks WHERE id = ?", (task_id,))


# -- creating and opening --------------------------------------------------------------------


def test_create_database_makes_an_owner_only_file_and_lock(tmp_path):
    path = tmp_path / "q.sqlite"
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        hogdb.create_database(str(path))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{path}.lock").stat().st_mode) == 0o600
    db = hogdb.open_database(str(path))
    assert db.query_one("PRAGMA user_version")[0] == schema.SCHEMA_VERSION
    assert db.query_one("PRAGMA application_id")[0] == schema.APPLICATION_ID
    assert db.query_one("PRAGMA journal_mode")[0].lower() == "delete"  # never WAL by default
    assert db.query_one("PRAGMA foreign_keys")[0] == 1


def test_create_database_refuses_an_existing_file_and_leaves_it_alone(tmp_path):
    path = tmp_path / "q.sqlite"
    path.write_bytes(b"precious data")
    with pytest.raises(DatabaseError, match="already exists"):
        hogdb.create_database(str(path))
    assert path.read_bytes() == b"precious data"
    assert not Path(f"{path}.lock").exists()


def test_create_database_refuses_a_second_init(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(3), options())
    before = Path(db.path).read_bytes()
    with pytest.raises(DatabaseError, match="already exists"):
        hogdb.create_database(db.path)
    assert Path(db.path).read_bytes() == before


def test_create_database_with_an_unknown_group_creates_nothing(tmp_path):
    path = tmp_path / "q.sqlite"
    with pytest.raises(DatabaseError, match="no group named"):
        hogdb.create_database(str(path), group="no-such-group-hopefully")
    assert list(tmp_path.iterdir()) == []


def test_open_missing_database_suggests_init_and_creates_nothing(tmp_path):
    path = tmp_path / "missing.sqlite"
    with pytest.raises(DatabaseError) as error:
        hogdb.open_database(str(path))
    assert "init" in str(error.value)
    assert not path.exists()


def test_open_refuses_a_file_that_is_not_sqlite(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("these are not the tables you are looking for\n" * 100)
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="not a slurm-hog"):
        hogdb.open_database(str(path))
    assert path.read_bytes() == before


def test_open_refuses_an_sqlite_file_that_is_not_ours(tmp_path):
    path = tmp_path / "other.sqlite"
    connection = apsw.Connection(str(path))
    connection.execute("CREATE TABLE birds(name TEXT); INSERT INTO birds VALUES ('robin')")
    connection.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseError, match="not a slurm-hog"):
        hogdb.open_database(str(path))
    assert path.read_bytes() == before  # not migrated into ours


def test_open_refuses_an_sqlite_file_of_another_application(tmp_path):
    path = tmp_path / "other.sqlite"
    connection = apsw.Connection(str(path))
    connection.execute("PRAGMA application_id = 1234; PRAGMA user_version = 1; CREATE TABLE x(y)")
    connection.close()
    with pytest.raises(DatabaseError, match="not a slurm-hog"):
        hogdb.open_database(str(path))


def test_open_refuses_a_newer_schema_and_writes_nothing(tmp_path):
    db = new_db(tmp_path)
    db.connection.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 5}")
    db.close()
    before = Path(db.path).read_bytes()
    with pytest.raises(DatabaseError) as error:
        hogdb.open_database(db.path)
    message = str(error.value)
    assert "newer" in message and "upgrade" in message
    assert Path(db.path).read_bytes() == before


def test_open_refuses_a_folder(tmp_path):
    with pytest.raises(DatabaseError, match="folder"):
        hogdb.open_database(str(tmp_path))


# -- submitting ------------------------------------------------------------------------------


def test_submit_gives_contiguous_ids_and_never_reuses_them(tmp_path):
    db = new_db(tmp_path)
    assert submitting.submit(db, commands(5), options()) == (1, 5)
    assert submitting.submit(db, [("true", None)], options()) == (6, 6)
    assert submitting.submit(db, commands(1000), options()) == (7, 1006)
    ids = [row[0] for row in db.query("SELECT id FROM tasks ORDER BY id")]
    assert ids == list(range(1, 1007))
    # Ended tasks deleted: their ids are not handed out again.
    queue.cancel(db, list(range(1000, 1007)))
    assert cleanup(db, (states.CANCELLED,)).tasks == 7
    assert submitting.submit(db, [("true", None)], options()) == (1007, 1007)


def test_submit_stores_the_environment_once_for_many_tasks(tmp_path):
    db = new_db(tmp_path)
    environment = {"PATH": "/usr/bin", "HOME": "/home/me", "BIG": "x" * 10_000}
    submitting.submit(db, commands(2000), options(environment=environment))
    submitting.submit(db, commands(500), options(environment=dict(environment)))
    assert db.query_one("SELECT count(*) FROM environments")[0] == 1
    submitting.submit(db, commands(3), options(environment={**environment, "OTHER": "1"}))
    assert db.query_one("SELECT count(*) FROM environments")[0] == 2
    # One submission row per call, not per task.
    assert db.query_one("SELECT count(*) FROM submissions")[0] == 3


def test_submit_with_no_commands_adds_nothing(tmp_path):
    db = new_db(tmp_path)
    with pytest.raises(UsageError):
        submitting.submit(db, [], options())
    assert db.query_one("SELECT count(*) FROM tasks")[0] == 0
    assert db.query_one("SELECT count(*) FROM submissions")[0] == 0


def test_submit_is_all_or_nothing_when_the_commands_fail_part_way(tmp_path):
    db = new_db(tmp_path)

    def lines():
        yield from commands(500)
        raise UsageError("line 501 is bad")

    with pytest.raises(UsageError, match="501"):
        submitting.submit(db, lines(), options())
    assert db.query_one("SELECT count(*) FROM tasks")[0] == 0
    assert db.query_one("SELECT count(*) FROM environments")[0] == 0
    assert counted(db) == {}
    assert submitting.submit(db, [("true", None)], options()) == (1, 1)  # no id was used up


def test_captured_environment_leaves_out_the_allocation_of_the_submitting_shell():
    captured = submitting.captured_environment(
        {
            "PATH": "/bin",
            "MY_VAR": "1",
            "SLURM_JOB_ID": "7",
            "CUDA_VISIBLE_DEVICES": "0",
            "HOG_TASK_ID": "3",
            "SLURM_HOG_DB": "/q",
            "OMP_NUM_THREADS": "4",
        }
    )
    assert captured == {"PATH": "/bin", "MY_VAR": "1"}


# -- claiming --------------------------------------------------------------------------------


def test_claim_takes_highest_priority_first_then_oldest(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(3, "low"), options())  # 1-3, priority 0
    submitting.submit(db, commands(2, "high"), options(priority=5))  # 4-5
    submitting.submit(db, commands(1, "neg"), options(priority=-1))  # 6
    hog_id = register_hog(db)
    order = [task.task_id for task in claim(db, hog_id, 3)]
    order += [task.task_id for task in claim(db, hog_id, 10)]
    assert order == [4, 5, 1, 2, 3, 6]
    assert all(task_row(db, n)[0] == states.RUNNING for n in range(1, 7))


def test_claim_skips_tasks_larger_than_the_hog(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, [("huge", None)], options(cores=128))
    submitting.submit(db, [("small", None)], options(cores=1))
    hog_id = register_hog(db)
    claimed = claim(db, hog_id, 10)
    assert [task.command for task in claimed] == ["small"]
    assert task_row(db, 1)[0] == states.WAITING


def _race_worker(path: str, barrier, results, limit: int) -> None:
    db = hogdb.open_database(path, 60)
    hog_id = register_hog(db)
    barrier.wait()
    mine = []
    while True:
        outcome = claims.exchange(db, hog_id, "node1", [], claim_request(limit), {})
        mine.extend(task.task_id for task in outcome.claimed)
        if not outcome.claimed:
            break
    results.put(mine)


@pytest.mark.parametrize("limit", [1, 7])
def test_three_processes_racing_claim_each_task_once(tmp_path, limit):
    db = new_db(tmp_path)
    total = 300
    submitting.submit(db, commands(total), options())
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(3)
    results = context.Queue()
    workers = [
        context.Process(target=_race_worker, args=(db.path, barrier, results, limit)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    claimed = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    everything = [task_id for mine in claimed for task_id in mine]
    assert sorted(everything) == list(range(1, total + 1))  # each exactly once
    rows = db.query("SELECT attempt, count(*) FROM attempts GROUP BY attempt")
    assert rows == [(1, total)]
    assert counted(db) == {states.RUNNING: total}
    assert_counts_true(db)


# -- guarded writes --------------------------------------------------------------------------


def test_a_lost_hog_that_comes_back_writes_nothing_over_the_newer_attempt(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(2), options())
    old_hog = register_hog(db)
    old_tasks = claim(db, old_hog, 2)
    assert [task.attempt for task in old_tasks] == [1, 1]

    reaped = reaping.reap_lost_hogs(db, now=time.time() + 10_000)
    assert reaped == [old_hog]
    assert [task_row(db, n)[0] for n in (1, 2)] == [states.WAITING, states.WAITING]

    new_hog = register_hog(db)
    new_tasks = claim(db, new_hog, 1)
    assert [(task.task_id, task.attempt) for task in new_tasks] == [(1, 2)]

    # The old hog reports both tasks as failed, and tries to claim more.
    outcome = claims.exchange(
        db, old_hog, "node1", [result(task, exit_code=1) for task in old_tasks], claim_request(5), {}
    )
    assert outcome.given_up is True
    assert outcome.claimed == [] and outcome.recorded == 0
    assert task_row(db, 1) == (states.RUNNING, 2, new_hog, None)
    assert task_row(db, 2) == (states.WAITING, 1, None, None)
    old_attempt = db.query_one("SELECT reason, exit_code FROM attempts WHERE task_id = 1 AND attempt = 1")
    assert old_attempt == (states.REASON_LOST, None)
    assert db.query_one("SELECT state FROM hogs WHERE id = ?", (old_hog,))[0] == states.HOG_LOST
    assert_counts_true(db)


def test_a_result_for_an_attempt_that_is_not_current_is_ignored_by_a_live_hog(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(1), options())
    hog_a = register_hog(db)
    (first,) = claim(db, hog_a, 1)
    reaping.reap_lost_hogs(db, now=time.time() + 10_000)
    hog_b = register_hog(db)
    (second,) = claim(db, hog_b, 1)
    # Hog b sends a result that names attempt 1 (not its own): nothing is written.
    outcome = report(db, hog_b, [result(first, exit_code=0)])
    assert outcome.given_up is False and outcome.recorded == 0
    assert task_row(db, 1) == (states.RUNNING, 2, hog_b, None)
    # Its own attempt's result is written.
    assert report(db, hog_b, [result(second, exit_code=0)]).recorded == 1
    assert task_row(db, 1)[0] == states.DONE
    assert_counts_true(db)


def test_one_write_of_mixed_results_writes_only_the_current_attempts(tmp_path):
    # Successes go in one statement over all of them, failures one by one: a stale success in
    # the same write as current ones must still be skipped, and each row counted once.
    db = new_db(tmp_path)
    submitting.submit(db, commands(4), options(max_retries=1))
    hog_a = register_hog(db)
    (stale,) = claim(db, hog_a, 1)
    reaping.reap_lost_hogs(db, now=time.time() + 10_000)
    hog_b = register_hog(db)
    mine = claim(db, hog_b, 4)
    assert [(task.task_id, task.attempt) for task in mine] == [(1, 2), (2, 1), (3, 1), (4, 1)]
    batch = [
        result(stale, exit_code=0),  # attempt 1 of task 1: hog b's own attempt 2 is current
        result(mine[1], exit_code=0),
        result(mine[2], exit_code=3),  # a retry left: waits again
        result(mine[3], exit_code=0),
        result(mine[1], exit_code=0),  # sent twice: counted once
    ]
    outcome = report(db, hog_b, batch)
    assert outcome.recorded == 3
    assert task_row(db, 1) == (states.RUNNING, 2, hog_b, None)
    assert [task_row(db, n)[0] for n in (2, 3, 4)] == [states.DONE, states.WAITING, states.DONE]
    ended = db.query(
        "SELECT task_id, attempt, exit_code FROM attempts WHERE ended_at IS NOT NULL ORDER BY 1, 2"
    )
    assert ended == [(1, 1, None), (2, 1, 0), (3, 1, 3), (4, 1, 0)]  # task 1's first: closed as lost
    assert db.query_one("SELECT tasks_run FROM hogs WHERE id = ?", (hog_b,)) == (3,)
    assert_counts_true(db)


def test_results_follow_the_retry_budget(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(1), options(max_retries=1))
    hog_id = register_hog(db)
    (task,) = claim(db, hog_id, 1)
    report(db, hog_id, [result(task, exit_code=2)])
    assert task_row(db, 1)[0] == states.WAITING  # a retry remained
    (task,) = claim(db, hog_id, 1)
    assert task.attempt == 2
    report(db, hog_id, [result(task, exit_code=2)])
    assert task_row(db, 1) == (states.FAILED, 2, None, 2)
    assert_counts_true(db)


def test_cancel_unknown_id_cancels_nothing(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(3), options())
    with pytest.raises(NotFoundError, match="99"):
        queue.cancel(db, [1, 99])
    assert {row[0] for row in db.query("SELECT state FROM tasks")} == {states.WAITING}
    assert_counts_true(db)


def test_cleanup_refuses_active_states(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(2), options())
    for state in (states.WAITING, states.RUNNING):
        with pytest.raises(UsageError, match="only ended"):
            cleanup(db, (state,))
    assert db.query_one("SELECT count(*) FROM tasks")[0] == 2


def test_state_counts_match_the_tasks_after_every_kind_of_change(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(20), options())
    submitting.submit(db, commands(5), options(max_retries=1, priority=10))  # 21-25, claimed first
    assert_counts_true(db)

    queue.cancel(db, [1, 2])
    assert_counts_true(db)

    hog_id = register_hog(db, cores=8)
    claimed = claim(db, hog_id, 8)  # 21-25, 3-5
    assert_counts_true(db)
    by_id = {task.task_id: task for task in claimed}
    report(
        db,
        hog_id,
        [
            result(by_id[21], exit_code=0),  # done
            result(by_id[22], exit_code=1),  # a retry remains: waiting
            result(by_id[3], exit_code=1),  # failed
            result(by_id[4], reason=states.REASON_TIMEOUT, exit_code=None),  # timeout
            result(by_id[5], reason=states.REASON_RELEASED, exit_code=None),  # back to waiting
        ],
    )
    assert_counts_true(db)

    queue.cancel(db, [23])  # running: marked, still running
    assert task_row(db, 23)[0] == states.RUNNING
    assert_counts_true(db)
    report(db, hog_id, [result(by_id[23], reason=states.REASON_CANCELLED, exit_code=None)])
    assert task_row(db, 23)[0] == states.CANCELLED
    assert_counts_true(db)

    reaping.reap_lost_hogs(db, now=time.time() + 10_000)  # 24, 25 back to waiting
    assert_counts_true(db)

    queue.cancel(db, state_filter=(states.WAITING,))
    assert_counts_true(db)
    requeued, skipped = queue.retry(db, [1, 3, 4, 21])
    assert sorted(requeued) == [1, 3, 4]
    assert skipped == [(21, states.DONE)]
    assert_counts_true(db)
    queue.retry(db)  # --failed: none left
    assert_counts_true(db)

    assert cleanup(db, (states.DONE,)).tasks == 1
    assert_counts_true(db)
    cleanup(db)
    assert_counts_true(db)
    assert set(actual(db)) == {states.WAITING}


# -- several writers -------------------------------------------------------------------------


def test_several_processes_submitting_at_once_lose_and_share_no_id(tmp_path):
    path = tmp_path / "queue.sqlite"
    assert cli(path, "init").returncode == 0
    task_file = tmp_path / "tasks.txt"
    task_file.write_text("".join(f"echo {n}\n" for n in range(250)))
    argv = [sys.executable, "-m", "hog", "--db", str(path), "submit", "--json"]
    processes = []
    for index in range(8):
        extra = ["--file", str(task_file)] if index % 2 else ["--", "echo", str(index)]
        processes.append(
            subprocess.Popen(
                [*argv, *extra],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
        )
    ranges = []
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        reply = json.loads(out)
        ranges.append(range(reply["first"], reply["last"] + 1))
        assert reply["count"] == len(ranges[-1])
    expected = 4 * 250 + 4
    handed_out = sorted(task_id for ids in ranges for task_id in ids)
    assert handed_out == list(range(1, expected + 1))
    stored = cli_json(path, "show")
    assert [task["id"] for task in stored] == handed_out
    assert cli_json(path, "status")["tasks"]["waiting"] == expected


# -- the lock ---------------------------------------------------------------------------------


def test_lock_timeout_in_the_core(tmp_path):
    db = new_db(tmp_path, timeout_s=0.3)
    with open(db.lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LockTimeoutError, match="--timeout"):
            submitting.submit(db, commands(3), options())
    assert db.query_one("SELECT count(*) FROM tasks")[0] == 0
    assert submitting.submit(db, commands(1), options()) == (1, 1)  # the lock works again


def test_cli_submit_fails_cleanly_when_the_lock_is_held(tmp_path):
    path = tmp_path / "queue.sqlite"
    assert cli(path, "init").returncode == 0
    assert cli(path, "submit", "true").returncode == 0
    before = path.read_bytes()
    with open(f"{path}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        refused = cli(path, "--timeout", "1", "submit", "echo blocked")
        after_flag = cli(path, "submit", "--timeout", "0.5", "echo blocked")
    for result_ in (refused, after_flag):
        assert result_.returncode != 0
        assert "lock" in result_.stderr and "--timeout" in result_.stderr
        assert "Traceback" not in result_.stderr + result_.stdout
        assert len(result_.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before
    assert [task["command"] for task in cli_json(path, "show")] == ["true"]


def test_busy_timeout_is_a_backstop_when_sqlite_itself_is_locked(tmp_path):
    db = new_db(tmp_path)
    other = apsw.Connection(db.path)
    other.execute("BEGIN IMMEDIATE")  # holds sqlite's write lock without our flock
    try:
        slow = hogdb.open_database(db.path, timeout_s=0.3)
        with pytest.raises(LockTimeoutError, match="--timeout"):
            submitting.submit(slow, commands(2), options())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert db.query_one("SELECT count(*) FROM tasks")[0] == 0


# -- sqlite's failures become one-line messages --------------------------------------------


def test_read_only_error_in_a_transaction_becomes_a_database_error(tmp_path):
    db = new_db(tmp_path)
    with pytest.raises(DatabaseError, match="read-only"), db.transaction() as connection:
        connection.execute("INSERT INTO meta(key, value) VALUES ('a', 'b')")
        raise apsw.ReadOnlyError("attempt to write a readonly database")
    assert db.query_one("SELECT count(*) FROM meta")[0] == 0
    with db.transaction() as connection:  # the lock was released
        connection.execute("INSERT INTO meta(key, value) VALUES ('a', 'b')")


def test_full_disk_in_a_transaction_becomes_a_database_error(tmp_path):
    db = new_db(tmp_path)
    with pytest.raises(DatabaseError, match="full"), db.transaction():
        raise apsw.FullError("database or disk is full")


def test_full_disk_after_sqlite_rolled_back_by_itself_is_still_a_database_error(tmp_path):
    # On SQLITE_FULL (and some IOERRs) sqlite rolls the transaction back by itself; our own
    # ROLLBACK then fails with "no transaction is active" and must not hide the real error.
    db = new_db(tmp_path)
    with pytest.raises(DatabaseError, match="full"), db.transaction() as connection:
        connection.execute("INSERT INTO meta(key, value) VALUES ('a', 'b')")
        connection.execute("ROLLBACK")
        raise apsw.FullError("database or disk is full")
    assert db.query_one("SELECT count(*) FROM meta")[0] == 0


def test_a_move_the_transition_table_forbids_is_refused_and_rolled_back(tmp_path):
    import pytest

    from hog.store import submitting
    from hog.store.db import create_database, open_database

    path = str(tmp_path / "q.sqlite")
    create_database(path)
    db = open_database(path)
    try:
        submitting.submit(db, [("true", None)], submitting.SubmitOptions(cwd=str(tmp_path)))
        with pytest.raises(RuntimeError, match="from done to running"), db.transaction() as connection:
            counts.move_counts(connection, "waiting", "cancelled")
            counts.move_counts(connection, "done", "running")
        assert dict(db.query("SELECT state, tasks FROM state_counts WHERE tasks != 0")) == {"waiting": 1}
    finally:
        db.close()


def test_claims_ahead_are_a_quarter_second_shared_among_the_hogs():
    from hog.pilot.pacing import prefetch_factor

    # Alone on 2 cores: a quarter second of 2 ms tasks (125 node-fulls); tinier ones stop at 256
    # tasks (128 node-fulls).
    assert prefetch_factor(0.002, 1, 2) == 125
    assert prefetch_factor(0.0001, 1, 2) == 128
    # Four hogs share the 256: 32 tasks each; 64 hogs get the floor of 8 node-fulls.
    assert prefetch_factor(0.0001, 4, 2) == 32
    assert prefetch_factor(0.0001, 64, 1) == 8
    # Tasks of a second or more: nothing ahead.
    assert prefetch_factor(1.0, 1, 2) == 0


def test_a_claim_takes_at_most_its_share_of_the_waiting_tasks_but_fills_its_idle_cores(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(20), options())
    first, second = register_hog(db), register_hog(db)

    def take(hog_id: int, idle_cores: int) -> int:
        request = claim_request(100, cores=100)._replace(least=idle_cores)  # room for 100 ahead
        return len(claims.exchange(db, hog_id, "node1", [], request, {}).claimed)

    # 20 waiting over 2 hogs: 10 each, not all 20 to whichever hog comes first.
    assert take(first, 4) == 10
    assert take(second, 4) == 5  # 10 left over 2
    assert take(first, 4) == 4  # its share is 3, but its 4 idle cores start now
    assert take(second, 0) == 1  # 1 left: share 1
    # A hog of another pool does not shrink the share of the default pool's hogs.
    submitting.submit(db, commands(6), options())
    other = claims.start_hog(
        db, claims.HogInfo("node2", os.getpid(), None, 4, [], BIG_MEM, None, 30, pool="gpu")
    )
    assert other is not None
    assert take(first, 0) == 3


def test_a_claim_counts_the_running_hogs_and_a_cancel_poll_sees_a_lost_hog(tmp_path):
    db = new_db(tmp_path)
    submitting.submit(db, commands(3), options())
    first, second = register_hog(db), register_hog(db)
    outcome = claims.exchange(db, first, "node1", [], claim_request(1), {})
    assert outcome.hogs_running == 2 and len(outcome.claimed) == 1
    assert claims.poll_cancels(db, first) == set()
    queue.cancel(db, [outcome.claimed[0].task_id])
    assert claims.poll_cancels(db, first) == {(outcome.claimed[0].task_id, 1)}
    assert claims.set_hog_state(db, second, states.HOG_LOST, "test")
    assert claims.exchange(db, first, "node1", [], claim_request(1), {}).hogs_running == 1
    assert claims.set_hog_state(db, first, states.HOG_LOST, "test")
    assert claims.poll_cancels(db, first) is None
