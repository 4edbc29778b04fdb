"""HogExecutor: a concurrent.futures.Executor whose calls run as tasks on hogs.

`submit(fn, *args, **kwargs)` pickles the call into a calls file beside the queue (hog.api.calls)
and adds a task that runs it with this interpreter, in this folder and environment; the future
it returns gets the value, or the call's own exception with the remote traceback as its cause.
One thread per executor follows its futures: it reads which of their tasks have ended (one
query per 500 ids, more often right after a submit) and, with `local_hogs`, keeps hogs on this
machine through the monitor's passes (hog.api.local).
"""

import atexit
import contextlib
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from hog.api.calls import outcome_value, pickled_call, remove_calls_file, write_calls
from hog.api.options import TaskOptions, with_kind
from hog.errors import HogError, UsageError
from hog.pools import DEFAULT_POOL, check_pool
from hog.store.calls import ended_calls
from hog.store.db import DEFAULT_TIMEOUT_S, open_database

POLL_MIN_S = 0.01  # right after a submit or an end: a short call's result is there within milliseconds
POLL_MAX_S = 0.25  # while nothing ends
# Hogs run the oldest waiting task first, so each poll reads the oldest calls still pending, at
# most this many (one query), and every SWEEP_S all of them: a poll costs the same for 100,000
# calls pending as for 500, and a call that overtook older ones is seen within SWEEP_S.
POLL_WINDOW = 500
SWEEP_S = 1.0
LOCAL_PASS_S = 1.0  # how often local hogs are healed and started
LOCAL_WOKEN_S = 0.1  # and at most this often while calls are submitted


class HogFuture(Future):
    """A call's future; `task_id` names its task once submitted (None inside an open batch)."""

    def __init__(self, engine: "_Engine") -> None:
        super().__init__()
        self.task_id: int | None = None
        self._engine = engine

    def cancel(self) -> bool:
        """Cancel the call: a waiting task at once, a running one is killed by its hog. False
        when it has already ended."""
        if self.done():
            return super().cancel()
        if self.task_id is not None and not self._engine.cancel_task(self.task_id):
            return False
        return super().cancel()


class _Pending:
    """Calls submitted inside `batch()`, not yet in the queue."""

    def __init__(self) -> None:
        self.calls: list[tuple[HogFuture, bytes, TaskOptions, str]] = []


class _Engine:
    """What an executor and the views made by `options()` share: the queue, the futures and
    the thread that follows them."""

    def __init__(
        self, path: str, timeout: float, python: str, local_hogs: int, local_cores: int | None, pool: str
    ) -> None:
        self.path = path
        self.python = python
        self.submit_db = open_database(path, timeout)
        self.submit_lock = threading.RLock()
        self.poll_db = open_database(path, timeout)
        self.futures: dict[int, HogFuture] = {}
        self.files_left: dict[str, int] = {}  # calls file -> calls not yet resolved
        self.file_of: dict[int, str] = {}
        self.state_lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.batch: _Pending | None = None
        self.batch_thread: int | None = None
        self.local = None
        if local_hogs:
            from hog.api.local import LocalHogs

            self.local = LocalHogs(self.poll_db, local_hogs, local_cores, pool)
        self.thread = threading.Thread(target=self._follow, name="hog-executor", daemon=True)
        self.thread.start()

    # -- submitting ------------------------------------------------------------------------

    def add(self, calls: list[tuple[HogFuture, bytes, TaskOptions, str]]) -> None:
        """Submit calls in one transaction: all of them, or none (and the error is raised)."""
        calls = [call for call in calls if not call[0].cancelled()]  # cancelled inside a batch
        if not calls:
            return
        from hog.store.workflows import Step, submit_steps

        path, rows = write_calls(self.submit_db.files, [record for _, record, _, _ in calls], self.python)
        try:
            steps: list[tuple[TaskOptions, list]] = []
            for (_, _, options, name), row in zip(calls, rows, strict=True):
                options = options if options.name is not None else options.updated(name=name)
                if steps and steps[-1][0] == options:
                    steps[-1][1].append((*row, None, None))
                else:
                    steps.append((options, [(*row, None, None)]))
            checked = [Step(options.resolved(), tasks) for options, tasks in steps]
            with self.submit_lock:
                ranges = submit_steps(self.submit_db, checked)
        except BaseException:
            remove_calls_file(path)
            raise
        ids = [task_id for first, last in ranges for task_id in range(first, last + 1)]
        with self.state_lock:
            for (future, _, _, _), task_id in zip(calls, ids, strict=True):
                future.task_id = task_id
                self.futures[task_id] = future
                self.file_of[task_id] = path
            self.files_left[path] = len(ids)
        self.wake.set()

    def cancel_task(self, task_id: int) -> bool:
        """Cancel a call's task; False when it had already ended."""
        from hog.store.queue import cancel

        with self.submit_lock:
            outcome = cancel(self.submit_db, [task_id])
        return bool(outcome.cancelled or outcome.killing)

    # -- following ---------------------------------------------------------------------------

    def _follow(self) -> None:
        interval = POLL_MIN_S
        last_pass = next_sweep = 0.0
        while True:
            woken = self.wake.wait(interval)
            self.wake.clear()
            with self.state_lock:
                ids = list(self.futures)
                if self.stopping and not ids:
                    break
            ended = 0
            try:
                now = time.monotonic()
                if len(ids) > POLL_WINDOW and now < next_sweep:
                    ids = ids[:POLL_WINDOW]  # submitted in order: the lowest ids first
                elif ids:
                    next_sweep = now + SWEEP_S
                if ids:
                    ended = self._resolve(ids)
                # Soon after a submit (hogs may be needed), else every LOCAL_PASS_S.
                if self.local is not None and now - last_pass >= (LOCAL_WOKEN_S if woken else LOCAL_PASS_S):
                    self.local.one_pass()
                    last_pass = now
            except HogError as error:  # a locked or busy queue: try again on the next round
                sys.stderr.write(f"hog executor: {error}\n")
            interval = POLL_MIN_S if woken or ended else min(POLL_MAX_S, interval * 1.5)
        self._close()

    def _resolve(self, ids: list[int]) -> int:
        outcomes = ended_calls(self.poll_db, ids)
        for outcome in outcomes:
            with self.state_lock:
                future = self.futures.pop(outcome.task_id)
                path = self.file_of.pop(outcome.task_id)
                self.files_left[path] -= 1
                finished = not self.files_left[path]
                if finished:
                    del self.files_left[path]
            if outcome.state == "cancelled" and outcome.ok is None:
                Future.cancel(future)
            else:
                ok, value = outcome_value(outcome, f"task {outcome.task_id}")
                if future.set_running_or_notify_cancel():
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
            if finished:  # after its last outcome is read: a large one is a file beside it
                remove_calls_file(path)
        return len(outcomes)

    def _close(self) -> None:
        if self.local is not None:
            self.local.stop()
        self.poll_db.close()
        with self.submit_lock:
            self.submit_db.close()

    def stop(self, wait: bool) -> None:
        self.stopping = True
        self.wake.set()
        if wait:
            self.thread.join()


def _stop_at_exit(reference: "weakref.ref[_Engine]") -> None:
    engine = reference()
    if engine is not None and not engine.stopping:
        with contextlib.suppress(Exception):
            engine.stop(wait=False)
            if engine.local is not None:
                engine.local.stop()


class HogExecutor(Executor):
    """Runs Python calls as tasks of the queue at `path`, on its hogs.

    local_hogs: start up to this many hogs of the executor's pool on this machine while calls
    wait, stopped at shutdown (0: rely on a monitor or hogs started elsewhere); local_cores: cores of each
    (default: this machine's divided among them). Other keywords are task options for every
    call (TaskOptions: cores, gpus, mem, time, priority, retries, name, stdout, stderr, cwd,
    environment, kind); `options()` makes a view with some of them changed.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        local_hogs: int = 0,
        local_cores: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        python: str | None = None,
        **task_options: Any,
    ) -> None:
        if not isinstance(local_hogs, int) or local_hogs < 0:
            raise UsageError(f"local_hogs={local_hogs!r}: give a whole number of hogs, 0 or more")
        TaskOptions().updated(**task_options)  # an unknown option is refused before anything starts
        self._given = task_options
        pool = check_pool(str(task_options.get("pool", DEFAULT_POOL)), "pool=")
        self._engine = _Engine(
            os.fspath(path), timeout, python or sys.executable, local_hogs, local_cores, pool
        )
        try:
            self._options = with_kind(self._engine.submit_db, task_options)
        except HogError:
            self._engine.stop(wait=True)
            raise
        atexit.register(_stop_at_exit, weakref.ref(self._engine))

    @property
    def queue_path(self) -> str:
        return self._engine.path

    @property
    def task_options(self) -> TaskOptions:
        return self._options

    def options(self, **changes: Any) -> "HogExecutor":
        """A view of this executor whose calls ask for other resources, e.g.
        `executor.options(cores=4, time="30m").submit(fn, x)`; it shares the queue and thread."""
        view = object.__new__(HogExecutor)
        view._given = {**self._given, **changes}
        view._engine = self._engine
        with self._engine.submit_lock:
            view._options = with_kind(self._engine.submit_db, view._given)
        return view

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> HogFuture:
        """Run fn(*args, **kwargs) as a task; a future of its value. An unpicklable function or
        argument is a UsageError here, saying which."""
        engine = self._engine
        if engine.stopping:
            raise RuntimeError("cannot submit after shutdown")
        if not callable(fn):
            raise UsageError(f"{fn!r} is not callable: give a function")
        future = HogFuture(engine)
        record = pickled_call((fn, args, kwargs))
        name = getattr(fn, "__qualname__", type(fn).__qualname__)
        call = (future, record, self._options, name)
        if engine.batch is not None and engine.batch_thread == threading.get_ident():
            engine.batch.calls.append(call)
        else:
            engine.add([call])
        return future

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Submit every call made inside the block in one transaction, at its end; nothing is
        submitted if the block raises (its futures are cancelled)."""
        engine = self._engine
        if engine.batch is not None and engine.batch_thread == threading.get_ident():
            yield  # nested: the outer block submits
            return
        pending = _Pending()
        engine.batch, engine.batch_thread = pending, threading.get_ident()
        try:
            yield
        except BaseException:
            for future, *_ in pending.calls:
                Future.cancel(future)
            raise
        finally:
            engine.batch, engine.batch_thread = None, None
        try:
            engine.add(pending.calls)
        except BaseException as error:
            for future, *_ in pending.calls:
                if future.set_running_or_notify_cancel():
                    future.set_exception(error)
            raise

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
    ) -> Iterator[Any]:
        """Like Executor.map, every call submitted in one transaction; one task per call
        (`chunksize` is accepted for compatibility and ignored)."""
        with self.batch():
            futures = [self.submit(fn, *args) for args in zip(*iterables)]  # noqa: B905 (as Executor.map)
        return _in_order(futures, timeout)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop following futures once they are resolved, and stop the local hogs. With
        `cancel_futures`, cancel the calls that have not ended; with `wait`, return when done."""
        engine = self._engine
        if cancel_futures:
            with engine.state_lock:
                pending = list(engine.futures.values())
            for future in pending:
                future.cancel()
        engine.stop(wait)


def _in_order(futures: list[HogFuture], timeout: float | None) -> Iterator[Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    futures.reverse()
    try:
        while futures:
            future = futures.pop()
            if deadline is None:
                yield future.result()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FuturesTimeout()
                yield future.result(left)
    finally:
        for future in futures:
            future.cancel()
