"""The commands that follow the work: status and wait."""

import sys
import time
from typing import TYPE_CHECKING

import click

from hog.cli.group import (
    CONTEXT,
    HogCommand,
    current_settings,
    db_options,
    duration_option,
    format_options,
    output_format,
)
from hog.cli.pools import unserved_text
from hog.cli.render import emit
from hog.cli.views import misfits_text, progress_line
from hog.errors import UsageError
from hog.ids import parse_ids
from hog.pools import DEFAULT_POOL
from hog.store import states
from hog.timeutil import counted, format_duration

if TYPE_CHECKING:  # the store is imported by the commands that read it (start-up time)
    from hog.store.db import Database


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.option("--watch", is_flag=True, help="Redraw in place until q or Ctrl-C (plain lines when piped).")
@duration_option("--interval", default="2s", show_default=True, help="Time between redraws with --watch.")
@format_options
@db_options
def status(watch: bool, interval: float, fmt: str, as_json: bool) -> None:
    """Counts of tasks per state and of hogs, the recent rate, and when the queue will be empty.

    Running tasks that a hog has claimed ahead but not started are counted apart, and waiting
    tasks that ask for more than any hog of their pool seen lately has are named: they never
    start. Once pools are used, a table per pool; a pool whose tasks wait while no hog of it
    runs and no monitor serves it is named.

    --watch draws the counts, the rate, the time to empty and each hog's load and time left in
    place, and quits on q or Ctrl-C; piped, it prints a line per --interval until no task is left.

    \b
    Example:
      slurm-hog status --watch --interval 5s
    """
    from hog.cli.pools import POOL_COLUMNS, pool_rows
    from hog.store import outlook, pools, queue

    db = current_settings().open()
    if watch:
        if fmt or as_json:
            raise UsageError("--watch draws on the terminal: leave out --format and --json")
        from hog.cli.watch import watch_status

        watch_status(db, interval)
        return
    pool_table = pool_rows(db, pools.pool_counts(db))
    unserved = [
        (pool, waiting) for pool, waiting, _, hogs, monitor in pool_table if waiting and not (hogs or monitor)
    ]
    misfits = outlook.misfits(db)
    stuck = misfits.count if misfits else 0
    result = queue.status(db, stuck=stuck)
    claimed = outlook.claimed_ahead(db) if result.tasks[states.RUNNING] else 0
    fmt = output_format(fmt, as_json)
    if fmt == "json":
        import json

        click.echo(
            json.dumps(
                {
                    "tasks": result.tasks,
                    "hogs": result.hogs,
                    "finished_last_minute": result.finished_last_minute,
                    "seconds_to_empty": result.seconds_to_empty,
                    "claimed_ahead": claimed,
                    "waiting_fit_no_hog": None if misfits is None else stuck,
                    "pools": [dict(zip(POOL_COLUMNS, row, strict=True)) for row in pool_table],
                    "unserved_pools": dict(unserved),
                }
            )
        )
        return
    rows = [("tasks", state, count) for state, count in result.tasks.items()]
    rows += [("hogs", state, count) for state, count in result.hogs.items() if count]
    if fmt == "csv":
        emit(("kind", "state", "count"), rows, fmt)
        return
    from tabulate import tabulate

    click.echo(tabulate([row[1:] for row in rows if row[0] == "tasks"], headers=("tasks", "count")))
    if claimed:
        started = result.tasks[states.RUNNING] - claimed
        click.echo(f"running: {started} started, {claimed} claimed ahead by their hogs (not started yet)")
    hog_rows = [row[1:] for row in rows if row[0] == "hogs"]
    click.echo()
    click.echo(tabulate(hog_rows, headers=("hogs", "count")) if hog_rows else "no hogs yet")
    if any(row[0] != DEFAULT_POOL for row in pool_table):  # once a pool other than the default is used
        click.echo()
        click.echo(
            tabulate([(*row[:-1], "yes" if row[-1] else "no") for row in pool_table], headers=POOL_COLUMNS)
        )
    click.echo()
    click.echo(f"finished in the last minute: {result.finished_last_minute}")
    for pool, waiting in unserved:
        click.echo(unserved_text(pool, waiting))
    if misfits and misfits.count:
        click.echo(misfits_text(misfits))
    elif misfits is None and result.tasks[states.WAITING] and hog_rows:
        click.echo("no hog seen lately: whether the waiting tasks fit one is not known")
    runnable = result.to_go - stuck
    to_go = (
        counted(runnable, ("other " if stuck else "") + "task") + " to go" + _not_yet_runnable(result.tasks)
    )
    if result.to_go == 0:
        click.echo("the queue is empty")
    elif runnable > 0 and result.seconds_to_empty is None:
        click.echo(f"{to_go}; no rate yet to estimate when they are done")
    elif runnable > 0:  # else the line above says why none of them will start
        click.echo(
            f"{to_go}: {'done' if stuck else 'empty'} in about "
            f"{format_duration(result.seconds_to_empty)} at the recent rate"
        )


def _not_yet_runnable(tasks: dict[str, int]) -> str:
    """`(3 waiting for their parents, 2 held until released)`, or nothing when none wait so."""
    parts = [
        f"{tasks[state]} {words}"
        for state, words in (
            (states.BLOCKED, "waiting for their parents"),
            (states.HELD, "held until released"),
        )
        if tasks.get(state)
    ]
    return f" ({', '.join(parts)})" if parts else ""


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("ids", nargs=-1)
@duration_option(
    "--poll",
    default="1s",
    show_default=True,
    help="How often to look at least; an end is seen sooner, through the queue's doorbell.",
)
@duration_option("--max-wait", help="Give up after this long: a message, and exit status 3.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@db_options
def wait(ids: tuple[str, ...], poll: float, max_wait: float | None, quiet: bool) -> None:
    """Block until the tasks (default: all) have ended; exit 0 only if all are done.

    Exit status: 0 all done, 1 some failed, timed out or were cancelled, 3 --max-wait passed.
    On a terminal the bar counts apart the tasks a hog has claimed ahead but not started. Says
    once, and keeps waiting, when waiting tasks fit none of the hogs seen, when no hog is alive
    and no monitor serves the queue, and when the tasks of a pool wait with no hog and no
    monitor of that pool.

    \b
    Example:
      slurm-hog wait && echo all good
    """
    from hog.store import queue

    db = current_settings().open()
    task_ids = parse_ids(ids)
    if task_ids:
        queue.require_ids_exist(db, task_ids)
    show_bar = not quiet and sys.stderr.isatty()
    deadline = None if max_wait is None else time.monotonic() + max_wait
    try:
        counts, total = _wait_for(db, task_ids, poll, deadline, show_bar)
    except KeyboardInterrupt:
        if show_bar:
            click.echo(err=True)
        click.echo("wait: the tasks go on", err=True)
        raise
    if show_bar:
        click.echo(err=True)
    if counts is None:
        click.echo(
            f"wait: gave up after {format_duration(max_wait)} (--max-wait): "
            f"{counted(total, 'task')} not ended",
            err=True,
        )
        raise SystemExit(3)
    unsuccessful = sum(counts.get(s, 0) for s in (states.FAILED, states.TIMEOUT, states.CANCELLED))
    if unsuccessful:
        click.echo(f"{unsuccessful} of {counted(total, 'task')} did not succeed", err=True)
        raise SystemExit(1)


def _wait_for(
    db: "Database", task_ids: list[int], poll: float, deadline: float | None, show_bar: bool
) -> tuple[dict[str, int] | None, int]:
    """Poll until the tasks have ended: their counts by state and how many; (None, still active)
    once `deadline` (monotonic) has passed."""
    from hog.store import doorbell, outlook, queue
    from hog.store.following import MIN_LOOK_S

    warnings = _WaitWarnings(db, task_ids or None, show_bar)
    bell = doorbell.Listener(db.files.doorbell)
    while True:
        looked = time.monotonic()
        bell.mark()
        if task_ids:
            found = queue.task_states(db, task_ids)
            counts: dict[str, int] = {}
            for state in found.values():
                counts[state] = counts.get(state, 0) + 1
        else:
            counts = queue.status(db).tasks
        active = sum(counts.get(s, 0) for s in states.ACTIVE_STATES)
        total = sum(counts.values())
        if show_bar:
            claimed = outlook.claimed_ahead(db, task_ids or None) if counts.get(states.RUNNING) else 0
            progress_line(total - active, total, counts, claimed)
        if active:
            warnings.look(counts.get(states.WAITING, 0), active)
        if active == 0:
            bell.close()
            return counts, total
        if deadline is not None and time.monotonic() >= deadline:
            bell.close()
            return None, active
        # Until a task ends (the doorbell), at most every MIN_LOOK_S; --max-wait ends on time.
        until = looked + poll if deadline is None else min(looked + poll, deadline)
        bell.wait_for(doorbell.ENDED, until, not_before_mono=looked + MIN_LOOK_S)


# How often `wait` asks which waiting tasks fit no hog: on a queue where some submission asks for
# more than the hogs seen have, that reads every waiting task.
MISFITS_EVERY_S = 10.0


class _WaitWarnings:
    """What `wait` says once on stderr, and then keeps waiting: that some of its tasks fit none
    of the hogs seen, and that no hog and no monitor is alive to run any."""

    def __init__(self, db: "Database", task_ids: list[int] | None, show_bar: bool) -> None:
        self.db = db
        self.task_ids = task_ids
        self.show_bar = show_bar
        self.misfits_due = 0.0  # monotonic
        self.said: set[str] = set()

    def look(self, waiting: int, active: int) -> None:
        from hog.store import outlook, pools

        if "nothing alive" not in self.said and not outlook.hogs_alive(self.db):
            # No hog at all: nothing runs unless a monitor serves a pool whose tasks wait.
            counts = pools.pool_counts(self.db, self.task_ids)
            waiting_pools = {row.pool for row in counts if row.waiting} | {DEFAULT_POOL}
            if not any(outlook.monitor_alive(self.db, pool) for pool in sorted(waiting_pools)):
                self.say(
                    "nothing alive",
                    f"no hog runs and no monitor serves {self.db.path}: nothing runs the "
                    f"{counted(active, 'task')} left until one starts (`slurm-hog monitor --daemon`, or "
                    "`slurm-hog hog` in an allocation)",
                )
        if waiting and time.monotonic() >= self.misfits_due:
            self.misfits_due = time.monotonic() + MISFITS_EVERY_S
            misfits = None if "misfits" in self.said else outlook.misfits(self.db, self.task_ids)
            if misfits and misfits.count:
                self.say("misfits", misfits_text(misfits))
            if "nothing alive" not in self.said:
                for pool, count in outlook.unserved_pools(self.db, self.task_ids):
                    if f"pool {pool}" not in self.said:
                        self.say(f"pool {pool}", unserved_text(pool, count))

    def say(self, key: str, text: str) -> None:
        self.said.add(key)
        if self.show_bar:
            click.echo(err=True)  # ends the bar's line: the next poll draws it under the warning
        click.echo(f"wait: {text}", err=True)
