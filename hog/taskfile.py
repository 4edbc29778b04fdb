"""Reading a file of tasks: one shell command per line."""

import os
import stat
import sys
from collections.abc import Iterator
from typing import BinaryIO

from hog.errors import UsageError

MAX_LINE_BYTES = 1 << 20


def read_task_file(path: str) -> Iterator[tuple[str, None]]:
    """(command, None) per task line; blank lines and # comments are skipped.

    The file is opened now; a pipe (stdin, a FIFO) is read to its end now, into a temporary file:
    its lines are read inside the caller's write transaction, which must not wait on a slow
    writer while every hog waits for the lock. Raises UsageError naming the line of the first
    bad one; the caller's transaction then adds nothing.
    """
    try:
        handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            handle = _spooled(handle)
    except OSError as error:
        raise UsageError(f"cannot read --file {path}: {error.strerror}") from None
    return _task_lines(handle, "stdin" if path == "-" else path, path)


def _spooled(handle: BinaryIO) -> BinaryIO:
    """A temporary file holding everything `handle` (a pipe) gives until its end."""
    import shutil
    import tempfile

    spool = tempfile.TemporaryFile()  # noqa: SIM115
    try:
        shutil.copyfileobj(handle, spool, 1 << 20)
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    spool.seek(0)
    return spool


def _task_lines(handle: BinaryIO, where: str, path: str) -> Iterator[tuple[str, None]]:
    try:
        for number, raw in enumerate(handle, 1):
            if len(raw) > MAX_LINE_BYTES:
                raise UsageError(
                    f"{where} line {number} is longer than {MAX_LINE_BYTES} bytes: "
                    "put such a command in a script; nothing was added"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(
                    f"{where} line {number} is not valid UTF-8: fix its encoding; nothing was added"
                ) from None
            if number == 1:
                line = line.removeprefix("\ufeff")  # the byte-order mark some editors write first
            command = line.rstrip("\r\n")
            stripped = command.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if "\0" in command:
                raise UsageError(f"{where} line {number} contains a NUL byte: remove it; nothing was added")
            yield command, None
    except OSError as error:
        raise UsageError(f"cannot read --file {path}: {error.strerror}; nothing was added") from None
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
