"""How tasks and hogs look in tables: the rows of check, show and show -H, and wait's bar."""

import click

from hog.store import states
from hog.timeutil import format_duration


def check_row(detail) -> tuple:
    last = detail.attempts[-1] if detail.attempts else {}
    runtime = None
    if last.get("started_at") and last.get("ended_at"):
        runtime = last["ended_at"] - last["started_at"]
    why = None
    if detail.state in (states.FAILED, states.TIMEOUT) or last.get("reason") == states.REASON_START_FAILED:
        tail = (last.get("stderr_tail") or "").strip().splitlines()
        why = tail[-1] if tail else _killed_by(detail.signal) or last.get("reason")
    elif detail.state == states.RUNNING and detail.cancel_requested:
        why = "cancel requested"
    return (
        detail.id,
        detail.state,
        detail.exit_code,
        detail.signal,
        len(detail.attempts),
        last.get("host"),
        runtime,
        why,
    )


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


def task_table_row(row: tuple, now: float) -> tuple:
    (
        task_id,
        state,
        name,
        cores,
        gpus,
        priority,
        attempt,
        exit_code,
        signal,
        host,
        started,
        ended,
        command,
    ) = row
    runtime = None
    if started:
        runtime = format_duration((ended or now) - started) if state != states.WAITING else None
    elif state == states.RUNNING:
        runtime = "starting"
    exit_text = f"sig{signal}" if signal is not None else exit_code
    return (task_id, state, name, cores, gpus, priority, attempt, exit_text, host, runtime, command)


HOG_TABLE_COLUMNS = (
    "id",
    "state",
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


def hog_table_row(row: tuple, now: float) -> tuple:
    from hog.store.claims import HOG_COLUMNS

    hog = dict(zip(HOG_COLUMNS, row, strict=True))
    heartbeat = f"{format_duration(now - hog['heartbeat_at'])} ago" if hog["heartbeat_at"] else None
    left = None
    if hog["end_by"] and hog["state"] in states.HOG_LIVE_STATES:
        left = format_duration(max(0.0, hog["end_by"] - now))
    job = hog["slurm_job_id"] or hog["backend_id"]
    return (
        hog["id"],
        hog["state"],
        hog["host"],
        job,
        hog["cores"],
        hog["gpus"] or None,
        hog["tasks_run"],
        hog["running"],
        heartbeat,
        left,
        hog["log_path"],
    )


def progress_line(ended: int, total: int, counts: dict[str, int]) -> None:
    width = 30
    filled = int(width * ended / total) if total else width
    bad = sum(counts.get(s, 0) for s in (states.FAILED, states.TIMEOUT, states.CANCELLED))
    text = f"\r[{'#' * filled}{'.' * (width - filled)}] {ended}/{total} ended"
    text += f", {counts.get(states.RUNNING, 0)} running" + (f", {bad} not ok" if bad else "")
    click.echo(text + "   ", nl=False, err=True)


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
