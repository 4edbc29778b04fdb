"""The queue as a Python object: open or create it, submit, read, cancel, retry, wait.

Every method returns plain values or the store's records (NamedTuples) and raises the HogError
family; the command line calls the same functions, so the two never drift.
"""

import shlex
import time
from collections.abc import Iterable, Mapping, Sequence

from hog.api.options import TaskOptions, with_kind
from hog.errors import UsageError
from hog.store import doorbell, states, submitting
from hog.store import queue as store
from hog.store.db import DEFAULT_TIMEOUT_S, Database, create_database, open_database
from hog.store.following import MIN_LOOK_S

Command = str | Sequence[str]  # a shell command, or an exact argv (program first)
Ids = int | Iterable[int]


class Queue:
    """One queue database.

    >>> q = Queue("queue.sqlite", create=True)
    >>> task_id = q.submit("echo hello", cores=2, time="10m")
    """

    def __init__(
        self, path: str, *, create: bool = False, group: str | None = None, timeout: float = DEFAULT_TIMEOUT_S
    ) -> None:
        """Open the queue at `path`; with `create`, make it first when it does not exist (mode
        0600, or 0660 for `group`). `timeout`: seconds to wait for its write lock."""
        import os

        if create and not os.path.lexists(path):
            create_database(path, group=group, timeout_s=timeout)
        self.path = path
        self.db: Database = open_database(path, timeout)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- submitting ----------------------------------------------------------------------------

    def submit(self, command: Command, **options: object) -> int:
        """Add one task; its id. `command`: a shell command, or a list of words run exactly.

        Options (TaskOptions): cores, gpus, mem, time, priority, retries, name, stdout, stderr,
        cwd, environment, kind (its options under those given); and after, after_any (ids or
        names it waits for), hold, bundle.
        """
        return self.submit_many([command], **options)[0]

    def submit_many(self, commands: Iterable[Command], **options: object) -> list[int]:
        """Add one task per command in one transaction (all or none); their ids."""
        workflow, task_options = self._split_workflow(options)
        return self.submit_tasks([command_row(command) for command in commands], task_options, **workflow)

    def submit_array(self, command: Command, indexes: range | Iterable[int], **options: object) -> list[int]:
        """One task per index; `{index}` in the command and in stdout/stderr is replaced."""
        from hog.store.workflows import ArrayTasks, NewTask, Step, submit_steps

        workflow, task_options = self._split_workflow(options)
        text, argv = command_row(command)
        if isinstance(indexes, range) and indexes.step > 0 and len(indexes):
            tasks: Iterable = ArrayTasks([(text, argv)], indexes)
        else:
            tasks = [
                NewTask(text.replace("{index}", str(i)), argv and argv.replace("{index}", str(i)), i)
                for i in indexes
            ]
        step = Step(task_options.resolved(), tasks, _after(workflow), (), *_held(workflow))
        ((first, last),) = submit_steps(self.db, [step])
        return list(range(first, last + 1))

    def submit_tasks(
        self,
        commands: Iterable[tuple[str, str | None]],
        options: TaskOptions,
        *,
        after: Ids | Iterable[int | str] = (),
        after_any: Ids | Iterable[int | str] = (),
        hold: bool = False,
        bundle: str | None = None,
    ) -> list[int]:
        """Add tasks given as (command text, JSON argv or None); their ids."""
        submit_options = options.resolved()
        workflow = {"after": after, "after_any": after_any, "hold": hold, "bundle": bundle}
        if not any(workflow.values()):
            first, last = submitting.submit(self.db, commands, submit_options)
        else:
            from hog.store.workflows import Step, submit_steps

            tasks = ((text, argv, None, None) for text, argv in commands)
            step = Step(submit_options, tasks, _after(workflow), (), *_held(workflow))
            ((first, last),) = submit_steps(self.db, [step])
        return list(range(first, last + 1))

    def _split_workflow(self, options: Mapping[str, object]) -> tuple[dict, TaskOptions]:
        """(after, after_any, hold, bundle as given; the task options, with their kind's)."""
        workflow = {key: options[key] for key in _WORKFLOW if key in options}
        return workflow, with_kind(self.db, {k: v for k, v in options.items() if k not in _WORKFLOW})

    # -- reading -------------------------------------------------------------------------------

    def task(self, task_id: int) -> store.TaskDetail:
        """Everything about one task, with its attempts; NotFoundError if there is none."""
        return store.get_tasks(self.db, [task_id])[0]

    def attempts(self, task_id: int) -> list[store.Attempt]:
        """The runs of one task, oldest first."""
        return self.task(task_id).attempts

    def tasks(
        self,
        ids: Ids = (),
        *,
        state: str | Iterable[str] = (),
        name: str | None = None,
        limit: int | None = None,
    ) -> list[store.TaskRow]:
        """Tasks oldest first: those of `ids` (default: all), in `state`, named `name`."""
        wanted = (state,) if isinstance(state, str) else tuple(state)
        unknown = [s for s in wanted if s not in states.TASK_STATES]
        if unknown:
            raise UsageError(f"{unknown[0]!r} is not a task state: use {', '.join(states.TASK_STATES)}")
        return list(store.iter_tasks(self.db, wanted, name, limit, tuple(_ids(ids))))

    def states(self, ids: Ids) -> dict[int, str]:
        """The state of each task; NotFoundError names ids that do not exist."""
        task_ids = _ids(ids)
        store.require_ids_exist(self.db, task_ids)
        return store.task_states(self.db, task_ids)

    def status(self) -> store.Status:
        """Counts of tasks by state and of hogs, the recent rate and the time to empty."""
        return store.status(self.db)

    # -- changing ------------------------------------------------------------------------------

    def cancel(self, ids: Ids) -> store.CancelOutcome:
        """Cancel tasks: waiting ones at once, running ones are killed by their hogs."""
        task_ids = _ids(ids)
        if not task_ids:
            raise UsageError("cancel: give the ids of the tasks to cancel")
        return store.cancel(self.db, task_ids)

    def retry(self, ids: Ids) -> list[int]:
        """Put failed, timed-out or cancelled tasks back in the queue; the ids requeued."""
        task_ids = _ids(ids)
        if not task_ids:
            raise UsageError("retry: give the ids of the tasks to retry")
        return store.retry(self.db, task_ids)[0]

    def wait(self, ids: Ids, *, timeout: float | None = None, poll: float = 1.0) -> dict[int, str]:
        """Block until the tasks have ended; their end states. TimeoutError after `timeout` s.
        Ends are heard through the queue's doorbell; `poll` (s) is how often to look at least."""
        task_ids = _ids(ids)
        store.require_ids_exist(self.db, task_ids)
        deadline = None if timeout is None else time.monotonic() + timeout
        bell = doorbell.Listener(self.db.files.doorbell)
        try:
            while True:
                looked = time.monotonic()
                bell.mark()
                found = store.task_states(self.db, task_ids)
                if all(state in states.ENDED_STATES for state in found.values()):
                    return {task_id: found[task_id] for task_id in task_ids}
                if deadline is not None and time.monotonic() >= deadline:
                    active = sum(state in states.ACTIVE_STATES for state in found.values())
                    raise TimeoutError(f"{active} of {len(task_ids)} tasks had not ended after {timeout} s")
                until = looked + poll if deadline is None else min(looked + poll, deadline)
                bell.wait_for(doorbell.ENDED, until, not_before_mono=looked + MIN_LOOK_S)
        finally:
            bell.close()


def command_row(command: Command) -> tuple[str, str | None]:
    """(text, JSON argv or None) for a shell command or an exact argv."""
    if isinstance(command, str):
        if not command.strip():
            raise UsageError("the command is empty: give the program to run")
        if "\0" in command:
            raise UsageError("the command contains a NUL byte, which no program can receive")
        return submitting.readable(command), None
    words = [str(word) for word in command]
    if not words or not words[0]:
        raise UsageError("the program name is empty: give the program to run first")
    if any("\0" in word for word in words):
        raise UsageError("the command contains a NUL byte, which no program can receive")
    return submitting.readable(shlex.join(words)), submitting.encode_argv(words)


_WORKFLOW = ("after", "after_any", "hold", "bundle")


def _after(workflow: Mapping[str, object]) -> tuple[tuple[int | str, str], ...]:
    """Step's `after`: parents as ids or names with their kind."""
    parents: list[tuple[int | str, str]] = []
    for key, kind in (("after", "ok"), ("after_any", "any")):
        value = workflow.get(key) or ()
        items = [value] if isinstance(value, (int, str)) else list(value)  # type: ignore[call-overload]
        parents += [(item, kind) for item in items]
    return tuple(parents)


def _held(workflow: Mapping[str, object]) -> tuple[bool, str | None]:
    bundle = workflow.get("bundle")
    return bool(workflow.get("hold")) or bundle is not None, bundle  # type: ignore[return-value]


def _ids(ids: Ids) -> list[int]:
    task_ids = [ids] if isinstance(ids, int) else list(ids)
    for task_id in task_ids:
        if not isinstance(task_id, int) or isinstance(task_id, bool) or task_id < 1:
            raise UsageError(f"{task_id!r} is not a task id: ids are whole numbers from 1")
    return task_ids
