"""The command that runs one task on the hogs as if it ran here: run."""

import click

from hog.cli.follow import DEFAULT_MAX_WAIT_S, EXIT_GAVE_UP, Follower, Signals, attempt_outputs
from hog.cli.group import CONTEXT, current_settings, db_options, duration_option
from hog.cli.kinds import apply_kind
from hog.cli.submit import SubmitCommand, after_double_dash, one_command, task_options, task_submit_options


@click.command(cls=SubmitCommand, context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.argument("command", nargs=-1)
@task_options
@duration_option(
    "--max-wait",
    default=f"{DEFAULT_MAX_WAIT_S:.0f}s",
    show_default=True,
    help=f"Give up (cancel the task, exit {EXIT_GAVE_UP}) when no hog has been alive and no monitor has "
    "served the queue for this long while the task waits.",
)
@db_options
@click.pass_context
def run(ctx: click.Context, command: tuple[str, ...], max_wait: float, **options) -> None:
    """Run one task on the hogs as if here: its output on yours while it runs, its exit status
    yours (128+N for signal N).

    \b
    run "shell command"          one string, a command for /bin/sh
    run -- PROGRAM [ARG...]      exactly this program and these arguments

    Takes submit's options. Ctrl-C or SIGTERM cancels the task and waits until it is gone.
    Output comes from the task's files (-o/-e, else beside the queue), at most half a second
    behind; a task submitted with -o /dev/null shows none.

    \b
    Example:
      slurm-hog run -c 4 --mem 8G -- ./simulate --seed 7 > result.txt
      slurm-hog run 'make -C sub all' || echo failed
    """
    from hog.errors import UsageError
    from hog.store import submitting

    # From before the submit: a Ctrl-C after it cancels the task instead of leaving it behind.
    signals = Signals()
    if not command:
        raise UsageError("nothing to run: give a command, or `-- PROGRAM ARGS`")
    settings = current_settings()
    db = settings.open()
    kind_name = options.pop("kind")
    options = apply_kind(ctx, options, kind_name, db)
    exact_argv = after_double_dash(ctx.meta["submit_args"], command)
    submit_options, assigned = task_submit_options(options, command, exact_argv, kind_name)
    task_id, _ = submitting.submit(db, [one_command(command, exact_argv, assigned)], submit_options)

    outputs = attempt_outputs(settings.path, submit_options, task_id)
    status = Follower(db, task_id, outputs, "slurm-hog run", max_wait, signals).follow()
    ctx.exit(status)
