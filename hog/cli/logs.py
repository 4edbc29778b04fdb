"""Logs: a task's output, a hog's log and the monitor's, printed or followed as they grow."""

import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from hog.cli.group import CONTEXT, HogCommand, current_settings, db_options
from hog.errors import HogError, UsageError
from hog.store import states

if TYPE_CHECKING:
    from hog.store.db import Database

FOLLOW_POLL_S = 0.25  # how often a followed file and its task or hog are looked at again
# A hog writes its last log line just after its row ends: a followed log is read on until it has
# been quiet this long.
LAST_LINES_S = 1.0


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("task_id", type=click.IntRange(min=1), required=False)
@click.option("--stderr", "stream", flag_value="err", help="Print stderr instead of stdout.")
@click.option("--stdout", "stream", flag_value="out", default=True, hidden=True)
@click.option("--attempt", type=click.IntRange(min=1), help="Which attempt (default: the latest).")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing as the output grows, across attempts, until the task (or hog) ends.",
)
@click.option(
    "--hog", "hog_id", type=click.IntRange(min=1), metavar="N", help="Print hog N's log instead of a task's."
)
@db_options
def log(task_id: int | None, stream: str, attempt: int | None, follow: bool, hog_id: int | None) -> None:
    """Print a task's output (stdout, or stderr with --stderr), or a hog's log with --hog N.

    With --follow, print what is there and then what is added, like `tail -f`, until the task
    has ended (a new attempt's output follows the last one's) or the hog has left.

    \b
    Example:
      slurm-hog log 42 --stderr | tail
      slurm-hog log 42 --follow
      slurm-hog log --hog 3 --follow
    """
    if (task_id is None) == (hog_id is None):
        raise UsageError("say whose log: a task id, or --hog N (one of them)")
    settings = current_settings()
    db = settings.open()
    if hog_id is not None:
        if attempt is not None or stream == "err":
            raise UsageError("--attempt and --stderr pick a task's output: a hog has one log")
        _hog_log(db, hog_id, follow)
        return
    assert task_id is not None
    if follow and attempt is not None:
        raise UsageError("--follow follows the latest attempt and those after it: leave out --attempt")
    if follow:
        _follow_task(db, task_id, stream)
        return
    from hog.store import queue

    (detail,) = queue.get_tasks(db, [task_id])
    attempt = attempt or detail.attempt
    if attempt < 1:
        raise UsageError(f"task {task_id} has not run yet: no output")
    if attempt > detail.attempt:
        raise UsageError(f"task {task_id} has {detail.attempt} attempts, not {attempt}")
    path = _output_path(db, detail, attempt, stream)
    if path is None:
        return
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 16):
                sys.stdout.buffer.write(chunk)
    except FileNotFoundError:
        raise UsageError(f"no output file {path} (the task may not have started yet)") from None
    except PermissionError:
        raise _denied(path) from None


def _output_path(db: "Database", detail, attempt: int, stream: str) -> str | None:
    """The file of one attempt's `stream`; None (said on stderr) when it was not kept."""
    from hog.pilot.outputs import output_path
    from hog.store.workflows import array_place

    place = array_place(db, detail.id)
    pattern = detail.stdout_pattern if stream == "out" else detail.stderr_pattern
    path = output_path(
        db.path, pattern, detail.cwd, detail.id, attempt, detail.name, stream, *place, reading=True
    )
    if path == os.devnull:
        option = "-o" if stream == "out" else "-e"
        click.echo(
            f"task {detail.id}'s std{stream} was not kept: it was submitted with {option} /dev/null", err=True
        )
        return None
    return path


def _denied(path: str) -> HogError:
    from hog.store.paths import missing_permission

    problem = missing_permission(path) or f"you may not read {path}"
    return HogError(f"permission denied: {problem}")


class Tail:
    """One file printed from its start and then as it grows; reopened when it is replaced or cut
    short (a new attempt truncates a file its pattern names for every attempt)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.handle = None
        self.identity: tuple[int, int] | None = None

    def pump(self) -> int:
        """Print what was added since the last call; the bytes printed."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return 0  # not made yet, or removed
        except PermissionError:
            raise _denied(self.path) from None
        if (
            self.handle is None
            or (info.st_dev, info.st_ino) != self.identity
            or info.st_size < self.handle.tell()
        ):
            self.close()
            try:
                self.handle = open(self.path, "rb")  # noqa: SIM115 - kept open while following
            except FileNotFoundError:
                return 0
            except PermissionError:
                raise _denied(self.path) from None
            self.identity = (info.st_dev, info.st_ino)
        printed = 0
        while chunk := self.handle.read(1 << 16):
            sys.stdout.buffer.write(chunk)
            printed += len(chunk)
        if printed:
            sys.stdout.buffer.flush()
        return printed

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _follow_task(db: "Database", task_id: int, stream: str) -> None:
    """Print the task's output as it grows, from its current attempt on, each attempt's after the
    last (those that came and went between two looks too), until it has ended."""
    from hog.store import queue

    tail: Tail | None = None
    shown: int | None = None  # the attempt whose output is followed
    while True:
        (detail,) = queue.get_tasks(db, [task_id])
        if shown is None:
            shown = detail.attempt - 1 if detail.attempt else 0  # where `tail -f` starts
        while detail.attempt > shown:
            shown += 1
            if tail is not None:
                tail.pump()  # the end of the last attempt's output first
                tail.close()
            if tail is not None:
                host = detail.attempts[shown - 1].host if len(detail.attempts) >= shown else None
                started = f"log: task {task_id}'s attempt {shown} started" + (f" on {host}" if host else "")
                click.echo(started, err=True)
            path = _output_path(db, detail, shown, stream)
            if path is None:
                return
            tail = Tail(path)
            if detail.attempt > shown:
                tail.pump()  # an attempt that has ended since the last look: all of it
        if tail is not None:
            tail.pump()  # read after the state: an ended task's output is all there
        if detail.state in states.ENDED_STATES:
            if tail is None:
                click.echo(f"log: task {task_id} ended ({detail.state}) without running: no output", err=True)
            else:
                tail.close()
            return
        time.sleep(FOLLOW_POLL_S)


def _hog_log(db: "Database", hog_id: int, follow: bool) -> None:
    from hog.store import hogs

    hog = hogs.hog_log(db, hog_id)
    if hog is None:
        raise UsageError(f"no hog {hog_id} in {db.path}: `slurm-hog show -H` lists them")
    if not hog.log_path:
        raise UsageError(
            f"hog {hog_id} was started by hand (`slurm-hog hog`): its log went where that command's "
            "output went, not beside the queue"
        )

    def ended() -> bool:
        now = hogs.hog_log(db, hog_id)
        return now is None or now.state in states.HOG_ENDED_STATES

    print_log(hog.log_path, f"hog {hog_id}'s log", ended if follow else None)


def print_log(path: str, what: str, ended: Callable[[], bool] | None) -> None:
    """Print a log file; with `ended`, follow it until `ended()` and the file has gone quiet."""
    tail = Tail(path)
    if not os.path.exists(path) and ended is None:
        raise UsageError(f"{what} {path} does not exist (yet)")
    quiet_since: float | None = None
    try:
        while True:
            printed = tail.pump()
            if ended is None:
                return
            now = time.monotonic()
            if printed or quiet_since is None:
                quiet_since = now
            if now - quiet_since >= LAST_LINES_S and ended():
                tail.pump()
                return
            time.sleep(FOLLOW_POLL_S)
    finally:
        tail.close()
