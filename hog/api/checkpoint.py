"""Checkpoint and requeue: a callable's state, asked for when its task is told to stop.

As in submitit: when the task gets SIGTERM (its hog stops: SLURM's time limit or preemption,
scancel, the hog's own walltime), a callable with a `checkpoint` method is called back with the
call's arguments and returns the call to run instead, next time: a DelayedCall, usually of
itself (its attributes hold its progress) with the same arguments. The task goes back to the
queue as any task its hog gives back (not failed, no retry used), and the next attempt runs the
delayed call. Returning None runs the original call again from scratch.

Imported by the worker when a checkpoint is loaded: standard library only.
"""

from typing import Any


class DelayedCall:
    """A function and its arguments, to be called later (on the next attempt)."""

    def __init__(self, function: Any, *args: Any, **kwargs: Any) -> None:
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        name = getattr(self.function, "__qualname__", type(self.function).__qualname__)
        return f"DelayedCall({name}, {len(self.args)} args, {len(self.kwargs)} keyword args)"


class Checkpointable:
    """A base for callables that resume: the default checkpoint requeues the object as it is
    when the stop comes (with its attributes), called with the same arguments."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedCall | None:
        return DelayedCall(self, *args, **kwargs)
