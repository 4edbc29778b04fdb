"""Pool names: a task names the pool of hogs it needs, a hog and a monitor serve one pool.

A name is a word of letters, digits, `_`, `.` and `-` (up to 64): it becomes part of the
monitor's file names beside the queue (FILE.monitor-gpu.pid) and is written into SQL as it is.
"""

from hog.errors import UsageError

DEFAULT_POOL = "default"
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_NAME = _WORD | {".", "-"}  # checked by hand: re would be a fifth of slurm-hog-shell's start


def check_pool(name: str, what: str = "--pool") -> str:
    """`name` if it is a pool name, else a UsageError saying which names are."""
    if not (0 < len(name) <= 64 and name[0] in _WORD and _NAME.issuperset(name)):
        raise UsageError(
            f"bad {what} {name!r}: a pool name is up to 64 letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-' (e.g. gpu, big-mem)"
        )
    return name
