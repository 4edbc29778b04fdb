"""The commands that run hogs: hog, monitor, doctor."""

from typing import TYPE_CHECKING

import click

from hog.cli.group import CONTEXT, DURATION, SIZE, HogCommand, Settings, current_settings, db_options
from hog.pilot.options import HogOptions

if TYPE_CHECKING:
    from hog.fleet.monitor import MonitorConfig

# -- hog / monitor / doctor ------------------------------------------------------------------


def hog_options(function):
    """The options of a hog, which the monitor passes on to the hogs it starts; each is named as
    its field of HogOptions, whose defaults they show."""
    defaults = HogOptions()
    for option in reversed(
        [
            click.option(
                "-s",
                "--cores",
                "cores",
                type=click.IntRange(min=1),
                help="Cores to use (default: detected).",
            ),
            click.option(
                "--gpus",
                "gpus",
                metavar="N|LIST",
                help="GPUs: a count or ids like 0,1 (default: detected).",
            ),
            click.option("--mem", "mem_bytes", type=SIZE, help="Memory to hand out (default: detected)."),
            click.option(
                "-t",
                "--walltime",
                "walltime_s",
                type=DURATION,
                help="Leave after this long (default: from SLURM).",
            ),
            click.option(
                "--end-time",
                "end_at",
                type=click.FloatRange(min=0),
                metavar="EPOCH",
                help="Leave by this time (epoch seconds).",
            ),
            click.option(
                "-m",
                "--margin",
                "margin_s",
                type=DURATION,
                default=defaults.margin_s,
                show_default=f"{defaults.margin_s:g}s",
                help="Start tasks without --time only while more than this remains.",
            ),
            click.option(
                "--idle-timeout",
                "idle_timeout_s",
                type=DURATION,
                default=defaults.idle_timeout_s,
                show_default=f"{defaults.idle_timeout_s:g}s",
                help="Leave after this long with nothing to run.",
            ),
            click.option(
                "--heartbeat",
                "heartbeat_s",
                type=DURATION,
                default=defaults.heartbeat_s,
                show_default=f"{defaults.heartbeat_s:g}s",
                help="How often to beat.",
            ),
        ]
    ):
        function = option(function)
    return function


@click.command(cls=HogCommand, context_settings=CONTEXT)
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
    from hog.pilot.runner import run_hog

    configure_logging()
    settings = current_settings()
    status = run_hog(
        settings.path,
        settings.timeout_s,
        HogOptions(**options),
        hog_id=hog_id,
        allow_insecure=allow_insecure,
    )
    raise SystemExit(status)


@click.command(cls=HogCommand, context_settings=CONTEXT)
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
def monitor(action: str | None, **params) -> None:
    """Keep up to --hogs hogs submitted while tasks wait; replace hogs that die.

    \b
    Example:
      slurm-hog monitor -c "srun -N1 --exclusive -t 4:00:00" --hogs 8 --daemon
      slurm-hog monitor --backend sbatch --sbatch-args "-p short" -t 1h --hogs 4
    """
    from hog.fleet.monitor import daemon_status, run_monitor, start_daemon, stop_daemon

    configure_logging()
    config = monitor_config(current_settings(), **params)
    if action == "status":
        message, running = daemon_status(config)
        click.echo(message)
        raise SystemExit(0 if running else 1)
    if action == "stop":
        click.echo(stop_daemon(config))
        return
    if action == "daemon":
        verbosity = click.get_current_context().find_root().params.get("verbose", 0)
        click.echo(start_daemon(config, verbosity))
        return
    raise SystemExit(run_monitor(config))


def monitor_config(
    settings: Settings,
    prefix: str | None,
    hogs: int,
    backend: str,
    sbatch_args: str,
    poll: float,
    once: bool,
    **options,
) -> "MonitorConfig":
    """The monitor's configuration from its parsed options; the rest are its hogs' options."""
    from hog.fleet.monitor import MonitorConfig

    return MonitorConfig.from_options(
        settings.path,
        settings.timeout_s,
        prefix=prefix,
        hogs=hogs,
        backend=backend,
        sbatch_args=sbatch_args,
        poll_s=poll,
        once=once,
        hog_options=HogOptions(**options),
    )


@click.command(cls=HogCommand, context_settings=CONTEXT)
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
    run_doctor(current_settings(), processes, prefix)


def run_doctor(settings: Settings, processes: int, prefix: str | None) -> None:
    from hog.doctor import check_locking

    report = check_locking(settings.path, processes=processes, prefix=prefix)
    click.echo(report.text)
    if not report.ok:
        raise SystemExit(1)


def configure_logging() -> None:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
