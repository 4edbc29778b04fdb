"""Python calls on the submitting side: pickled into a calls file beside the queue, and their
outcomes turned back into return values and exceptions.

One file per submission of calls (one `submit`, one `map`, one `batch()`), in FILE.calls/: its
header (the submitter's sys.path, so the node imports what the submitter imports), then each
call pickled with cloudpickle (lambdas, closures and functions of __main__ go by value). Each
task's command names the file and its call's offset and length: a thousand calls cost one file.
"""

import contextlib
import glob
import os
import pickle
import shlex
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from hog.api.worker import HEADER, worker_argv
from hog.errors import CallError, UsageError
from hog.store.calls import CallOutcome
from hog.store.paths import QueueFiles
from hog.store.submitting import encode_argv, readable


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a call on a node: the __cause__ of that exception."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


Call = tuple[Callable[..., Any], tuple, dict]


def pickled_call(call: Call) -> bytes:
    """The call pickled; UsageError saying which part cannot be, and why."""
    import cloudpickle

    from hog.api.byvalue import dumps

    try:
        return dumps(call)
    except Exception as error:
        function, args, kwargs = call
        name = getattr(function, "__qualname__", type(function).__qualname__)
        parts = [("the function", function)]
        parts += [(f"argument {number}", arg) for number, arg in enumerate(args, 1)]
        parts += [(f"keyword argument {key}", value) for key, value in kwargs.items()]
        for what, part in parts:
            try:
                cloudpickle.dumps(part)
            except Exception as reason:
                raise UsageError(
                    f"cannot send a call to {name} to the queue: {what} cannot be pickled "
                    f"({type(reason).__name__}: {reason})"
                ) from None
        raise UsageError(
            f"cannot send a call to {name} to the queue: {type(error).__name__}: {error}"
        ) from None


def write_calls(
    files: QueueFiles, records: Sequence[bytes], python: str
) -> tuple[str, list[tuple[str, str]]]:
    """Write the pickled calls into a new calls file; its path and each call's command row."""
    files.make_folders(files.calls)
    path = os.path.join(files.calls, f"{uuid.uuid4().hex}.calls")
    header = pickle.dumps([os.path.abspath(entry) if entry else entry for entry in sys.path])
    rows = []
    fd = files.open_beside(path, os.O_WRONLY | os.O_EXCL)
    with os.fdopen(fd, "wb") as handle:
        handle.write(HEADER.pack(len(header)) + header)
        offset = HEADER.size + len(header)
        for record in records:
            handle.write(record)
            argv = worker_argv(python, path, offset, len(record))
            rows.append((readable(shlex.join(argv)), encode_argv(argv)))
            offset += len(record)
    return path, rows


def outcome_value(outcome: CallOutcome, task_text: str) -> tuple[bool, Any]:
    """(True, value) or (False, exception) for a call's ended task."""
    if outcome.ok is not None:
        record = outcome.value
        if record is None:
            try:
                with open(outcome.path or "", "rb") as handle:
                    record = handle.read()
            except OSError as error:
                return False, CallError(
                    f"{task_text}: its result file {outcome.path} is gone: {error.strerror}"
                )
        try:
            loaded = pickle.loads(record)
        except Exception as error:
            return False, CallError(f"{task_text}: its outcome cannot be unpickled here: {error}")
        if outcome.ok:
            return True, loaded
        exception, text = loaded
        exception.__cause__ = RemoteTraceback(text)
        return False, exception
    how = f"exit status {outcome.exit_code}" if outcome.signal is None else f"signal {outcome.signal}"
    if outcome.state == "cancelled":
        return False, CallError(
            f"{task_text} was cancelled" + (f": {outcome.reason}" if outcome.reason else "")
        )
    tail = (outcome.stderr_tail or "").strip()
    return False, CallError(
        f"{task_text} {outcome.state} ({how}) without a result"
        + (f"; its stderr ended: {tail}" if tail else "")
    )


def remove_calls_file(path: str) -> None:
    """The calls file, its checkpoints and its large results."""
    for name in [path, *glob.glob(glob.escape(path) + ".*")]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
