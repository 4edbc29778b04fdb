"""`check --full`: everything a task was submitted with and every attempt, as text, JSON or CSV."""

import json
import time
from typing import TYPE_CHECKING

import click

from hog import gpushare
from hog.cli.render import emit
from hog.timeutil import counted, format_duration, format_size

if TYPE_CHECKING:
    from hog.store.db import Database
    from hog.store.queue import Attempt, TaskDetail
    from hog.store.submitted import Submitted

ATTEMPT_COLUMNS = (
    "task_id",
    "attempt",
    "hog_id",
    "host",
    "claimed_at",
    "started_at",
    "ended_at",
    "runtime_s",
    "exit_code",
    "signal",
    "reason",
    "cpu_user_s",
    "cpu_system_s",
    "peak_memory_bytes",
    "cores",
    "gpus",
)


def attempt_record(attempt: "Attempt") -> dict:
    runtime = None
    if attempt.started_at is not None:
        runtime = (attempt.ended_at or time.time()) - attempt.started_at
    peak = None if attempt.max_rss_kib is None else attempt.max_rss_kib * 1024
    values = attempt._asdict()
    values.update(runtime_s=runtime, peak_memory_bytes=peak)
    return {column: values[column] for column in ATTEMPT_COLUMNS}


def task_record(db: "Database", detail: "TaskDetail", extra: "Submitted") -> dict:
    """The task as JSON: what it was submitted with, where it stands, and its attempts."""
    from hog.pilot.outputs import output_path

    # The files of the latest attempt, or of the first one still to come.
    attempt = max(1, detail.attempt)
    paths = {
        stream: output_path(
            db.path,
            pattern,
            detail.cwd,
            detail.id,
            attempt,
            detail.name,
            stream,
            extra.array_index,
            extra.entry,
            reading=True,
        )
        for stream, pattern in (("out", detail.stdout_pattern), ("err", detail.stderr_pattern))
    }
    return {
        "id": detail.id,
        "state": detail.state,
        "name": detail.name,
        "command": detail.command,
        "argv": detail.argv,
        "cores": detail.cores,
        "gpus": gpushare.value(detail.gpus),  # whole GPUs, or the share of one
        "mem_bytes": detail.mem_bytes,
        "time_limit_s": detail.time_limit_s,
        "priority": detail.priority,
        "max_retries": detail.max_retries,
        "retries_used": detail.retries_used,
        "cwd": detail.cwd,
        "stdout_pattern": detail.stdout_pattern,
        "stderr_pattern": detail.stderr_pattern,
        "stdout": paths["out"],
        "stderr": paths["err"],
        "submitted_at": detail.submitted_at,
        "submitted_by": extra.user,
        "submitted_from": extra.host,
        "kind": extra.kind,
        "bundle": extra.bundle,
        "pool": extra.pool,
        "array_index": extra.array_index,
        "entry": extra.entry,
        "parents": [parent._asdict() for parent in extra.parents],
        "exit_code": detail.exit_code,
        "signal": detail.signal,
        "ended_at": detail.ended_at,
        "cancel_requested": detail.cancel_requested,
        "attempts": [attempt_record(attempt) for attempt in detail.attempts],
    }


def emit_full(db: "Database", details: list["TaskDetail"], fmt: str) -> None:
    from hog.store.submitted import submitted

    extras = submitted(db, [detail.id for detail in details])
    records = [task_record(db, detail, extras[detail.id]) for detail in details]
    if fmt == "json":
        click.echo(json.dumps(records, indent=1))
    elif fmt == "csv":
        rows = (
            [record[column] for column in ATTEMPT_COLUMNS] for task in records for record in task["attempts"]
        )
        emit(ATTEMPT_COLUMNS, rows, "csv")
    else:
        click.echo("\n\n".join(_text(record) for record in records))


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _text(task: dict) -> str:
    """One task as `key  value` lines, then a table of its attempts."""
    mem = "-" if task["mem_bytes"] is None else format_size(task["mem_bytes"])
    gpus = gpushare.text(gpushare.parse_gpus(str(task["gpus"])))
    limit = "none" if task["time_limit_s"] is None else format_duration(task["time_limit_s"])
    by = " ".join(
        part
        for part in (
            task["submitted_by"] and f"by {task['submitted_by']}",
            task["submitted_from"] and f"on {task['submitted_from']}",
        )
        if part
    )
    lines = [
        ("task", f"{task['id']} ({task['state']})"),
        ("name", task["name"] or "-"),
        ("command", task["command"]),
        ("submitted", f"{_when(task['submitted_at'])} {by}".strip()),
        (
            "resources",
            f"{counted(task['cores'], 'core')}, {gpus} GPU{'' if task['gpus'] == 1 else 's'}, memory {mem}, "
            f"time limit {limit}",
        ),
        ("priority", str(task["priority"])),
        ("retries", f"{task['retries_used']} of {task['max_retries']} used"),
        ("folder", task["cwd"]),
        (
            "stdout",
            task["stdout"] + (f"  (pattern {task['stdout_pattern']})" if task["stdout_pattern"] else ""),
        ),
        (
            "stderr",
            task["stderr"] + (f"  (pattern {task['stderr_pattern']})" if task["stderr_pattern"] else ""),
        ),
    ]
    if task["kind"]:
        lines.append(("kind", task["kind"]))
    if task["bundle"]:
        lines.append(("bundle", task["bundle"]))
    if task["pool"]:
        lines.append(("pool", task["pool"]))
    if task["array_index"] is not None:
        lines.append(("array index", str(task["array_index"])))
    if task["entry"] is not None:
        lines.append(("entry", task["entry"]))
    if task["parents"]:
        after = {"ok": "after", "any": "after-any"}
        lines.append(
            ("parents", ", ".join(f"{p['id']} ({after[p['kind']]}, {p['state']})" for p in task["parents"]))
        )
    if task["ended_at"] is not None:
        how = f"exit {task['exit_code']}" if task["signal"] is None else f"signal {task['signal']}"
        lines.append(("ended", f"{_when(task['ended_at'])}, {how}"))
    text = "\n".join(f"{key:<11} {value}" for key, value in lines)
    if not task["attempts"]:
        return text + "\nattempts    none yet"
    from tabulate import tabulate

    rows = [
        (
            a["attempt"],
            a["hog_id"] if a["hog_id"] is not None else "-",
            a["host"] or "-",
            _when(a["started_at"] or a["claimed_at"]),
            format_duration(a["runtime_s"]) if a["runtime_s"] is not None else "not started",
            a["reason"] or "running",
            "-"
            if a["exit_code"] is None and a["signal"] is None
            else (a["exit_code"] if a["signal"] is None else f"sig{a['signal']}"),
            _cpu(a),
            "-" if a["peak_memory_bytes"] is None else format_size(a["peak_memory_bytes"]),
            a["cores"] or "-",
        )
        for a in task["attempts"]
    ]
    headers = ("attempt", "hog", "host", "started", "runtime", "why", "exit", "cpu", "peak_mem", "cpus")
    return text + "\n\n" + tabulate(rows, headers=headers)


def _cpu(attempt: dict) -> str:
    if attempt["cpu_user_s"] is None and attempt["cpu_system_s"] is None:
        return "-"
    return format_duration((attempt["cpu_user_s"] or 0.0) + (attempt["cpu_system_s"] or 0.0))
