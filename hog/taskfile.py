"""Reading a file of tasks: one shell command per line."""

import sys
from collections.abc import Iterator

from hog.errors import UsageError

MAX_LINE_BYTES = 1 << 20


def read_task_file(path: str) -> Iterator[tuple[str, None]]:
    """(command, None) per task line; blank lines and # comments are skipped.

    Raises UsageError naming the line of the first bad one; the caller's transaction then adds
    nothing.
    """
    try:
        handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as error:
        raise UsageError(f"cannot read --file {path}: {error.strerror}") from None
    where = "stdin" if path == "-" else path
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
