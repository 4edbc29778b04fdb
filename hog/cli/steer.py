"""Steering hogs: `hogs stop`."""

from typing import TYPE_CHECKING

import click

from hog.cli.group import CONTEXT, HogCommand, PlainHelp, current_settings, db_options, duration_option
from hog.errors import HogError, UsageError
from hog.ids import parse_ids
from hog.timeutil import counted

if TYPE_CHECKING:
    from hog.fleet.steering import StopOutcome


class _HogsGroup(PlainHelp, click.Group):
    pass


@click.group(cls=_HogsGroup, context_settings=CONTEXT)
def hogs() -> None:
    """Steer running hogs: stop chosen ones wherever they run.

    \b
    Example:
      slurm-hog hogs stop 3 7          # drain hogs 3 and 7
      slurm-hog hogs stop --all --now  # stop every hog; running tasks go back
    """


@hogs.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("hog_ids", nargs=-1, metavar="[N]...")
@click.option("--all", "all_hogs", is_flag=True, help="Every pending and running hog.")
@click.option(
    "--now",
    is_flag=True,
    help="Stop at once: running tasks are stopped and go back to the queue (default: drain, they finish).",
)
@duration_option(
    "--wait",
    "wait_s",
    help="How long a hog has to answer through the queue before its backend signals it "
    "(default: the hog's lease, three heartbeats and 2s).",
)
@db_options
def stop(hog_ids: tuple[str, ...], all_hogs: bool, now: bool, wait_s: float | None) -> None:
    """Drain chosen hogs (or stop them with --now), wherever they run.

    A hog reads the request from the queue within a heartbeat (at its next paced write, up to
    10 minutes, when many hogs share a slow queue file): a draining hog starts nothing new, lets
    its running tasks finish and leaves; a stopped one gives its running tasks back to the queue
    at once. A hog that does not answer in time gets SIGUSR1 (drain) or SIGTERM
    (now): directly when it runs on this host, through scancel when it runs in SLURM. A hog that
    has not started yet is cancelled. N are hog ids (`slurm-hog show -H`), ranges or lists.

    \b
    Example:
      slurm-hog hogs stop 12
      slurm-hog hogs stop 3-5 --now --wait 30s
    """
    from hog.fleet.steering import stop_hogs
    from hog.store import outlook, steering

    ids = parse_ids(hog_ids, what="hog id")
    if bool(ids) == all_hogs:
        raise UsageError("say which hogs to stop: hog ids (`slurm-hog show -H` lists them), or --all")
    db = current_settings().open()
    mode = steering.NOW if now else steering.DRAIN
    outcome = stop_hogs(db, ids or None, mode, wait_s, say=click.echo)
    report_stops(outcome, asked=bool(ids))
    if outcome.answered + outcome.signalled + outcome.cancelled and outlook.monitor_alive(db):
        click.echo(
            "a monitor serves this queue and starts new hogs while tasks wait: "
            "`slurm-hog monitor --stop --drain` stops it and drains its hogs"
        )
    if outcome.unreachable:
        raise SystemExit(1)


def report_stops(outcome: "StopOutcome", asked: bool) -> None:
    """What `stop_hogs` could not do, on stderr; `asked`: the user named the hogs."""
    for hog_id, state in outcome.skipped[:20]:
        click.echo(f"hog {hog_id} is already {state}: left alone", err=True)
    for problem in outcome.unreachable:
        click.echo(f"slurm-hog: {problem}", err=True)
    total = outcome.answered + outcome.signalled + outcome.cancelled + len(outcome.unreachable)
    if total == 0 and not asked:
        click.echo("no hog is pending or running: nothing to stop")
    elif total == 0:
        raise HogError(f"nothing stopped: {counted(len(outcome.skipped), 'hog')} had already ended")
