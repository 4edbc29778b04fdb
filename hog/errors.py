"""Errors that the core raises and the CLI turns into one-line messages."""


class HogError(Exception):
    """A problem the user can act on; its message says what and how to fix it."""

    exit_code = 1


class UsageError(HogError):
    """Bad input: a malformed duration, an unknown id, an empty command."""

    exit_code = 2


class NotFoundError(UsageError):
    """An id that names no task."""


class DatabaseError(HogError):
    """The queue database cannot be used: missing, foreign, newer, read-only, disk full."""


class DatabaseGoneError(DatabaseError):
    """The database file was deleted or replaced while open: this process can never write it again."""


class LockTimeoutError(DatabaseError):
    """The write lock was not obtained within the timeout."""


class InsecureDatabaseError(DatabaseError):
    """Users other than the owner (and its group, when asked for) can write the database."""


class MonitorRunningError(HogError):
    """Another monitor already serves this database."""


class CallError(HogError):
    """A Python call (hog.HogExecutor) ended without its own result: its task failed, timed out or
    was killed, or what it returned cannot be pickled."""
