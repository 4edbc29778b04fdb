"""`kind set/list/delete`, and `apply_kind`, which lays a kind under a command's own options.

A kind's options are submit's own: `kind set` takes them with submit's parameters (same types,
same checks, same help), and keeps only those given on its command line, as typed.
"""

import time

import click
from click.core import ParameterSource

from hog.cli.group import (
    CONTEXT,
    HogCommand,
    PlainHelp,
    current_settings,
    db_options,
    format_options,
    output_format,
)
from hog.cli.render import emit
from hog.errors import UsageError
from hog.store.db import Database

# submit's options that say what to submit, or how to answer, not what its tasks are like.
NOT_IN_KINDS = frozenset(
    {
        "command",
        "task_file",
        "as_json",
        "kind",
        "after_ok",
        "after_ok_too",
        "after_any",
        "hold",
        "bundle",
        "array",
        "each_line",
        "workflow",
    }
)
_GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.PROMPT)


def kind_option(function):
    return click.option(
        "--kind",
        metavar="NAME",
        help="Take the options of this kind (`slurm-hog kind list`); options given here win.",
    )(function)


def apply_kind(ctx: click.Context, values: dict, name: str | None, db: Database) -> dict:
    """`values` (the parsed options of `ctx`'s command) with those of kind `name` in place of
    the ones not given on the command line. Any command may call it (submit, run, the make
    SHELL): options of the kind that the command does not have are left out."""
    if name is None:
        return values
    from hog.store.kinds import get_kind

    kind = get_kind(db, name)
    params = {param.name: param for param in ctx.command.params}
    for option, raw in kind.options.items():
        param = params.get(option)
        if param is None or option not in values or ctx.get_parameter_source(option) in _GIVEN:
            continue
        try:
            values[option] = param.process_value(ctx, raw)
        except click.BadParameter as error:
            raise UsageError(
                f"kind {name!r}: {option_text(param, raw)}: {error.format_message()}; "
                f"set the kind again with `slurm-hog kind set {name} ...`"
            ) from None
    return values


def option_text(param: click.Parameter, raw: object) -> str:
    """An option as typed: --gpus 0.5, --hold, --after 3 --after 4."""
    flag = max(param.opts, key=len)
    if raw is True:
        return flag
    import shlex

    values = raw if isinstance(raw, list) else [raw]
    return " ".join(f"{flag} {shlex.quote(str(value))}" for value in values)


def kind_options() -> list[click.Option]:
    from hog.cli.submit import submit

    return [
        param
        for param in submit.params
        if isinstance(param, click.Option) and param.expose_value and param.name not in NOT_IN_KINDS
    ]


class KindGroup(PlainHelp, click.Group):
    """`set` is made from submit's options on first use: submit's module imports this one."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, "set"})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name == "set" and name not in self.commands:
            self.add_command(_set_command())
        return super().get_command(ctx, name)


@click.group(cls=KindGroup, context_settings=CONTEXT)
def kind() -> None:
    """Named task defaults, stored in the queue and shared by everyone who uses it.

    A kind holds submit options; `submit --kind NAME` takes them, and options given on its
    command line win.

    \b
    Example:
      slurm-hog kind set train --gpus 0.5 --time 2h --mem 16G
      slurm-hog submit --kind train -- python train.py --seed 7
      slurm-hog kind list
      slurm-hog kind delete train
    """


class KindSetCommand(HogCommand):
    """Keeps the options as typed (ctx.meta["typed"]) beside click's parse, which checks them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not ctx.resilient_parsing:
            typed, _, _ = self.make_parser(ctx).parse_args(args=list(args))
            ctx.meta["typed"] = typed
        return super().parse_args(ctx, args)


def _set(ctx: click.Context, kind_name: str, **values) -> None:
    """Make or replace the kind NAME with these submit options (any of submit's that describe its
    tasks; see `slurm-hog submit --help`). Setting a kind again replaces all of its options.

    \b
    Example:
      slurm-hog kind set train --gpus 0.5 --time 2h --mem 16G --retries 2
    """
    from hog.store.kinds import check_name, set_kind

    name = check_name(kind_name)
    typed = ctx.meta.get("typed", {})
    given = {
        option: typed[option]
        for option in values
        if ctx.get_parameter_source(option) in _GIVEN and option in typed
    }
    if not given:
        raise UsageError(
            f"kind {name!r} sets nothing: give submit options, like `kind set {name} --gpus 0.5 --time 2h`"
        )
    replaced = set_kind(current_settings().open(), name, given)
    params = {param.name: param for param in ctx.command.params}
    text = " ".join(option_text(params[option], raw) for option, raw in sorted(given.items()))
    click.echo(f"kind {name} {'replaced' if replaced else 'set'}: {text}")


def _set_command() -> click.Command:
    """`kind set`, with submit's options: a kind takes exactly what submit does."""
    command = KindSetCommand(
        "set",
        context_settings=CONTEXT,
        callback=click.pass_context(_set),
        params=[click.Argument(["kind_name"], metavar="NAME"), *kind_options()],
        help=_set.__doc__,
    )
    return db_options(command)


@kind.command("list", cls=HogCommand, context_settings=CONTEXT)
@format_options
@db_options
def list_command(fmt: str | None, as_json: bool) -> None:
    """The kinds of this queue and their options.

    \b
    Example:
      slurm-hog kind list --format json
    """
    from hog.store.kinds import list_kinds

    kinds = list_kinds(current_settings().open())
    fmt = output_format(fmt, as_json)
    if fmt == "json":
        rows = [(k.name, k.options, k.user, k.updated_at) for k in kinds]
        emit(("name", "options", "user", "updated_at"), rows, fmt)
        return
    params = {param.name: param for param in kind_options()}
    now = time.time()
    from hog.timeutil import format_duration

    rows = [
        (
            k.name,
            " ".join(
                option_text(params[option], raw) if option in params else f"({option} {raw})"
                for option, raw in sorted(k.options.items())
            ),
            k.user,
            f"{format_duration(now - k.updated_at)} ago",
        )
        for k in kinds
    ]
    emit(("name", "options", "user", "updated"), rows, fmt)


@kind.command("delete", cls=HogCommand, context_settings=CONTEXT)
@click.argument("names", nargs=-1, required=True)
@db_options
def delete_command(names: tuple[str, ...]) -> None:
    """Delete kinds (all or none); tasks submitted with them keep their options.

    \b
    Example:
      slurm-hog kind delete train
    """
    from hog.store.kinds import delete_kinds

    deleted = delete_kinds(current_settings().open(), list(names))
    click.echo(f"deleted kind {', '.join(deleted)}")
