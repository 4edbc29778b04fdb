"""submit: the command that puts tasks in the queue, and what `run` shares with it (its options,
where the task's command starts, the command's text and exact argv)."""

import re
from typing import TYPE_CHECKING

import click

from hog.cli.group import (
    CONTEXT,
    POOL,
    SIZE,
    HogCommand,
    ParsedType,
    current_settings,
    db_options,
    duration_option,
)
from hog.cli.kinds import apply_kind, kind_option
from hog.cli.workflows import workflow_options, workflow_request
from hog.errors import UsageError
from hog.pools import DEFAULT_POOL

if TYPE_CHECKING:  # the store and the library are imported by the commands that use them
    from hog.api.options import TaskOptions
    from hog.store.submitting import SubmitOptions


_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _parse_gpus(text: str, what: str) -> int:
    from hog.gpushare import parse_gpus  # fractions imports decimal: only when --gpus is given

    return parse_gpus(text, what)


# GPU units (hog.gpushare): whole GPUs or a share of one.
GPUS = ParsedType("GPUS", _parse_gpus, int)


class SubmitCommand(HogCommand):
    """Options end at the first word of the command, as with srun, sbatch, env and xargs: the
    rest belongs to the task, exactly (click stops at the first argument that is no option)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["submit_args"] = list(args)
        return super().parse_args(ctx, args)


def after_double_dash(args: list[str], command: tuple[str, ...]) -> bool:
    """Whether `--` came right before the command: the command is always the tail of the args."""
    return bool(command) and len(args) > len(command) and args[-len(command) - 1] == "--"


# Bounds far beyond any node, that keep sums of many tasks' needs within sqlite's integers.
@click.option(
    "-c", "--cores", type=click.IntRange(1, 100_000), default=1, show_default=True, help="Cores per task."
)
@click.option(
    "-g",
    "--gpus",
    type=GPUS,
    default="0",
    show_default=True,
    help="GPUs per task: a bare number is whole GPUs (2); a share of one GPU packs tasks onto it: "
    "0.5 runs two per GPU, 0.25 four, 1/3 three (1/k for k up to 16).",
)
@click.option("--mem", type=SIZE, help="Memory per task: 500M, 4G; a bare number is MiB, as in SLURM.")
@duration_option("-t", "--time", "time_limit", help="Time limit of each task (default: none).")
@click.option(
    "--priority",
    type=click.IntRange(-1_000_000, 1_000_000),
    default=0,
    show_default=True,
    help="Higher runs first; equal priorities run oldest first.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 1000),
    default=0,
    show_default=True,
    help="Attempts more after a failure or time-out.",
)
@click.option("--name", help="A name to find the tasks by (show --name).")
@click.option(
    "--pool",
    type=POOL,
    default=DEFAULT_POOL,
    show_default=True,
    help="The pool of hogs that runs the tasks (`monitor --pool`, `hog --pool`).",
)
@click.option(
    "-o",
    "--stdout",
    "stdout_pattern",
    metavar="PATTERN",
    help="Stdout file, relative to --cwd; {id}, {attempt}, {name}, {index} and {entry} are replaced "
    "(default: beside the queue; /dev/null keeps nothing).",
)
@click.option(
    "-e",
    "--stderr",
    "stderr_pattern",
    metavar="PATTERN",
    help="Stderr file, same placeholders.",
)
@click.option("--cwd", metavar="DIR", help="Working folder (default: here).")
@kind_option
def task_options(function):
    """Gives a command the options stacked above, those of a task: submit and run share them,
    so an option added there reaches both."""
    function.__click_params__ = [*getattr(function, "__click_params__", []), *task_options.__click_params__]
    return function


@click.command(cls=SubmitCommand, context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.argument("command", nargs=-1)
@click.option("-f", "--file", "task_file", metavar="FILE", help="One task per line ('-' for stdin).")
@task_options
@click.option("--json", "as_json", is_flag=True, help="Print the new ids as JSON.")
@workflow_options
@db_options
@click.pass_context
def submit(ctx: click.Context, command: tuple[str, ...], task_file: str | None, **options) -> None:
    """Add tasks to the queue.

    \b
    submit "shell command"          one string, a command for /bin/sh
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
    from hog.store import submitting

    as_json = options.pop("as_json")
    kind_name = options.pop("kind")
    db = current_settings().open() if kind_name is not None else None
    if db is not None:
        options = apply_kind(ctx, options, kind_name, db)
    request = workflow_request(options)
    if request.workflow is not None and (command or task_file is not None):
        raise UsageError("give either a command, --file or --workflow, not two of them")
    if task_file is not None and command:
        raise UsageError("give either a command or --file, not both")
    if task_file is None and not command and request.workflow is None:
        raise UsageError("nothing to submit: give a command, `-- PROGRAM ARGS`, or --file FILE")
    exact_argv = after_double_dash(ctx.meta["submit_args"], command)
    submit_options, assigned = task_submit_options(options, command, exact_argv, kind_name)
    db = db or current_settings().open()
    if request.workflow is not None:
        from hog.cli.workflows import submit_workflow

        first, last = submit_workflow(db, request, submit_options)
    else:
        if task_file is not None:
            from hog.taskfile import read_task_file

            commands = read_task_file(task_file)
        else:
            commands = [one_command(command, exact_argv, assigned)]
        if request.used:
            from hog.cli.workflows import submit_request

            first, last = submit_request(db, request, commands, submit_options)
        else:
            first, last = submitting.submit(db, commands, submit_options)
    if options["pool"] != DEFAULT_POOL:
        from hog.cli.pools import warn_if_unserved

        warn_if_unserved(db, options["pool"])
    if as_json:
        import json

        click.echo(json.dumps({"first": first, "last": last, "count": last - first + 1}))
    else:
        click.echo(str(first) if first == last else f"{first}-{last}")


def task_submit_options(
    options: dict, command: tuple[str, ...], exact_argv: bool, kind: str | None = None
) -> "tuple[SubmitOptions, int]":
    """The settings of a submission from the values of task_options, with the submitting shell's
    environment and the command's leading NAME=value words; how many such words lead it. The
    library checks them, as for its own callers (hog.api.options)."""
    from hog.store import submitting

    environment = submitting.captured_environment()
    # `submit NAME=value program args`: as in the shell and env, leading assignments set the
    # task's environment; the program is the first word after them.
    assignments = () if exact_argv or len(command) < 2 else _leading_assignments(command)
    environment.update(word.split("=", 1) for word in assignments)
    submit_options = library_options(options, environment, kind).resolved(spell=lambda field: f"--{field}")
    if assignments and len(assignments) == len(command):
        raise UsageError("the command has only variable assignments: give the program to run after them")
    return submit_options, len(assignments)


def library_options(options: dict, environment: dict[str, str], kind: str | None) -> "TaskOptions":
    """The library's task options from the values of task_options (one place to pass a new one on)."""
    from hog.api.options import TaskOptions
    from hog.gpushare import text

    return TaskOptions(
        cores=options["cores"],
        gpus=text(options["gpus"]),
        mem=options["mem"],
        time=options["time_limit"],
        priority=options["priority"],
        retries=options["retries"],
        name=options["name"],
        stdout=options["stdout_pattern"],
        stderr=options["stderr_pattern"],
        cwd=options["cwd"],
        environment=environment,
        kind=kind,
        pool=options["pool"],
    )


def _leading_assignments(words: tuple[str, ...]) -> tuple[str, ...]:
    """The NAME=value words that start a command."""
    count = 0
    while count < len(words) and _ASSIGNMENT.match(words[count]):
        count += 1
    return words[:count]


def one_command(words: tuple[str, ...], exact_argv: bool, assignments: int = 0) -> tuple[str, str | None]:
    """The command text and, for several words, the exact argv (after `assignments` NAME=value)."""
    if any("\0" in word for word in words):
        raise UsageError("the command contains a NUL byte, which no program can receive")
    from hog.store.submitting import encode_argv, readable

    if len(words) == 1 and not exact_argv:
        if not words[0].strip():
            raise UsageError("the command is empty: give the program to run")
        text = readable(words[0])
        # Bytes that are not UTF-8 stay exact in the argv; the text shows them as escapes.
        return text, None if text == words[0] else encode_argv(["/bin/sh", "-c", words[0]])
    if not words[assignments]:
        raise UsageError("the program name is empty: give the program to run after --")
    import shlex

    return readable(shlex.join(words)), encode_argv(list(words[assignments:]))
