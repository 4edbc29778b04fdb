"""Where a task's stdout and stderr go."""

import os

from hog.errors import UsageError
from hog.store.paths import QueueFiles

PLACEHOLDERS = ("id", "attempt", "name", "index", "entry")


def check_pattern(pattern: str, option: str) -> str:
    """Refuse a pattern with placeholders other than {id}, {attempt}, {name}, {index} and {entry}."""
    import string

    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None]
    except ValueError as error:
        raise UsageError(f"bad {option} pattern {pattern!r}: {error}; write {{{{ for a brace") from None
    unknown = [name for name in fields if name not in PLACEHOLDERS]
    if unknown:
        raise UsageError(
            f"bad {option} pattern {pattern!r}: unknown placeholder {{{unknown[0]}}}; "
            "use {id}, {attempt}, {name}, {index} or {entry}"
        )
    if "\0" in pattern:
        raise UsageError(f"bad {option} pattern: it contains a NUL byte")
    return pattern


def output_path(
    db_path: str,
    pattern: str | None,
    cwd: str,
    task_id: int,
    attempt: int,
    name: str | None,
    stream: str,
    array_index: int | None = None,
    entry: str | None = None,
    reading: bool = False,
) -> str:
    """The file for `stream` ("out" or "err") of one attempt ({index} and {entry}: of arrays),
    where a hog writes it; `reading`: where to read it, also from where older hogs wrote it."""
    if not pattern:
        files = QueueFiles(db_path)
        if reading:
            return files.task_output_found(task_id, attempt, stream)
        return files.task_output(task_id, attempt, stream)
    path = pattern.format(
        id=task_id,
        attempt=attempt,
        name=name or f"task{task_id}",
        index="" if array_index is None else array_index,
        entry=entry or "",
    )
    return os.path.join(cwd, path)
