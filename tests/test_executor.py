"""HogExecutor with real hogs: the executor starts them on this machine (local_hogs), as a user
on a laptop would; calls run as tasks through `python -m hog.api.worker`."""

import asyncio
import concurrent.futures
import os
import signal
import subprocess
import sys
import threading
import types
from pathlib import Path

import pytest

import hog
from tests.helpers import child_env, cli, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "queue.sqlite")
    hog.Queue(path, create=True).close()
    return path


def double(x: int) -> int:
    return 2 * x


def fails(message: str) -> None:
    raise ValueError(message)


def note_and_sleep(marker: str, seconds: float) -> int:
    """Appends a line to `marker` each time it starts; the first run then sleeps `seconds`, later
    ones return at once. Returns how many runs there have been."""
    with open(marker, "a") as handle:
        handle.write(f"{os.getpid()}\n")
    with open(marker) as handle:
        runs = len(handle.readlines())
    if runs == 1:
        import time

        time.sleep(seconds)
    return runs


def variable(name: str) -> str | None:
    return os.environ.get(name)


class Counter(hog.Checkpointable):
    """Counts to `steps`, noting where each attempt started and how far it got."""

    def __init__(self) -> None:
        self.done = 0

    def __call__(self, steps: int, folder: str) -> int:
        import time

        with open(os.path.join(folder, "starts"), "a") as handle:
            handle.write(f"{self.done}\n")
        while self.done < steps:
            time.sleep(0.05)
            self.done += 1
            with open(os.path.join(folder, "progress"), "w") as handle:
                handle.write(str(self.done))
        return self.done


def _hog_pids(executor: hog.HogExecutor) -> list[int]:
    local = executor._engine.local
    return [process.pid for process in local.started if process.poll() is None]


def test_results_exceptions_and_remote_tracebacks(db: str) -> None:
    with hog.HogExecutor(db, local_hogs=1) as executor:
        assert executor.submit(double, 21).result(timeout=60) == 42
        future = executor.submit(fails, "no good")
        with pytest.raises(ValueError, match="no good") as raised:
            future.result(timeout=60)
        cause = raised.value.__cause__
        assert isinstance(cause, hog.RemoteTraceback)
        assert "in fails" in cause.text and "ValueError: no good" in cause.text
        assert list(executor.map(double, range(20))) == [2 * x for x in range(20)]
    queue = hog.Queue(db)
    assert queue.status().tasks["done"] == 21 and queue.status().tasks["failed"] == 1
    # The calls files go once their calls have ended.
    assert os.listdir(db + ".calls") == []


def test_closures_lambdas_and_large_values(db: str) -> None:
    offset = 7
    big = os.urandom(300_000)
    with hog.HogExecutor(db, local_hogs=1) as executor:
        assert executor.submit(lambda x: x + offset, 1).result(timeout=60) == 8
        assert executor.submit(lambda data: data[::-1] * 2, big).result(timeout=60) == big[::-1] * 2
        small = executor.submit(len, big)
        assert small.result(timeout=60) == len(big)
    queue = hog.Queue(db)
    rows = dict(queue.db.query("SELECT task_id, path IS NOT NULL FROM call_results"))
    # The 600 kB result went to a file beside the queue, the small one into the database.
    assert rows == {1: 0, 2: 1, 3: 0}
    # Ended calls are cleaned up as any task, their results with them.
    assert cli(db, "cleanup").returncode == 0
    assert queue.db.query("SELECT count(*) FROM call_results") == [(0,)]


def test_cancel_waiting_and_running_calls(db: str, tmp_path: Path) -> None:
    marker = str(tmp_path / "marker")
    with hog.HogExecutor(db) as idle:  # no hog: the call waits
        waiting = idle.submit(double, 1)
        assert waiting.cancel()
        assert waiting.cancelled()
        assert hog.Queue(db).task(waiting.task_id).state == "cancelled"
    with hog.HogExecutor(db, local_hogs=1) as executor:
        running = executor.submit(note_and_sleep, marker, 60)
        wait_until(lambda: os.path.exists(marker), message="the call to start")
        assert running.cancel()
        assert running.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(timeout=0)
        queue = hog.Queue(db)
        wait_until(lambda: queue.task(running.task_id).state == "cancelled", message="the hog to kill it")
        done = executor.submit(double, 2)
        assert done.result(timeout=60) == 4
        assert not done.cancel()  # ended: nothing to cancel


def test_as_completed_wait_and_asyncio(db: str) -> None:
    with hog.HogExecutor(db, local_hogs=1) as executor:
        futures = [executor.submit(double, x) for x in range(8)]
        got = sorted(f.result() for f in concurrent.futures.as_completed(futures, timeout=120))
        assert got == [2 * x for x in range(8)]
        done, not_done = concurrent.futures.wait([executor.submit(double, 5)], timeout=60)
        assert not not_done and next(iter(done)).result() == 10

        async def gather() -> list[int]:
            wrapped = [asyncio.wrap_future(executor.submit(double, x)) for x in range(3)]
            return await asyncio.gather(*wrapped)

        assert asyncio.run(gather()) == [0, 2, 4]


def test_batch_is_one_submission_and_options_ask_for_resources(db: str) -> None:
    with hog.HogExecutor(db, local_hogs=1) as executor:
        with executor.batch():
            futures = [executor.submit(double, x) for x in range(5)]
            assert all(future.task_id is None for future in futures)
        assert [future.task_id for future in futures] == [1, 2, 3, 4, 5]
        with executor.batch():
            dropped = executor.submit(double, 100)
            assert dropped.cancel()  # not submitted at all
        assert dropped.task_id is None and dropped.cancelled()
        bigger = executor.options(cores=2, time="5m", name="bigger").submit(double, 3)
        assert bigger.result(timeout=60) == 6
        with executor.batch():
            mine = executor.submit(variable, "HOG_TEST_COLOUR")
            given = executor.options(environment={"HOG_TEST_COLOUR": "red"}).submit(
                variable, "HOG_TEST_COLOUR"
            )
        assert (mine.result(timeout=60), given.result(timeout=60)) == (None, "red")
        assert [future.result(timeout=60) for future in futures] == [0, 2, 4, 6, 8]
    queue = hog.Queue(db)
    detail = queue.task(bigger.task_id)
    assert (detail.cores, detail.time_limit_s, detail.name) == (2, 300.0, "bigger")
    assert queue.task(1).name == "double"
    # One submission for the batch: the five share it.
    assert queue.db.query("SELECT count(DISTINCT submission_id) FROM tasks WHERE id <= 5") == [(1,)]


@pytest.mark.parametrize(("how", "reason"), [(signal.SIGKILL, "lost"), (signal.SIGTERM, "released")])
def test_call_runs_again_once_when_its_hog_dies_or_stops(db: str, tmp_path: Path, how, reason) -> None:
    """Killed, the hog is declared lost at once (its process is gone); stopped, it gives the call
    back. A plain callable then starts again from scratch, once."""
    marker = str(tmp_path / "marker")
    with hog.HogExecutor(db, local_hogs=1) as executor:
        future = executor.submit(note_and_sleep, marker, 120)
        wait_until(lambda: os.path.exists(marker), message="the call to start")
        (pid,) = _hog_pids(executor)
        os.kill(pid, how)
        assert future.result(timeout=120) == 2  # the second run found the first one's line
    with open(marker) as handle:
        assert len(handle.readlines()) == 2
    attempts = hog.Queue(db).attempts(future.task_id)
    assert [attempt.reason for attempt in attempts] == [reason, "exited"]


def test_checkpointed_call_resumes_after_its_hog_stops(db: str, tmp_path: Path) -> None:
    with hog.HogExecutor(db, local_hogs=1) as executor:
        future = executor.submit(Counter(), 60, str(tmp_path))
        progress = tmp_path / "progress"
        wait_until(lambda: progress.exists() and int(progress.read_text() or 0) >= 10, message="progress")
        (pid,) = _hog_pids(executor)
        os.kill(pid, signal.SIGTERM)  # as SLURM's time limit or scancel: the hog stops
        assert future.result(timeout=120) == 60
    starts = [int(line) for line in (tmp_path / "starts").read_text().split()]
    assert starts[0] == 0 and len(starts) == 2 and starts[1] >= 10
    attempts = hog.Queue(db).attempts(future.task_id)
    assert [attempt.reason for attempt in attempts] == ["released", "exited"]
    assert hog.Queue(db).task(future.task_id).retries_used == 0


def test_checkpointed_call_resumes_after_its_own_time_limit_with_retries(db: str, tmp_path: Path) -> None:
    with hog.HogExecutor(db, local_hogs=1, time="2s", retries=5) as executor:
        assert executor.submit(Counter(), 60, str(tmp_path)).result(timeout=120) == 60
    starts = [int(line) for line in (tmp_path / "starts").read_text().split()]
    assert starts[0] == 0 and len(starts) >= 2 and all(later > 0 for later in starts[1:])


def test_local_hogs_serve_the_executors_pool(db: str) -> None:
    with hog.HogExecutor(db, local_hogs=1, pool="gpu") as executor:
        future = executor.submit(double, 4)
        assert future.result(timeout=120) == 8
    queue = hog.Queue(db)
    assert queue.tasks(future.task_id)[0].pool == "gpu"
    assert queue.db.query("SELECT DISTINCT pool FROM hogs") == [("gpu",)]
    with pytest.raises(hog.UsageError, match=r"^bad pool= 'no pool'"):
        hog.HogExecutor(db, pool="no pool")


def test_many_executors_on_one_queue(db: str) -> None:
    results: dict[str, list[int]] = {}

    def use(name: str, local_hogs: int, numbers: range) -> None:
        with hog.HogExecutor(db, local_hogs=local_hogs) as executor:
            results[name] = list(executor.map(double, numbers))

    threads = [
        threading.Thread(target=use, args=("a", 1, range(0, 15))),
        threading.Thread(target=use, args=("b", 1, range(100, 115))),
    ]
    for thread in threads:
        thread.start()
    with hog.HogExecutor(db) as third:  # no hog of its own: the others' run its calls
        assert third.submit(double, 1000).result(timeout=120) == 2000
    for thread in threads:
        thread.join(timeout=180)
    assert results == {"a": [2 * x for x in range(0, 15)], "b": [2 * x for x in range(100, 115)]}


# -- bad input ---------------------------------------------------------------------------------


def test_unpicklable_function_or_argument_fails_at_submit(db: str) -> None:
    with hog.HogExecutor(db) as executor:
        with pytest.raises(hog.UsageError, match=r"argument 2 cannot be pickled \(TypeError: cannot pickle"):
            executor.submit(double, 1, threading.Lock())
        lock = threading.Lock()
        with pytest.raises(hog.UsageError, match="the function cannot be pickled"):
            executor.submit(lock.acquire)
        with pytest.raises(hog.UsageError, match="keyword argument x cannot be pickled"), executor.batch():
            executor.submit(double, x=threading.Lock())
    assert hog.Queue(db).tasks() == []


def test_unimportable_module_fails_the_future_with_a_hint(db: str) -> None:
    module = types.ModuleType("hog_test_only_here")
    exec("def triple(x):\n    return 3 * x\n", module.__dict__)
    sys.modules[module.__name__] = module
    try:
        with hog.HogExecutor(db, local_hogs=1) as executor:
            future = executor.submit(module.triple, 2)
            with pytest.raises(ModuleNotFoundError, match="hog_test_only_here") as raised:
                future.result(timeout=60)
    finally:
        del sys.modules[module.__name__]
    message = str(raised.value)
    assert "cannot import" in message and "PYTHONPATH" in message and "register_pickle_by_value" in message


def test_unpicklable_result_fails_the_future_with_the_reason(db: str) -> None:
    with hog.HogExecutor(db, local_hogs=1) as executor:
        future = executor.submit(threading.Lock)
        with pytest.raises(hog.CallError, match="returned cannot be pickled: TypeError: cannot pickle"):
            future.result(timeout=60)


def test_missing_queue_raises_what_the_cli_prints(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sqlite")
    printed = cli(missing, "status").stderr.strip()
    with pytest.raises(hog.DatabaseError) as raised:
        hog.HogExecutor(missing)
    assert printed == f"slurm-hog: error: {raised.value}"
    with pytest.raises(hog.DatabaseError) as again:
        hog.Queue(missing)
    assert str(again.value) == str(raised.value)
    assert not os.path.exists(missing)


SCRIPT = """
import math, sys
import hog

LIMIT = 3
counter = {"n": 0}


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def helper(x):
    counter["n"] += 1
    return math.sqrt(x) + LIMIT


def uses(x, scale=2):
    return helper(x) * scale, counter["n"], [i * i for i in range(x)][:2]


def loaded_cloudpickle():
    return "cloudpickle" in sys.modules


def closure(offset):
    return lambda x: (x + offset, "cloudpickle" in sys.modules)


with hog.HogExecutor(sys.argv[1], local_hogs=1) as executor:
    print(executor.submit(fact, 10).result(60))
    print(executor.submit(uses, 16).result(60))
    print(executor.submit(loaded_cloudpickle).result(60))
    print(executor.submit(lambda: "cloudpickle" in sys.modules).result(60))
    print(executor.submit(closure(5), 1).result(60))
"""


def test_functions_of_a_script_load_without_cloudpickle(db: str, tmp_path: Path) -> None:
    """Plain functions of __main__ reach the node as code (hog.api.byvalue): recursion, shared
    globals, modules and defaults work, and the worker imports no cloudpickle; a closure goes
    through cloudpickle."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), db], env=child_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["3628800", "(14.0, 1, [0, 1])", "False", "False", "(6, True)"]
