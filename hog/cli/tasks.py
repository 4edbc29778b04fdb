"""The commands on tasks: init, check, show, cancel, retry, cleanup (submit: submit.py; log: logs.py)."""

import time
from typing import TYPE_CHECKING

import click

from hog.cli.group import (
    CONTEXT,
    POOL,
    HogCommand,
    current_settings,
    db_options,
    duration_option,
    format_options,
    output_format,
)
from hog.cli.render import emit
from hog.cli.views import (
    CHECK_COLUMNS,
    HOG_TABLE_COLUMNS,
    TASK_TABLE_COLUMNS,
    check_cell,
    check_row,
    hog_table_row,
    task_table_row,
)
from hog.cli.workflows import related_ids, related_options
from hog.errors import HogError, NotFoundError, UsageError
from hog.ids import parse_ids
from hog.store import states
from hog.store.db import create_database
from hog.timeutil import counted

if TYPE_CHECKING:  # the store and the library are imported by the commands that use them
    pass

# -- init ------------------------------------------------------------------------------------


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.option(
    "--group", metavar="NAME", help="Share with this group: files 0660, folders 2770, in the group."
)
@click.option(
    "--check-locking",
    is_flag=True,
    help="Only check that locking works on the database's filesystem (see `doctor`).",
)
@db_options
def init(group: str | None, check_locking: bool) -> None:
    """Create a new, empty queue database (mode 0600, or 0660 for the group with --group).

    \b
    Example:
      slurm-hog init --db /scratch/me/queue.sqlite --group mylab
    """
    settings = current_settings()
    if check_locking:
        from hog.cli.hogs import run_doctor

        run_doctor(settings, processes=4, prefix=None)
        return
    create_database(settings.path, group=group, timeout_s=settings.timeout_s)
    click.echo(f"created {settings.path}")


def state_option(states_allowed: tuple[str, ...], help_text: str):
    """-s/--state STATE, repeatable, into `state_filter`."""
    return click.option(
        "-s",
        "--state",
        "state_filter",
        multiple=True,
        type=click.Choice(states_allowed, case_sensitive=False),
        help=help_text,
    )


# -- check / show ----------------------------------------------------------------------------


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("ids", nargs=-1, required=True)
@click.option(
    "--full",
    is_flag=True,
    help="Everything each task was submitted with, and every attempt (host, CPU time, peak memory).",
)
@format_options
@db_options
def check(ids: tuple[str, ...], full: bool, fmt: str, as_json: bool) -> None:
    """Show the state of tasks; for ended ones their exit code or signal, for failed ones why.

    Exits 0 when every id exists. IDS are numbers, ranges (3-9) or lists (1,4). --full adds
    what each was submitted with (limits, folder, output files, parents) and every attempt.

    \b
    Example:
      slurm-hog check 17 20-25
      slurm-hog check 17 --full
    """
    from hog.store import queue

    task_ids = parse_ids(ids)
    if not task_ids:
        raise UsageError("no task id given: `slurm-hog show` lists them")
    db = current_settings().open()
    details = queue.get_tasks(db, task_ids, missing_ok=True)
    if full:
        from hog.cli.fullview import emit_full

        emit_full(db, details, output_format(fmt, as_json))
    elif details or as_json or fmt != "table":
        from hog.cli.workflows import with_reasons

        rows = with_reasons(db, [check_row(detail) for detail in details])
        emit(CHECK_COLUMNS, rows, output_format(fmt, as_json), cell=check_cell)
    missing = sorted(set(task_ids) - {detail.id for detail in details})
    if missing:
        raise NotFoundError(f"no task {', '.join(map(str, missing[:10]))} in {current_settings().path}")


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.option(
    "-s",
    "--state",
    "state_filter",
    multiple=True,
    metavar="STATE",
    callback=lambda ctx, param, value: tuple(state.lower() for state in value),
    help=f"Only tasks in this state (repeatable): {', '.join(states.TASK_STATES)}, or active, ended. "
    f"With -H, only hogs in this state: {', '.join(states.HOG_STATES)}.",
)
@click.option("-H", "--hogs", "show_hogs", is_flag=True, help="List hogs instead of tasks.")
@click.option("--name", help="Only tasks submitted with this --name.")
@click.option("--pool", type=POOL, help="Only tasks (or hogs, with -H) of this pool.")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@related_options
@format_options
@db_options
def show(
    state_filter: tuple[str, ...],
    show_hogs: bool,
    name: str | None,
    pool: str | None,
    limit: int | None,
    fmt: str,
    as_json: bool,
    **related: int | None,
) -> None:
    """List tasks (or hogs with -H), oldest first.

    \b
    Example:
      slurm-hog show -s failed --limit 20
      slurm-hog show -H --json
    """
    from hog.store import queue

    fmt = output_format(fmt, as_json)
    if show_hogs and name is not None:
        raise UsageError("--name picks tasks, and hogs have none: drop -H or --name")
    db = current_settings().open()
    if show_hogs:
        wrong = [s for s in state_filter if s not in states.HOG_STATES]
        if wrong:
            raise UsageError(f"{wrong[0]!r} is not a hog state: use one of {', '.join(states.HOG_STATES)}")
        hog_states = tuple(state_filter)
        from hog.store import hoglist

        rows = hoglist.iter_hogs(db, hog_states, limit, pool=pool)
        if fmt == "table":
            from hog.cli.pools import beside_monitor_notes

            now = time.time()
            hogs = list(rows)
            emit(HOG_TABLE_COLUMNS, (hog_table_row(row, now) for row in hogs), fmt)
            for note in beside_monitor_notes(db, hogs):
                click.echo(note)
        else:
            emit(hoglist.HOG_COLUMNS, rows, fmt)
        return
    wrong = [s for s in state_filter if s not in (*states.TASK_STATES, "active", "ended")]
    if wrong and wrong[0] in states.HOG_STATES:
        raise UsageError(f"{wrong[0]!r} is a hog state: add -H to list hogs")
    if wrong:
        raise UsageError(
            f"{wrong[0]!r} is not a task state: use {', '.join(states.TASK_STATES)}, active or ended"
        )
    wanted = _expand_states(state_filter)
    linked = related_ids(db, **related)
    rows = queue.iter_tasks(db, wanted, name, limit, linked or (), pool) if linked != () else iter(())
    if fmt == "table":
        now = time.time()
        emit(TASK_TABLE_COLUMNS, (task_table_row(row, now) for row in rows), fmt)
    else:
        from hog.gpushare import value

        emit(queue.TASK_COLUMNS, (row._replace(gpus=value(row.gpus)) for row in rows), fmt)


def _expand_states(state_filter: tuple[str, ...]) -> tuple[str, ...]:
    expanded: list[str] = []
    for state in state_filter:
        group = {"active": states.ACTIVE_STATES, "ended": states.ENDED_STATES}.get(state, (state,))
        expanded.extend(s for s in group if s not in expanded)
    return tuple(expanded)


# -- cancel / retry / cleanup ----------------------------------------------------------------


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("ids", nargs=-1)
@click.option("--all", "all_tasks", is_flag=True, help="Every waiting and running task.")
@state_option(states.ACTIVE_STATES, "Every task in this state.")
@db_options
def cancel(ids: tuple[str, ...], all_tasks: bool, state_filter: tuple[str, ...]) -> None:
    """Cancel tasks: waiting ones at once, running ones are killed by their hog.

    \b
    Example:
      slurm-hog cancel 12 40-49
      slurm-hog cancel --state waiting
    """
    from hog.store import queue

    task_ids = parse_ids(ids)
    chosen = sum(bool(x) for x in (task_ids, all_tasks, state_filter))
    if chosen != 1:
        raise UsageError("say what to cancel: task ids, --all, or --state STATE (one of them)")
    outcome = queue.cancel(current_settings().open(), task_ids or None, state_filter)
    # By the state each was in: "cancelled 2 waiting, 3 blocked, 0 running (...)".
    waited = [
        (state, outcome.cancelled_from.get(state, 0))
        for state in (states.WAITING, states.BLOCKED, states.HELD)
    ]
    parts = [f"{number} {state}" for state, number in waited if number or state == states.WAITING]
    click.echo(f"cancelled {', '.join(parts)}, {len(outcome.killing)} running (their hogs kill them)")
    for task_id, state in outcome.skipped[:20]:
        click.echo(f"task {task_id} is already {state}: left alone", err=True)


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Every failed and timed-out task.")
@db_options
def retry(ids: tuple[str, ...], failed: bool) -> None:
    """Put failed, timed-out or cancelled tasks back in the queue, with a fresh retry budget.

    \b
    Example:
      slurm-hog retry --failed
    """
    from hog.store import queue

    task_ids = parse_ids(ids)
    if bool(task_ids) == failed:
        raise UsageError("say what to retry: task ids, or --failed (one of them)")
    requeued, skipped = queue.retry(current_settings().open(), task_ids or None)
    if not requeued and skipped:
        task_id, state = skipped[0]
        more = f" (and {counted(len(skipped) - 1, 'other')})" if len(skipped) > 1 else ""
        raise HogError(
            f"nothing requeued: task {task_id} is {state}{more}; only failed, timeout or cancelled tasks "
            "are retried"
        )
    click.echo(f"requeued {counted(len(requeued), 'task')}")
    for task_id, state in skipped[:20]:
        click.echo(
            f"task {task_id} is {state}: only failed, timeout or cancelled tasks are retried",
            err=True,
        )


@click.command(cls=HogCommand, context_settings=CONTEXT)
@state_option(states.ENDED_STATES, "Only tasks in this ended state (default: every ended state).")
@duration_option("--older-than", help="Only tasks that ended longer ago than this.")
@click.option("--keep-output", is_flag=True, help="Keep the output files beside the queue.")
@click.option(
    "--hogs",
    "hog_rows",
    is_flag=True,
    help="Delete the rows of ended hogs and their logs instead of tasks (with --older-than: by their end).",
)
@db_options
def cleanup(
    state_filter: tuple[str, ...], older_than: float | None, keep_output: bool, hog_rows: bool
) -> None:
    """Delete ended tasks, their attempts and their output files; waiting and running tasks are
    never touched.

    The output files removed are those beside the queue (FILE.logs/tasks/), of every attempt;
    files named with submit's -o/-e are yours and stay. --keep-output keeps them all.

    \b
    Example:
      slurm-hog cleanup --state done --older-than 7d
      slurm-hog cleanup --hogs --older-than 1d
    """
    from hog.timeutil import format_size

    if hog_rows:
        _cleanup_hogs(state_filter, older_than, keep_output)
        return
    from hog.store.cleanup import cleanup as delete_ended

    cleaned = delete_ended(current_settings().open(), state_filter, older_than, keep_output=keep_output)
    text = f"deleted {counted(cleaned.tasks, 'task')}"
    if not keep_output:
        text += f", {counted(cleaned.files, 'file')}, {format_size(cleaned.bytes)}"
    click.echo(text)
    if cleaned.failed:
        click.echo(
            f"cleanup: could not remove {counted(cleaned.failed, 'file')}: {'; '.join(cleaned.failures)}"
            + ("; ..." if cleaned.failed > len(cleaned.failures) else ""),
            err=True,
        )


def _cleanup_hogs(state_filter: tuple[str, ...], older_than: float | None, keep_output: bool) -> None:
    """cleanup --hogs: ended hogs' rows and their files beside the queue."""
    from hog.store.hogs import cleanup_hogs
    from hog.timeutil import format_size

    if state_filter or keep_output:
        given = "--state" if state_filter else "--keep-output"
        raise UsageError(
            f"{given} is for tasks: --hogs deletes every ended hog (narrow it with --older-than)"
        )
    cleaned = cleanup_hogs(current_settings().open(), older_than)
    files = f"{counted(cleaned.files, 'file')}, {format_size(cleaned.bytes)}"
    click.echo(f"deleted {counted(cleaned.hogs, 'hog')}, {files}")
    if cleaned.failures:
        click.echo(f"cleanup: could not remove {'; '.join(cleaned.failures[:5])}", err=True)
