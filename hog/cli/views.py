"""How tasks and hogs look in tables: the rows of check, show and show -H, wait's bar, and the
words for waiting tasks that no hog can run."""

from typing import TYPE_CHECKING

import click

from hog import gpushare
from hog.store import states
from hog.timeutil import counted, format_duration, format_size

if TYPE_CHECKING:  # the store's modules are imported only by the commands that read them
    from hog.store.hoglist import HogRow
    from hog.store.outlook import Misfits
    from hog.store.packing import Resources
    from hog.store.queue import TaskDetail, TaskRow


CHECK_COLUMNS = ("id", "state", "exit_code", "signal", "attempts", "host", "runtime", "why")


def check_row(detail: "TaskDetail") -> tuple:
    last = detail.attempts[-1] if detail.attempts else None
    host = reason = stderr_tail = runtime = None
    if last is not None:
        host, reason, stderr_tail = last.host, last.reason, last.stderr_tail
        if last.started_at and last.ended_at:
            runtime = last.ended_at - last.started_at
    why = None
    if detail.state in (states.FAILED, states.TIMEOUT) or reason == states.REASON_START_FAILED:
        tail = (stderr_tail or "").strip().splitlines()
        why = tail[-1] if tail else _killed_by(detail.signal) or reason
    elif detail.state == states.RUNNING and detail.cancel_requested:
        why = "cancel requested"
    attempts = len(detail.attempts)
    return (detail.id, detail.state, detail.exit_code, detail.signal, attempts, host, runtime, why)


def check_cell(column: str, value: object) -> str:
    if column == "runtime":
        return format_duration(value)  # type: ignore[arg-type]
    return "-" if value is None else str(value)


TASK_TABLE_COLUMNS = (
    "id",
    "state",
    "name",
    "cores",
    "gpus",
    "prio",
    "try",
    "exit",
    "host",
    "runtime",
    "command",
)


def task_table_row(task: "TaskRow", now: float) -> tuple:
    runtime = None
    if task.started_at:
        if task.state == states.RUNNING:
            runtime = f"running {format_duration(now - task.started_at)}"
        elif task.state != states.WAITING:
            runtime = format_duration((task.ended_at or now) - task.started_at)
    elif task.state == states.RUNNING:
        runtime = "starting"
    exit_text = f"sig{task.signal}" if task.signal is not None else task.exit_code
    return (
        task.id,
        task.state,
        task.name,
        task.cores,
        gpushare.text(task.gpus),
        task.priority,
        task.attempt,
        exit_text,
        task.host,
        runtime,
        task.command,
    )


HOG_TABLE_COLUMNS = (
    "id",
    "state",
    "pool",
    "host",
    "job",
    "cores",
    "gpus",
    "tasks_run",
    "running",
    "heartbeat",
    "time_left",
    "log",
)


def hog_table_row(hog: "HogRow", now: float) -> tuple:
    heartbeat = f"{format_duration(now - hog.heartbeat_at)} ago" if hog.heartbeat_at else None
    left = None
    if hog.end_by and hog.state in states.HOG_LIVE_STATES:
        left = format_duration(max(0.0, hog.end_by - now))
    return (
        hog.id,
        hog.state,
        hog.pool,
        hog.host,
        hog.slurm_job_id or hog.backend_id,
        hog.cores,
        hog.gpus or None,
        hog.tasks_run,
        hog.running,
        heartbeat,
        left,
        hog.log_path,
    )


def progress_line(ended: int, total: int, counts: dict[str, int], claimed: int = 0) -> None:
    """wait's bar; `claimed` running tasks are held by a hog but not started (claimed ahead)."""
    width = 30
    filled = int(width * ended / total) if total else width
    bad = sum(counts.get(s, 0) for s in (states.FAILED, states.TIMEOUT, states.CANCELLED))
    text = f"\r[{'#' * filled}{'.' * (width - filled)}] {ended}/{total} ended"
    text += f", {counts.get(states.RUNNING, 0) - claimed} running"
    text += (f", {claimed} claimed" if claimed else "") + (f", {bad} not ok" if bad else "")
    click.echo(text + "   ", nl=False, err=True)


def misfits_text(misfits: "Misfits") -> str:
    """Why some waiting tasks never start: they ask for more than any hog seen has."""
    count = misfits.count
    text = f"{counted(count, 'waiting task')} {'fits' if count == 1 else 'fit'} none of the hogs seen"
    text += f" (at most {_resources_text(misfits.largest, gpus_always=True)})"
    if misfits.first is not None and misfits.needs is not None:
        text += f": task {misfits.first} asks for {_resources_text(misfits.needs)}"
    return text + f"; {'it waits' if count == 1 else 'they wait'} until a larger hog starts"


def _resources_text(resources: "Resources", gpus_always: bool = False) -> str:
    words = [counted(resources.cores, "core")]
    if resources.gpus or gpus_always:
        amount = gpushare.text(resources.gpus)
        words.append(f"{amount} GPU{'' if amount == '1' else 's'}")
    if resources.mem_bytes:
        words.append(format_size(resources.mem_bytes))
    return ", ".join(words)


def _killed_by(number: int | None) -> str | None:
    """ "killed by SIGKILL (9)" for a task that a signal ended without a word on stderr."""
    if number is None:
        return None
    import signal

    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"killed by signal {number}"
    return f"killed by {name} ({number})"
