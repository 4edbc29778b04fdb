"""The command line: parses, calls the core, renders. No SQL and no queue logic here."""

import json
import os
import sys
import time
from collections.abc import Callable

import click

from . import __version__, states
from .db import DEFAULT_DB, DEFAULT_TIMEOUT_S, Database, create_database, open_database
from .errors import HogError, NotFoundError, UsageError
from .ids import parse_ids
from .render import FORMATS, emit
from .timeutil import DURATION_HELP, format_duration, parse_duration, parse_size

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class ParsedType(click.ParamType):
    """An option value parsed by one of timeutil's parsers, whose UsageError becomes click's."""

    def __init__(self, name: str, parser: Callable[..., object], parsed_type: type) -> None:
        self.name = name
        self.parser = parser
        self.parsed_type = parsed_type

    def convert(self, value, param, ctx):
        if isinstance(value, self.parsed_type):
            return value
        try:
            return self.parser(value, what=param.opts[-1] if param else self.name.lower())
        except UsageError as error:
            self.fail(str(error), param, ctx)


DURATION = ParsedType("DURATION", parse_duration, float)
SIZE = ParsedType("SIZE", parse_size, int)


class Settings:
    """Where the queue is, from --db / $SLURM_HOG_DB / jobs.sqlite."""

    def __init__(self) -> None:
        self.db_path: str | None = None
        self.timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def path(self) -> str:
        return self.db_path or os.environ.get("SLURM_HOG_DB") or DEFAULT_DB

    def open(self) -> Database:
        return open_database(self.path, self.timeout_s)


def _set_db(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Settings).db_path = value


def _set_timeout(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:
        ctx.ensure_object(Settings).timeout_s = value


def db_options(function):
    """--db and --timeout, accepted before or after the command name."""
    function = click.option(
        "--timeout",
        type=click.FloatRange(min=0),
        callback=_set_timeout,
        expose_value=False,
        help=f"Seconds to wait for the queue's lock (default {DEFAULT_TIMEOUT_S:.0f}).",
    )(function)
    return click.option(
        "--db",
        metavar="FILE",
        callback=_set_db,
        expose_value=False,
        help=f"Queue database (default: $SLURM_HOG_DB, else {DEFAULT_DB}).",
    )(function)


def format_options(function):
    function = click.option("--json", "as_json", is_flag=True, help="Same as --format json.")(function)
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)(
        function
    )


def _fmt(fmt: str, as_json: bool) -> str:
    return "json" if as_json else fmt


def _settings() -> Settings:
    return click.get_current_context().ensure_object(Settings)


class _HogFailure(click.ClickException):
    """A HogError on its way out: one line on stderr and the error's exit status."""

    def __init__(self, error: HogError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"slurm-hog: error: {self.message}", err=True)


_BUILDERS: dict[str, "Callable[[], click.Command]"] = {}


def lazy(name: str):
    """Register a command builder: only the command that runs is built (start-up time)."""

    def register(builder):
        _BUILDERS[name] = builder
        return builder

    return register


class HogGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_BUILDERS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in _BUILDERS:
            self.add_command(_BUILDERS[name](), name)
        return self.commands.get(name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HogError as error:
            raise _HogFailure(error) from None


@click.group(cls=HogGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="slurm-hog")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@db_options
@click.pass_context
def cli(ctx: click.Context, verbose: int) -> None:
    """slurm-hog: run many short tasks on whole nodes through pilot jobs ("hogs").

    A queue is one sqlite file. `submit` tasks to it, start hogs with `monitor` (or `hog`
    inside an allocation), follow them with `status`, `show`, `check` and `wait`.

    \b
    Example:
      slurm-hog init
      seq 100 | sed 's/^/echo task /' | slurm-hog submit --file -
      slurm-hog monitor --command-prefix nohup --hogs 2 --once
      slurm-hog wait
    """
    ctx.ensure_object(Settings)
    if verbose:
        import logging

        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
        )


# -- init ------------------------------------------------------------------------------------


@lazy("init")
def _init_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.option("--group", metavar="NAME", help="Share with this group: mode 0660 and chgrp.")
    @click.option(
        "--check-locking",
        is_flag=True,
        help="Only check that locking works on the database's filesystem (see `doctor`).",
    )
    @db_options
    def init(group: str | None, check_locking: bool) -> None:
        """Create a new, empty queue database (mode 0600, or 0660 with --group).

        \b
        Example:
          slurm-hog init --db /scratch/me/queue.sqlite --group mylab
        """
        settings = _settings()
        if check_locking:
            _run_doctor(settings, processes=4, prefix=None)
            return
        create_database(settings.path, group=group, timeout_s=settings.timeout_s)
        click.echo(f"created {settings.path}")

    return init


# -- submit ----------------------------------------------------------------------------------


class SubmitCommand(click.Command):
    """Remembers whether the user wrote `--`: then the words are one program and its arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["exact_argv"] = "--" in args
        return super().parse_args(ctx, args)


@lazy("submit")
def _submit_command() -> click.Command:
    @click.command(cls=SubmitCommand, context_settings=CONTEXT)
    @click.argument("command", nargs=-1)
    @click.option("-f", "--file", "task_file", metavar="FILE", help="One task per line ('-' for stdin).")
    @click.option("-c", "--cores", type=click.IntRange(min=1), default=1, show_default=True)
    @click.option("-g", "--gpus", type=click.IntRange(min=0), default=0, show_default=True)
    @click.option("--mem", type=SIZE, help="Memory per task, e.g. 500M or 4G.")
    @click.option("-t", "--time", "time_limit", type=DURATION, help=f"Time limit: {DURATION_HELP}.")
    @click.option("--priority", type=click.IntRange(-1_000_000, 1_000_000), default=0, show_default=True)
    @click.option("--retries", type=click.IntRange(0, 1000), default=0, show_default=True)
    @click.option("--name", help="A name to find the tasks by (show --name).")
    @click.option(
        "-o",
        "--stdout",
        "stdout_pattern",
        metavar="PATTERN",
        help="Stdout file; {id}, {attempt}, {name} are replaced.",
    )
    @click.option(
        "-e",
        "--stderr",
        "stderr_pattern",
        metavar="PATTERN",
        help="Stderr file, same placeholders.",
    )
    @click.option("--cwd", type=click.Path(file_okay=False), help="Working folder (default: here).")
    @click.option("--json", "as_json", is_flag=True, help="Print the new ids as JSON.")
    @db_options
    @click.pass_context
    def submit(ctx: click.Context, command: tuple[str, ...], task_file: str | None, **options) -> None:
        """Add tasks to the queue.

        \b
        submit "shell command"          one string, run through /bin/sh -c
        submit -- PROGRAM [ARG...]      exactly this program and these arguments
        submit --file FILE              one shell command per line ('-': stdin);
                                        blank lines and # comments are skipped;
                                        all lines are added, or none

        The submitting shell's environment is captured and given to the task.

        \b
        Example:
          slurm-hog submit -c 4 --mem 8G -t 2h -- ./simulate --seed 7
          slurm-hog submit --file tasks.txt --retries 2 -o 'out/{id}.txt'
        """
        from . import queue
        from .outputs import check_pattern

        as_json = options.pop("as_json")
        if task_file is not None and command:
            raise UsageError("give either a command or --file, not both")
        if task_file is None and not command:
            raise UsageError("nothing to submit: give a command, `-- PROGRAM ARGS`, or --file FILE")
        cwd = os.path.abspath(options["cwd"] or os.getcwd())
        if not os.path.isdir(cwd):
            raise UsageError(f"--cwd {options['cwd']}: no such folder")
        for option in ("stdout_pattern", "stderr_pattern"):
            if options[option] is not None:
                check_pattern(options[option], "--" + option.split("_")[0])
        submit_options = queue.SubmitOptions(
            cores=options["cores"],
            gpus=options["gpus"],
            mem_bytes=options["mem"],
            time_limit_s=options["time_limit"],
            priority=options["priority"],
            max_retries=options["retries"],
            name=options["name"],
            stdout_pattern=options["stdout_pattern"],
            stderr_pattern=options["stderr_pattern"],
            cwd=cwd,
            environment=queue.captured_environment(),
        )
        db = _settings().open()
        if task_file is not None:
            from .taskfile import read_task_file

            first, last = queue.submit(db, read_task_file(task_file), submit_options)
        else:
            first, last = queue.submit(db, [_one_command(command, ctx.meta["exact_argv"])], submit_options)
        if as_json:
            click.echo(json.dumps({"first": first, "last": last, "count": last - first + 1}))
        else:
            click.echo(str(first) if first == last else f"{first}-{last}")

    return submit


def _one_command(words: tuple[str, ...], exact_argv: bool) -> tuple[str, str | None]:
    if any("\0" in word for word in words):
        raise UsageError("the command contains a NUL byte, which no program can receive")
    if len(words) == 1 and not exact_argv:
        if not words[0].strip():
            raise UsageError("the command is empty: give the program to run")
        return words[0], None
    if not words[0]:
        raise UsageError("the program name is empty: give the program to run after --")
    import shlex

    return shlex.join(words), json.dumps(list(words))


# -- check / show / status -------------------------------------------------------------------


@lazy("check")
def _check_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.argument("ids", nargs=-1, required=True)
    @format_options
    @db_options
    def check(ids: tuple[str, ...], fmt: str, as_json: bool) -> None:
        """Show the state of tasks; for ended ones their exit code or signal, for failed ones why.

        Exits 0 when every id exists. IDS are numbers, ranges (3-9) or lists (1,4).

        \b
        Example:
          slurm-hog check 17 20-25
        """
        from . import queue

        task_ids = parse_ids(ids)
        if not task_ids:
            raise UsageError("no task id given: `slurm-hog show` lists them")
        details = queue.get_tasks(_settings().open(), task_ids, missing_ok=True)
        columns = ("id", "state", "exit_code", "signal", "attempts", "host", "runtime", "why")
        if details or as_json or fmt != "table":
            rows = [_check_row(detail) for detail in details]
            emit(columns, rows, _fmt(fmt, as_json), cell=_check_cell)
        missing = sorted(set(task_ids) - {detail.id for detail in details})
        if missing:
            raise NotFoundError(f"no task {', '.join(map(str, missing[:10]))} in {_settings().path}")

    return check


def _check_row(detail) -> tuple:
    last = detail.attempts[-1] if detail.attempts else {}
    runtime = None
    if last.get("started_at") and last.get("ended_at"):
        runtime = last["ended_at"] - last["started_at"]
    why = None
    if detail.state in (states.FAILED, states.TIMEOUT) or last.get("reason") == states.REASON_START_FAILED:
        tail = (last.get("stderr_tail") or "").strip().splitlines()
        why = tail[-1] if tail else last.get("reason")
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


def _check_cell(column: str, value: object) -> str:
    if column == "runtime":
        return format_duration(value)  # type: ignore[arg-type]
    return "-" if value is None else str(value)


@lazy("show")
def _show_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.option(
        "-s",
        "--state",
        "state_filter",
        multiple=True,
        type=click.Choice(tuple(dict.fromkeys((*states.TASK_STATES, "active", "ended", *states.HOG_STATES)))),
        help="Only tasks (or hogs, with -H) in this state (repeatable).",
    )
    @click.option("-H", "--hogs", "show_hogs", is_flag=True, help="List hogs instead of tasks.")
    @click.option("--name", help="Only tasks submitted with this --name.")
    @click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
    @format_options
    @db_options
    def show(
        state_filter: tuple[str, ...],
        show_hogs: bool,
        name: str | None,
        limit: int | None,
        fmt: str,
        as_json: bool,
    ) -> None:
        """List tasks (or hogs with -H), oldest first.

        \b
        Example:
          slurm-hog show -s failed --limit 20
          slurm-hog show -H --json
        """
        from . import queue

        db = _settings().open()
        fmt = _fmt(fmt, as_json)
        if show_hogs:
            wrong = [s for s in state_filter if s not in states.HOG_STATES]
            if wrong:
                raise UsageError(
                    f"{wrong[0]!r} is not a hog state: use one of {', '.join(states.HOG_STATES)}"
                )
            hog_states = tuple(state_filter)
            from . import hogs

            rows = hogs.iter_hogs(db, hog_states, limit)
            if fmt == "table":
                now = time.time()
                rows = (_hog_table_row(row, now) for row in rows)
                emit(HOG_TABLE_COLUMNS, rows, fmt)
            else:
                emit(hogs.HOG_COLUMNS, rows, fmt)
            return
        wrong = [s for s in state_filter if s not in (*states.TASK_STATES, "active", "ended")]
        if wrong:
            raise UsageError(f"{wrong[0]!r} is a hog state: add -H to list hogs")
        wanted = _expand_states(state_filter)
        rows = queue.iter_tasks(db, wanted, name, limit)
        if fmt == "table":
            now = time.time()
            emit(TASK_TABLE_COLUMNS, (_task_table_row(row, now) for row in rows), fmt)
        else:
            emit(queue.TASK_COLUMNS, rows, fmt)

    return show


def _expand_states(state_filter: tuple[str, ...]) -> tuple[str, ...]:
    expanded: list[str] = []
    for state in state_filter:
        group = {"active": states.ACTIVE_STATES, "ended": states.ENDED_STATES}.get(state, (state,))
        expanded.extend(s for s in group if s not in expanded)
    return tuple(expanded)


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


def _task_table_row(row: tuple, now: float) -> tuple:
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


def _hog_table_row(row: tuple, now: float) -> tuple:
    from .hogs import HOG_COLUMNS

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


@lazy("status")
def _status_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @format_options
    @db_options
    def status(fmt: str, as_json: bool) -> None:
        """Counts of tasks per state and of hogs, the recent rate, and when the queue will be empty.

        \b
        Example:
          watch slurm-hog status
        """
        from . import queue

        result = queue.status(_settings().open())
        fmt = _fmt(fmt, as_json)
        if fmt == "json":
            click.echo(
                json.dumps(
                    {
                        "tasks": result.tasks,
                        "hogs": result.hogs,
                        "finished_last_minute": result.finished_last_minute,
                        "seconds_to_empty": result.seconds_to_empty,
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
        hog_rows = [row[1:] for row in rows if row[0] == "hogs"]
        click.echo()
        click.echo(tabulate(hog_rows, headers=("hogs", "count")) if hog_rows else "no hogs yet")
        click.echo()
        click.echo(f"finished in the last minute: {result.finished_last_minute}")
        if result.active == 0:
            click.echo("the queue is empty")
        elif result.seconds_to_empty is None:
            click.echo(f"{result.active} tasks to go; no rate yet to estimate when they are done")
        else:
            click.echo(
                f"{result.active} tasks to go: empty in about "
                f"{format_duration(result.seconds_to_empty)} at the recent rate"
            )

    return status


# -- cancel / retry / cleanup ----------------------------------------------------------------


@lazy("cancel")
def _cancel_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.argument("ids", nargs=-1)
    @click.option("--all", "all_tasks", is_flag=True, help="Every waiting and running task.")
    @click.option(
        "-s",
        "--state",
        "state_filter",
        multiple=True,
        type=click.Choice(states.ACTIVE_STATES),
        help="Every task in this state.",
    )
    @db_options
    def cancel(ids: tuple[str, ...], all_tasks: bool, state_filter: tuple[str, ...]) -> None:
        """Cancel tasks: waiting ones at once, running ones are killed by their hog.

        \b
        Example:
          slurm-hog cancel 12 40-49
          slurm-hog cancel --state waiting
        """
        from . import queue

        task_ids = parse_ids(ids)
        chosen = sum(bool(x) for x in (task_ids, all_tasks, state_filter))
        if chosen != 1:
            raise UsageError("say what to cancel: task ids, --all, or --state STATE (one of them)")
        outcome = queue.cancel(_settings().open(), task_ids or None, state_filter)
        click.echo(
            f"cancelled {len(outcome.cancelled)} waiting, "
            f"{len(outcome.killing)} running (their hogs kill them)"
        )
        for task_id, state in outcome.skipped[:20]:
            click.echo(f"task {task_id} is already {state}: left alone", err=True)

    return cancel


@lazy("retry")
def _retry_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.argument("ids", nargs=-1)
    @click.option("--failed", is_flag=True, help="Every failed and timed-out task.")
    @db_options
    def retry(ids: tuple[str, ...], failed: bool) -> None:
        """Put failed, timed-out or cancelled tasks back in the queue, with a fresh retry budget.

        \b
        Example:
          slurm-hog retry --failed
        """
        from . import queue

        task_ids = parse_ids(ids)
        if bool(task_ids) == failed:
            raise UsageError("say what to retry: task ids, or --failed (one of them)")
        requeued, skipped = queue.retry(_settings().open(), task_ids or None)
        click.echo(f"requeued {len(requeued)} tasks")
        for task_id, state in skipped[:20]:
            click.echo(
                f"task {task_id} is {state}: only failed, timeout or cancelled tasks are retried",
                err=True,
            )

    return retry


@lazy("cleanup")
def _cleanup_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.option(
        "-s",
        "--state",
        "state_filter",
        multiple=True,
        type=click.Choice(states.TASK_STATES),
        help="Only tasks in this ended state (default: every ended state).",
    )
    @click.option("--older-than", type=DURATION, help="Only tasks that ended longer ago than this.")
    @db_options
    def cleanup(state_filter: tuple[str, ...], older_than: float | None) -> None:
        """Delete ended tasks and their attempts; waiting and running tasks are never touched.

        \b
        Example:
          slurm-hog cleanup --state done --older-than 7d
        """
        from . import queue

        deleted = queue.cleanup(_settings().open(), state_filter, older_than)
        click.echo(f"deleted {deleted} tasks")

    return cleanup


# -- wait / log ------------------------------------------------------------------------------


@lazy("wait")
def _wait_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.argument("ids", nargs=-1)
    @click.option("--poll", type=DURATION, default="1s", show_default=True, help="How often to look.")
    @click.option("--max-wait", type=DURATION, help="Give up (exit 3) after this long.")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
    @db_options
    def wait(ids: tuple[str, ...], poll: float, max_wait: float | None, quiet: bool) -> None:
        """Block until the tasks (default: all) have ended; exit 0 only if all are done.

        Exit status: 0 all done, 1 some failed, timed out or were cancelled, 3 --max-wait passed.

        \b
        Example:
          slurm-hog wait && echo all good
        """
        from . import queue

        db = _settings().open()
        task_ids = parse_ids(ids)
        if task_ids:
            queue.require_ids_exist(db, task_ids)
        show_bar = not quiet and sys.stderr.isatty()
        started = time.monotonic()
        while True:
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
                _progress(total - active, total, counts)
            if active == 0:
                break
            if max_wait is not None and time.monotonic() - started > max_wait:
                if show_bar:
                    click.echo(err=True)
                raise SystemExit(3)
            time.sleep(poll)
        if show_bar:
            click.echo(err=True)
        unsuccessful = sum(counts.get(s, 0) for s in (states.FAILED, states.TIMEOUT, states.CANCELLED))
        if unsuccessful:
            click.echo(f"{unsuccessful} of {total} tasks did not succeed", err=True)
            raise SystemExit(1)

    return wait


def _progress(ended: int, total: int, counts: dict[str, int]) -> None:
    width = 30
    filled = int(width * ended / total) if total else width
    bad = sum(counts.get(s, 0) for s in (states.FAILED, states.TIMEOUT, states.CANCELLED))
    text = f"\r[{'#' * filled}{'.' * (width - filled)}] {ended}/{total} ended"
    text += f", {counts.get(states.RUNNING, 0)} running" + (f", {bad} not ok" if bad else "")
    click.echo(text + "   ", nl=False, err=True)


@lazy("log")
def _log_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.argument("task_id", type=click.IntRange(min=1))
    @click.option("--stderr", "stream", flag_value="err", help="Print stderr instead of stdout.")
    @click.option("--stdout", "stream", flag_value="out", default=True, hidden=True)
    @click.option("--attempt", type=click.IntRange(min=1), help="Which attempt (default: the latest).")
    @db_options
    def log(task_id: int, stream: str, attempt: int | None) -> None:
        """Print a task's output (stdout, or stderr with --stderr).

        \b
        Example:
          slurm-hog log 42 --stderr | tail
        """
        from . import queue
        from .outputs import output_path

        settings = _settings()
        (detail,) = queue.get_tasks(settings.open(), [task_id])
        attempt = attempt or detail.attempt
        if attempt < 1:
            raise UsageError(f"task {task_id} has not run yet: no output")
        if attempt > detail.attempt:
            raise UsageError(f"task {task_id} has {detail.attempt} attempts, not {attempt}")
        pattern = detail.stdout_pattern if stream == "out" else detail.stderr_pattern
        path = output_path(settings.path, pattern, detail.cwd, task_id, attempt, detail.name, stream)
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 16):
                    sys.stdout.buffer.write(chunk)
        except FileNotFoundError:
            raise UsageError(f"no output file {path} (the task may not have started yet)") from None

    return log


# -- hog / monitor / doctor ------------------------------------------------------------------


def hog_options(function):
    """The options of a hog, which the monitor passes on to the hogs it starts."""
    for option in reversed(
        [
            click.option(
                "-s",
                "--cores",
                type=click.IntRange(min=1),
                help="Cores to use (default: detected).",
            ),
            click.option(
                "--gpus",
                metavar="N|LIST",
                help="GPUs: a count or ids like 0,1 (default: detected).",
            ),
            click.option("--mem", type=SIZE, help="Memory to hand out (default: detected)."),
            click.option(
                "-t",
                "--walltime",
                type=DURATION,
                help="Leave after this long (default: from SLURM).",
            ),
            click.option(
                "--end-time",
                type=click.FloatRange(min=0),
                metavar="EPOCH",
                help="Leave by this time (epoch seconds).",
            ),
            click.option(
                "-m",
                "--margin",
                type=DURATION,
                default="5m",
                show_default=True,
                help="Start tasks without --time only while more than this remains.",
            ),
            click.option(
                "--idle-timeout",
                type=DURATION,
                default="60s",
                show_default=True,
                help="Leave after this long with nothing to run.",
            ),
            click.option(
                "--heartbeat",
                type=DURATION,
                default="30s",
                show_default=True,
                help="How often to beat.",
            ),
        ]
    ):
        function = option(function)
    return function


@lazy("hog")
def _hog_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @hog_options
    @click.option("--hog-id", type=int, hidden=True)
    @click.option("--allow-insecure", is_flag=True, hidden=True)
    @db_options
    def hog(hog_id: int | None, allow_insecure: bool, **options) -> None:
        """Run tasks from the queue on this node until it is empty or the walltime runs low.

        Normally started by `monitor`; run it yourself inside an allocation to use it at once.
        SIGTERM stops now (tasks go back to the queue), SIGINT or SIGUSR1 drains.

        \b
        Example:
          srun -N1 --exclusive slurm-hog hog --margin 10m
        """
        from .runner import HogConfig, run_hog

        _configure_logging()
        settings = _settings()
        config = HogConfig.from_options(settings.path, settings.timeout_s, hog_id=hog_id, **options)
        raise SystemExit(run_hog(config, allow_insecure=allow_insecure))

    return hog


@lazy("monitor")
def _monitor_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.option(
        "-c",
        "--command-prefix",
        "prefix",
        metavar="PREFIX",
        help="How to start a hog, e.g. 'srun -N1 --exclusive -t 4:00:00' (default nohup).",
    )
    @click.option(
        "-b",
        "--hogs",
        type=click.IntRange(min=0),
        default=1,
        show_default=True,
        help="Most hogs at once.",
    )
    @click.option("--backend", type=click.Choice(["prefix", "sbatch"]), default="prefix", show_default=True)
    @click.option("--sbatch-args", default="", help="Extra sbatch options for the sbatch backend.")
    @click.option("--poll", type=DURATION, default="5s", show_default=True, help="Time between passes.")
    @click.option("--once", is_flag=True, help="Keep hogs going until the queue is empty, then exit.")
    @click.option(
        "--daemon",
        "action",
        flag_value="daemon",
        help="Detach; pid and log files beside the database.",
    )
    @click.option("--status", "action", flag_value="status", help="Is a detached monitor running?")
    @click.option("--stop", "action", flag_value="stop", help="Stop the detached monitor (hogs go on).")
    @hog_options
    @db_options
    def monitor(
        prefix: str | None,
        hogs: int,
        backend: str,
        sbatch_args: str,
        poll: float,
        once: bool,
        action: str | None,
        **hog_settings,
    ) -> None:
        """Keep up to --hogs hogs submitted while tasks wait; replace hogs that die.

        \b
        Example:
          slurm-hog monitor -c "srun -N1 --exclusive -t 4:00:00" --hogs 8 --daemon
          slurm-hog monitor --backend sbatch --sbatch-args "-p short" -t 1h --hogs 4
        """
        from .monitor import MonitorConfig, daemon_status, run_monitor, start_daemon, stop_daemon

        _configure_logging()
        settings = _settings()
        config = MonitorConfig.from_options(
            settings.path,
            settings.timeout_s,
            prefix=prefix,
            hogs=hogs,
            backend=backend,
            sbatch_args=sbatch_args,
            poll_s=poll,
            once=once,
            hog_settings=hog_settings,
        )
        if action == "status":
            message, running = daemon_status(config)
            click.echo(message)
            raise SystemExit(0 if running else 1)
        if action == "stop":
            click.echo(stop_daemon(config))
            return
        if action == "daemon":
            click.echo(start_daemon(config))
            return
        raise SystemExit(run_monitor(config))

    return monitor


@lazy("doctor")
def _doctor_command() -> click.Command:
    @click.command(context_settings=CONTEXT)
    @click.option("--processes", type=click.IntRange(2, 64), default=4, show_default=True)
    @click.option(
        "-c",
        "--command-prefix",
        "prefix",
        metavar="PREFIX",
        help="Also contend from processes started with this prefix (e.g. 'srun -N2').",
    )
    @db_options
    def doctor(processes: int, prefix: str | None) -> None:
        """Check that locking works on the database's filesystem, from several processes at once.

        A filesystem without coherent locks would corrupt the queue silently.

        \b
        Example:
          slurm-hog doctor -c "srun -N2 --ntasks-per-node=2"
        """
        _run_doctor(_settings(), processes, prefix)

    return doctor


def _run_doctor(settings: Settings, processes: int, prefix: str | None) -> None:
    from .doctor import check_locking

    report = check_locking(settings.path, processes=processes, prefix=prefix)
    click.echo(report.text)
    if not report.ok:
        raise SystemExit(1)


def _configure_logging() -> None:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")


def main() -> None:
    try:
        cli.main(prog_name="slurm-hog")
    except BrokenPipeError:
        # `slurm-hog show | head` closes the pipe early: not an error.
        sys.stderr.close()
        raise SystemExit(0) from None
