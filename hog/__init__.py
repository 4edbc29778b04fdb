"""slurm-hog: a pilot-job queue for HPC clusters on one sqlite file.

The library (README's "Python" section): `hog.Queue` opens a queue, `hog.HogExecutor` runs Python
calls on its hogs, and errors are the `hog.HogError` family. They are imported on first use, so
that the command line and a call's worker start without them.
"""

__version__ = "0.1.0"

__all__ = [
    "CallError",
    "Checkpointable",
    "DatabaseError",
    "DelayedCall",
    "HogError",
    "HogExecutor",
    "HogFuture",
    "NotFoundError",
    "Queue",
    "RemoteTraceback",
    "TaskOptions",
    "UsageError",
]


def __getattr__(name: str) -> object:
    if name in ("HogError", "UsageError", "NotFoundError", "DatabaseError", "CallError"):
        from hog import errors

        return getattr(errors, name)
    if name == "Queue":
        from hog.api.queue import Queue

        return Queue
    if name in ("HogExecutor", "HogFuture"):
        from hog.api import executor

        return getattr(executor, name)
    if name in ("DelayedCall", "Checkpointable"):
        from hog.api import checkpoint

        return getattr(checkpoint, name)
    if name == "TaskOptions":
        from hog.api.options import TaskOptions

        return TaskOptions
    if name == "RemoteTraceback":
        from hog.api.calls import RemoteTraceback

        return RemoteTraceback
    raise AttributeError(f"module 'hog' has no attribute {name!r}")
