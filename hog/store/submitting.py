"""Tasks into the queue: a submit's options, the environment it captures, and how text is stored.

Every submit (the CLI's, `run`'s, slurm-hog-shell's, the library's) adds one `submissions` row of
shared settings and a `tasks` row per command in one transaction. slurm-hog-shell imports this
and not queue.py: it starts once per make recipe.
"""

import os
import time
from collections.abc import Iterable, Iterator

import apsw

from hog import gpushare
from hog.errors import UsageError
from hog.pools import DEFAULT_POOL, check_pool
from hog.records import NamedTuple
from hog.store import states
from hog.store.counts import count_tasks
from hog.store.db import Database

# Variables that describe the submitting shell's own node and job or the hog's placement: the hog
# sets its own, so a submit from inside an allocation must not pin tasks to that allocation's
# devices, nor send them to the login node's TMPDIR.
_NOT_CAPTURED_PREFIXES = ("SLURM_", "SLURMD_", "HOG_")
_NOT_CAPTURED = {
    "TMPDIR",
    "HOSTNAME",
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "OMP_NUM_THREADS",
    "SLURM_HOG_DB",
}


class SubmitOptions(NamedTuple):
    cores: int = 1
    gpus: int = 0  # in GPU units (hog.gpushare): whole GPUs or a share of one
    mem_bytes: int | None = None
    time_limit_s: float | None = None
    priority: int = 0
    max_retries: int = 0
    name: str | None = None
    stdout_pattern: str | None = None
    stderr_pattern: str | None = None
    cwd: str = ""
    environment: dict[str, str] | None = None
    kind: str | None = None  # the kind it was submitted with
    pool: str = DEFAULT_POOL


def captured_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    source = os.environ if environ is None else environ
    return {
        key: value
        for key, value in source.items()
        if key not in _NOT_CAPTURED and not key.startswith(_NOT_CAPTURED_PREFIXES)
    }


def storable(text: str) -> str | bytes:
    """`text` as a column holds it: itself when it is UTF-8 text, else its exact bytes (a BLOB).

    Python gives bytes that are not UTF-8 (in a variable, an argument, a folder's name) as lone
    surrogates, which sqlite's text cannot hold; stored as bytes, the task gets exactly those.
    """
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(text)
    return text


def stored_text(value: object) -> object:
    """A column written by `storable` as Python's text again; other values as they are."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def readable(text: str) -> str:
    """`text` for display: a byte that is not UTF-8 is written as an escape (\\xff)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def encode_environment(environment: dict[str, str]) -> str | bytes:
    """NAME=value pairs joined by NUL, which no variable can hold; sorted, so equal ones match."""
    return storable("\0".join(f"{name}={value}" for name, value in sorted(environment.items())))


def decode_environment(variables: str | bytes) -> dict[str, str]:
    text = os.fsdecode(variables) if isinstance(variables, bytes) else variables
    return dict(pair.split("=", 1) for pair in text.split("\0") if pair)


def encode_argv(argv: list[str]) -> str:
    """`argv` as json.dumps writes it, without importing json, which imports re: a third of the
    start of slurm-hog-shell, which make runs once per recipe."""
    try:
        from _json import encode_basestring_ascii
    except ImportError:  # not CPython
        import json

        return json.dumps(argv)
    return "[" + ", ".join(map(encode_basestring_ascii, argv)) + "]"


def decode_argv(text: str | None) -> list[str] | None:
    if not text:
        return None
    import json

    return json.loads(text)


def submit(
    db: Database,
    commands: Iterable[tuple[str, str | None]],
    options: SubmitOptions,
    now: float | None = None,
) -> tuple[int, int]:
    """Add tasks (command text, JSON argv or None) in one transaction; return first and last id.

    `commands` may raise UsageError part way (a bad line in a file): nothing is then added.
    """
    now = time.time() if now is None else now
    variables = encode_environment(options.environment or {})
    with db.transaction() as connection:
        submission_id = add_submission(connection, options, variables, now)
        counter = [0]

        def rows() -> Iterator[tuple]:
            for command, argv in commands:
                counter[0] += 1
                yield (submission_id, command, argv, options.priority, options.pool)

        connection.executemany(
            "INSERT INTO tasks(submission_id, command, argv, priority, pool) VALUES (?,?,?,?,?)", rows()
        )
        if not counter[0]:
            raise UsageError("no command to submit: give a command, or a file with at least one")
        # Under the write lock the new ids are contiguous.
        last = connection.last_insert_rowid()
        first = last - counter[0] + 1
        count_tasks(connection, states.WAITING, last - first + 1)
    return first, last


def add_submission(
    connection: apsw.Connection,
    options: SubmitOptions,
    variables: str | bytes,
    now: float,
    bundle: str | None = None,
) -> int:
    """The row of one submit's shared settings, with its encoded environment `variables`."""
    connection.execute(
        "INSERT INTO submissions(submitted_at, user, host, cwd, environment_id, name, cores,"
        " gpus, gpu_split, mem_bytes, time_limit_s, max_retries, stdout_pattern, stderr_pattern, bundle,"
        " kind, pool) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            now,
            readable(os.environ.get("USER", "")) or None,
            os.uname().nodename,
            storable(options.cwd),
            _environment_id(connection, variables),
            options.name,
            options.cores,
            *gpushare.columns(options.gpus),
            options.mem_bytes,
            options.time_limit_s,
            options.max_retries,
            *(
                None if pattern is None else storable(pattern)
                for pattern in (options.stdout_pattern, options.stderr_pattern)
            ),
            bundle,
            options.kind,
            check_pool(options.pool),  # its tasks' rows may hold it written into their statement
        ),
    )
    return connection.last_insert_rowid()


def _environment_id(connection: apsw.Connection, variables: str | bytes) -> int:
    for (environment_id,) in connection.execute(
        "SELECT id FROM environments WHERE variables = ?", (variables,)
    ):
        return environment_id
    connection.execute("INSERT INTO environments(variables) VALUES (?)", (variables,))
    return connection.last_insert_rowid()
