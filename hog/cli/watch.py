"""`status --watch`: the queue drawn in place on a terminal, or one line per look when not on one.

On a terminal the view takes the whole screen (curses, which gives the terminal back as it was
however the view ends), redraws every interval and quits on `q` or Ctrl-C. Piped, it prints one
line per interval and ends once no task is left to run, so a log of a run ends with the run.
"""

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, NamedTuple

from hog.errors import HogError
from hog.store import states
from hog.timeutil import counted, format_duration

if TYPE_CHECKING:
    from hog.store.db import Database
    from hog.store.hogs import HogLoad
    from hog.store.queue import Status


class Look(NamedTuple):
    """What one look at the queue found."""

    at: float  # epoch seconds
    status: "Status"
    claimed: int  # running tasks claimed ahead by their hog, not started
    hogs: list["HogLoad"]


def look(db: "Database") -> Look:
    from hog.store import hogs, outlook, queue

    status = queue.status(db)
    claimed = outlook.claimed_ahead(db) if status.tasks[states.RUNNING] else 0
    return Look(time.time(), status, claimed, hogs.hog_loads(db))


def watch_status(db: "Database", interval_s: float) -> None:
    if sys.stdout.isatty() and sys.stdin.isatty():
        import curses

        try:
            curses.wrapper(_live, db, interval_s)
        except curses.error as error:  # no terminfo for $TERM: curses cannot start
            raise HogError(
                f"cannot draw on this terminal (TERM={os.environ.get('TERM', '')!r}: {error}); "
                "pipe the output (`| cat`) for plain lines"
            ) from None
    else:
        _plain(db, interval_s)


# -- the lines both views share --------------------------------------------------------------


def tasks_line(seen: Look) -> str:
    counts = seen.status.tasks
    running = counts[states.RUNNING]
    parts = [
        f"{counts[state]} {state}" for state in states.TASK_STATES if counts[state] or state == states.DONE
    ]
    if seen.claimed and running:
        parts = [
            f"{part} ({seen.claimed} claimed ahead)" if part == f"{running} running" else part
            for part in parts
        ]
    return "tasks: " + ", ".join(parts)


def rate_line(seen: Look) -> str:
    status = seen.status
    rate = status.finished_last_minute / 60.0
    text = f"rate: {rate:.2f} tasks/s over the last minute; "
    if status.to_go == 0:
        return text + "the queue is empty"
    if status.seconds_to_empty is None:
        return text + f"{counted(status.to_go, 'task')} to go, no rate yet to tell when they are done"
    return (
        text
        + f"{counted(status.to_go, 'task')} to go: done in about {format_duration(status.seconds_to_empty)}"
    )


def hog_rows(seen: Look) -> list[tuple[str, ...]]:
    """Each live hog: id, state, host, load, tasks, time left, what it is doing."""
    rows = []
    for hog in seen.hogs:
        load = f"{hog.cores_busy}/{hog.cores} cores" if hog.cores else "-"
        left = "-" if hog.end_by is None else format_duration(max(0.0, hog.end_by - seen.at))
        tasks = str(hog.running) + (f" (+{hog.claimed} claimed)" if hog.claimed else "")
        note = {"drain": "draining (hogs stop)", "now": "stopping (hogs stop --now)"}.get(
            hog.stop_request or "", ""
        )
        if hog.state == states.HOG_PENDING:
            note = "waiting to start"
        rows.append((str(hog.id), hog.state, hog.host or "-", load, tasks, left, note))
    return rows


HOG_HEADERS = ("hog", "state", "host", "load", "tasks", "time left", "")


def plain_line(seen: Look) -> str:
    """One line per look for a log: the time, the counts, the rate and the hogs' load."""
    busy = sum(hog.cores_busy for hog in seen.hogs)
    cores = sum(hog.cores or 0 for hog in seen.hogs)
    hogs = f"hogs: {len(seen.hogs)} live, {busy}/{cores} cores busy"
    clock = time.strftime("%H:%M:%S", time.localtime(seen.at))
    return f"{clock} {tasks_line(seen)}; {rate_line(seen)}; {hogs}"


# -- the two views ---------------------------------------------------------------------------


def _plain(db: "Database", interval_s: float) -> None:
    while True:
        seen = look(db)
        print(plain_line(seen), flush=True)
        if seen.status.to_go == 0:
            return
        time.sleep(interval_s)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]


def _live(screen, db: "Database", interval_s: float) -> None:
    import curses

    curses.curs_set(0)
    screen.timeout(int(interval_s * 1000))
    while True:
        seen = look(db)
        height, width = screen.getmaxyx()
        clock = time.strftime("%H:%M:%S", time.localtime(seen.at))
        lines = [
            f"slurm-hog status --watch  {db.path}  {clock}  (q quits)",
            "",
            tasks_line(seen),
            rate_line(seen),
            "",
        ]
        rows = hog_rows(seen)
        lines += _table([HOG_HEADERS, *rows]) if rows else ["no hog is pending or running"]
        if len(lines) > height:
            hidden = len(lines) - height + 1
            lines = [*lines[: height - 1], f"... {counted(hidden, 'more hog')}"]
        screen.erase()
        for row, line in enumerate(lines):
            # The last cell of the screen cannot be written without an error: one column less;
            # a resize between the size read and the drawing is drawn right on the next turn.
            with contextlib.suppress(curses.error):
                screen.addnstr(row, 0, line, max(0, width - 1))
        screen.refresh()
        # Waits up to the interval; any other key (a resize too) redraws at once.
        if screen.getch() in (ord("q"), ord("Q")):
            return
