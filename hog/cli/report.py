"""The commands that look back at a run: report (an HTML page) and stats (per name)."""

import contextlib
import os
import time

import click

from hog.cli.group import CONTEXT, HogCommand, current_settings, db_options, format_options, output_format
from hog.errors import HogError, UsageError
from hog.timeutil import DURATION_FORMS, counted, format_duration, format_size, parse_duration

SINCE_HELP = (
    "Only tasks submitted since T: a DURATION ago (2h, 90m; a bare number is minutes) or a local date"
    " and time (2026-12-01T17:00, 2026-12-01 17:00)."
)


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """Epoch seconds for --since: a duration ago, or a date and time (ISO 8601, local time)."""
    if text is None:
        return None
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text, what="--since")
    except UsageError:
        pass
    import datetime

    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UsageError(
            f"bad --since {text!r}: give a duration ago ({DURATION_FORMS}) or a date and time like"
            " 2026-12-01T17:00"
        ) from None


def selection_options(function):
    function = click.option("--since", metavar="T", help=SINCE_HELP)(function)
    function = click.option("--kind", metavar="KIND", help="Only the tasks submitted with --kind KIND.")(
        function
    )
    function = click.option("--bundle", metavar="NAME", help="Only the tasks of this bundle.")(function)
    return click.option("--name", metavar="NAME", help="Only the tasks of this name.")(function)


def _selection(name: str | None, bundle: str | None, kind: str | None, since: str | None):
    from hog.store.history import Selection

    return Selection(name=name, bundle=bundle, kind=kind, since=parse_since(since))


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.option(
    "--html",
    "html_path",
    metavar="FILE",
    required=True,
    help="Write the page to FILE (replaced if it exists; one file, nothing fetched when it opens).",
)
@selection_options
@db_options
def report(html_path: str, name: str | None, bundle: str | None, kind: str | None, since: str | None) -> None:
    """Write one self-contained HTML page about the run: summary, efficiency and where the cores'
    idle time went, a timeline per hog, tasks over time, per-name runtimes, memory and CPU
    efficiency, and failures with their stderr.

    Name, bundle, kind and since select tasks (given together: tasks that match all). Past
    20,000 attempts the timeline shows each hog's busy share per time bin, and the page says so.

    \b
    Example:
      slurm-hog report --html run.html
      slurm-hog report --html sweep.html --bundle sweep --since 1d
    """
    from hog.cli.page import render
    from hog.cli.pagedata import gather

    selection = _selection(name, bundle, kind, since)
    started = time.monotonic()
    data = gather(current_settings().open(), selection)
    page = render(data)
    _write(html_path, page)
    counts = data["summary"]["tasks"]
    click.echo(
        f"wrote {html_path} ({format_size(len(page.encode()))}, {time.monotonic() - started:.1f} s):"
        f" {counted(sum(counts.values()), 'task')}, {counted(data['timeline']['attempts'], 'attempt')},"
        f" {counted(len(data['hogs']), 'hog')}"
    )


def _write(path: str, text: str) -> None:
    """Whole or not at all: written beside, then renamed over FILE."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"--html {path} is a folder: name a file, like {os.path.join(path, 'report.html')}")
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise HogError(
            f"cannot write {path}: {error.strerror}; choose a file in a folder that exists and that you"
            " can write"
        ) from None


STATS_COLUMNS = (
    "name",
    "tasks",
    "done",
    "runs",
    "failed",
    "timeouts",
    "retries",
    "lost",
    "runtime_p50_s",
    "runtime_p95_s",
    "runtime_max_s",
    "mem_p95_bytes",
    "mem_max_bytes",
    "cpu_efficiency",
    "suggested_time",
    "suggested_mem",
)


@click.command(cls=HogCommand, context_settings=CONTEXT)
@selection_options
@format_options
@db_options
def stats(
    name: str | None, bundle: str | None, kind: str | None, since: str | None, fmt: str | None, as_json: bool
) -> None:
    """Per task name: tasks, how their runs went, runtime p50/p95/max, peak memory p95/max, CPU
    efficiency (CPU time / cores x runtime), retries, and the --time and --mem to ask for.

    Runs are attempts that ended on their own (exited however, or killed at their time limit).
    Suggested --time: the runs' 99th percentile (nearest rank) x 1.5, rounded up to the next of
    1, 2, 5, 10, 15, 20, 30, 45 minutes, 1, 1.5, 2, 3, 4, 6, 8, 12 hours, then whole days;
    written as SLURM writes times (M:SS, H:MM:SS, D-HH:MM:SS). Suggested --mem: the peak memory's
    99th percentile x 1.5, at least 64M, rounded up to a power of two MiB up to 1G, then to
    whole GiB. Retries: attempts that failed, timed out or were lost with their hog and were run
    again. JSON and CSV give seconds and bytes.

    \b
    Example:
      slurm-hog stats
      slurm-hog stats --name align --format csv > align.csv
      slurm-hog stats --kind train
    """
    from hog.store import history
    from hog.store.profiles import profiles
    from hog.suggest import slurm_mem, slurm_time

    fmt = output_format(fmt, as_json)
    selection = _selection(name, bundle, kind, since)
    db = current_settings().open()
    history.check(db, selection)
    rows = []
    for profile in profiles(db, selection):
        time_s, mem = profile.suggested_time_s, profile.suggested_mem_bytes
        rows.append(
            (
                profile.name,
                profile.tasks,
                profile.done,
                profile.runs,
                profile.failed,
                profile.timeouts,
                profile.retries,
                profile.lost,
                profile.runtime(50),
                profile.runtime(95),
                profile.runtime(100),
                _whole(profile.peak(95)),
                _whole(profile.peak(100)),
                None if profile.cpu_efficiency is None else round(profile.cpu_efficiency, 4),
                None if time_s is None else slurm_time(time_s),
                None if mem is None else slurm_mem(mem),
            )
        )
    from hog.cli.render import emit

    emit(STATS_COLUMNS, rows, fmt, _stats_cell)


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


def _stats_cell(column: str, value: object) -> str:
    if value is None:
        return "-"
    if column == "name":
        return str(value) or "(no name)"
    if column.endswith("_s"):
        return format_duration(value)  # type: ignore[arg-type]
    if column.endswith("_bytes"):
        return format_size(value)  # type: ignore[arg-type]
    if column == "cpu_efficiency":
        return f"{100 * value:.0f}%"  # type: ignore[operator]
    return str(value)
