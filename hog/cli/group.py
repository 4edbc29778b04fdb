"""The command line: parses, calls the core, renders. No SQL and no queue logic here."""

import os
import sys
from collections.abc import Callable

import click

from hog import __version__
from hog.cli.render import FORMATS
from hog.errors import HogError, UsageError
from hog.pools import check_pool
from hog.store.db import DEFAULT_DB, DEFAULT_TIMEOUT_S, Database, open_database
from hog.timeutil import DURATION_FORMS, parse_duration, parse_size

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


def duration_option(*names: str, help: str, **attributes):
    """An option taking a DURATION, whose help says the forms and what a bare number means."""
    return click.option(*names, type=DURATION, help=f"{help} DURATION: {DURATION_FORMS}.", **attributes)


SIZE = ParsedType("SIZE", parse_size, int)


class PoolType(click.ParamType):
    """A pool's name (hog.pools), refused as a usage error when it holds odd characters."""

    name = "NAME"

    def convert(self, value, param, ctx):
        try:
            return check_pool(value)
        except UsageError as error:
            self.fail(str(error), param, ctx)


POOL = PoolType()


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
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS, case_sensitive=False),
        help="Output format (default table).",
    )(function)


def output_format(fmt: str | None, as_json: bool) -> str:
    if as_json and fmt not in (None, "json"):
        raise UsageError(f"--json and --format {fmt} disagree: give one of them")
    return "json" if as_json else (fmt or "table").lower()


def current_settings() -> Settings:
    return click.get_current_context().ensure_object(Settings)


def _print_version(ctx: click.Context) -> None:
    click.echo(f"slurm-hog {__version__}")
    ctx.exit()


class _HogFailure(click.ClickException):
    """A HogError on its way out: one line on stderr and the error's exit status."""

    def __init__(self, error: HogError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"slurm-hog: error: {self.message}", err=True)


# Every command: its name and the module that defines it at module level under that name. Only
# the module of the command that runs is imported (start-up time).
COMMANDS = {
    **dict.fromkeys(
        ("init", "check", "show", "cancel", "retry", "cleanup"),
        "hog.cli.tasks",
    ),
    "submit": "hog.cli.submit",
    "log": "hog.cli.logs",
    **dict.fromkeys(("status", "wait"), "hog.cli.progress"),
    **dict.fromkeys(("hog", "monitor", "doctor"), "hog.cli.hogs"),
    **dict.fromkeys(("release", "export", "deps"), "hog.cli.workflows"),
    "kind": "hog.cli.kinds",
    "tune": "hog.cli.tune",
    **dict.fromkeys(("report", "stats"), "hog.cli.report"),
    "hogs": "hog.cli.steer",
    "run": "hog.cli.run",
}


def _show_help(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


class PlainHelp:
    """Makes --help without click's translated help text, which imports locale on every start."""

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        names = self.get_help_option_names(ctx)  # type: ignore[attr-defined]
        if names and self.add_help_option and getattr(self, "_help_option", False) is None:  # type: ignore[attr-defined]
            self._help_option = click.Option(
                names,
                is_flag=True,
                is_eager=True,
                expose_value=False,
                callback=_show_help,
                help="Show this message and exit.",
            )
        return super().get_help_option(ctx)  # type: ignore[misc]


class HogCommand(PlainHelp, click.Command):
    pass


class HogGroup(PlainHelp, click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMANDS:
            import importlib

            command = getattr(importlib.import_module(COMMANDS[name]), name)
            assert isinstance(command, click.Command), f"{COMMANDS[name]}.{name} is not a command"
            self.add_command(command, name)
        return self.commands.get(name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HogError as error:
            raise _HogFailure(error) from None
        except KeyboardInterrupt:
            # Ctrl-C: 130 as a shell reports it, not click's "Aborted!" with 1 ("some failed").
            click.echo("slurm-hog: interrupted", err=True)
            raise SystemExit(130) from None


@click.group(cls=HogGroup, context_settings=CONTEXT)
# Not click.version_option: its translated help text imports locale on every start.
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=lambda ctx, param, value: _print_version(ctx) if value else None,
    help="Show the version and exit.",
)
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


def main() -> None:
    try:
        cli.main(prog_name="slurm-hog")
    except BrokenPipeError:
        # `slurm-hog show | head` closes the pipe early: not an error.
        sys.stderr.close()
        raise SystemExit(0) from None
