"""What a task asks for, checked once for the library and the command line alike.

`submit` on the command line builds a TaskOptions from its options and calls `resolved`, as the
library does: the two refuse the same input with the same words (the option's name spelled as
each caller spells it: `--cwd` on the command line, `cwd=` in Python).
"""

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

from hog.errors import UsageError
from hog.pools import DEFAULT_POOL, check_pool
from hog.store import submitting
from hog.timeutil import parse_duration, parse_size

if TYPE_CHECKING:
    from hog.store.db import Database

# Bounds far beyond any node, that keep sums of many tasks' needs within sqlite's integers.
CORES_RANGE = (1, 100_000)
PRIORITY_RANGE = (-1_000_000, 1_000_000)
RETRIES_RANGE = (0, 1000)


def python_spelling(field: str) -> str:
    return f"{field}="


@dataclass(frozen=True)
class TaskOptions:
    """A task's needs and settings; every field has the command line's default.

    gpus: whole GPUs (2), or a share of one that packs tasks onto it (0.5, "1/3"), as --gpus.
    mem: bytes, or a size as text ("500M", "4G"; a bare number in text is MiB, as in SLURM).
    time: the time limit in seconds, or a duration as text ("30m", "1h30m"); None: no limit.
    environment: the task's variables; None: the submitting process's own (os.environ).
    cwd: its working folder; None: the submitting process's.
    """

    cores: int = 1
    gpus: int | float | str = 0
    mem: int | str | None = None
    time: float | str | None = None
    priority: int = 0
    retries: int = 0
    name: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    cwd: str | None = None
    environment: Mapping[str, str] | None = None
    kind: str | None = None  # recorded with the tasks; its options are laid under by with_kind
    pool: str = DEFAULT_POOL  # the pool of hogs that runs the tasks

    def updated(self, **changes: object) -> "TaskOptions":
        """These options with some fields changed; an unknown field is a UsageError."""
        known = {field.name for field in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise UsageError(f"no task option {unknown[0]!r}: use {', '.join(sorted(known))}")
        return replace(self, **changes)  # type: ignore[arg-type]

    def resolved(self, spell: Callable[[str], str] = python_spelling) -> submitting.SubmitOptions:
        """The store's options, every value checked; `spell` names a field in messages."""
        if self.name is not None and submitting.readable(self.name) != self.name:
            raise UsageError(f"{spell('name')} holds a byte that is not UTF-8: give a name in plain text")
        cwd = os.path.abspath(self.cwd or os.getcwd())
        if not os.path.isdir(cwd):
            raise UsageError(f"{spell('cwd')} {submitting.readable(self.cwd or cwd)}: no such folder")
        from hog.pilot.outputs import check_pattern

        for field in ("stdout", "stderr"):
            pattern = getattr(self, field)
            if pattern is not None:
                check_pattern(pattern, spell(field))
        environment = (
            submitting.captured_environment() if self.environment is None else dict(self.environment)
        )
        return submitting.SubmitOptions(
            cores=_whole(self.cores, CORES_RANGE, spell("cores")),
            gpus=_gpus(self.gpus, spell("gpus")),
            mem_bytes=_size(self.mem, spell("mem")),
            time_limit_s=_duration(self.time, spell("time")),
            priority=_whole(self.priority, PRIORITY_RANGE, spell("priority")),
            max_retries=_whole(self.retries, RETRIES_RANGE, spell("retries")),
            name=self.name,
            stdout_pattern=self.stdout,
            stderr_pattern=self.stderr,
            cwd=cwd,
            environment=environment,
            kind=self.kind,
            pool=check_pool(str(self.pool), spell("pool")),
        )


# A kind's options, by submit's parameter names (hog.store.kinds), as TaskOptions fields.
KIND_FIELDS = {
    "cores": "cores",
    "gpus": "gpus",
    "mem": "mem",
    "time_limit": "time",
    "priority": "priority",
    "retries": "retries",
    "name": "name",
    "stdout_pattern": "stdout",
    "stderr_pattern": "stderr",
    "cwd": "cwd",
    "pool": "pool",
}
_WHOLE_FIELDS = ("cores", "priority", "retries")


def with_kind(db: "Database", given: Mapping[str, object]) -> TaskOptions:
    """The options given, over those of the kind they name (kind=), as `submit --kind`: what is
    given wins. A kind's options that tasks of the library do not have are left out."""
    fields_given = dict(given)
    name = fields_given.get("kind")
    if name is not None:
        from hog.store.kinds import get_kind

        for option, typed in get_kind(db, str(name)).options.items():
            field = KIND_FIELDS.get(option)
            if field is None or field in fields_given:
                continue
            if field in _WHOLE_FIELDS:
                try:
                    typed = int(str(typed))
                except ValueError:
                    raise UsageError(
                        f"kind {name!r}: {field} {typed!r} is not a whole number; set the kind again with "
                        f"`slurm-hog kind set {name} ...`"
                    ) from None
            fields_given[field] = typed
    return TaskOptions().updated(**fields_given)


def _whole(value: object, bounds: tuple[int, int], what: str) -> int:
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{what} {value!r}: give a whole number from {low} to {high}")
    return value


def _gpus(value: int | float | str, what: str) -> int:
    """GPU units (hog.gpushare) of an amount given as --gpus takes it."""
    from hog.gpushare import parse_gpus

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f"{what} {value!r}: give whole GPUs (2) or a share of one (0.5, '1/3')")
    return parse_gpus(value if isinstance(value, str) else repr(value), what)


def _size(value: int | str | None, what: str) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        return parse_size(value, what=what)
    raise UsageError(f"{what} {value!r}: give bytes as a whole number, or a size like '4G'")


def _duration(value: float | str | None, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_duration(value, what=what)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise UsageError(f"{what} {value!r}: give seconds above 0, or a duration like '30m'")
