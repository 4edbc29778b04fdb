"""The commands that run hogs: hog, monitor, doctor."""

import functools
import re
from typing import TYPE_CHECKING

import click

from hog.cli.group import (
    CONTEXT,
    POOL,
    SIZE,
    HogCommand,
    ParsedType,
    Settings,
    current_settings,
    db_options,
    duration_option,
)
from hog.errors import UsageError
from hog.pilot.options import DEFAULT_MARGIN_S, DEFAULT_MARGIN_SHARE, HogOptions, shown_duration
from hog.timeutil import DURATION_FORMS, parse_duration

if TYPE_CHECKING:
    from hog.fleet.monitor import MonitorConfig

# -- hog / monitor / doctor ------------------------------------------------------------------


# A hog's walltime and margin take no bare number: the first slurm_hog.py read `-t 4` as hours,
# SLURM reads minutes, and a guess either way wastes an allocation.
UNIT_DURATION_FORMS = "90s, 15m, 2h, 1d, or SLURM's M:S, H:M:S, D-H:M; a bare number is refused (4h or 4m?)"


def parse_unit_duration(text: str, what: str = "duration") -> float:
    """A DURATION that says its unit; a bare number is refused, naming both readings."""
    number = text.strip()
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", number):
        raise UsageError(
            f"bad {what} {text!r}: {number}h or {number}m? Give the unit "
            "(the first slurm_hog.py read hours, SLURM reads minutes)"
        )
    return parse_duration(text, what)


class GpusType(click.ParamType):
    """A count or a list of ids, checked here so that a monitor never passes a bad one on; kept
    as written, for the hog to parse again."""

    name = "N|LIST"

    def convert(self, value, param, ctx):
        from hog.pilot.resources import parse_gpus

        try:
            parse_gpus(value)
        except UsageError as error:
            self.fail(str(error), param, ctx)
        return value


UNIT_DURATION = ParsedType("DURATION", parse_unit_duration, float)
GATHER = ParsedType("DURATION", functools.partial(parse_duration, allow_zero=True), float)
GPUS = GpusType()


def hog_options(function):
    """The options of a hog, which the monitor passes on to the hogs it starts; each is named as
    its field of HogOptions, whose defaults its help shows."""
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
                type=GPUS,
                help="GPUs: a count or ids like 0,1 (default: detected).",
            ),
            click.option("--mem", "mem_bytes", type=SIZE, help="Memory to hand out (default: detected)."),
            click.option(
                "-t",
                "--walltime",
                "walltime_s",
                type=UNIT_DURATION,
                help=(
                    "Leave after this long (default: from SLURM, else never). "
                    f"DURATION: {UNIT_DURATION_FORMS}."
                ),
            ),
            click.option(
                "--end-time",
                "end_at",
                type=click.FloatRange(min=0),
                metavar="EPOCH",
                help="Leave by this time (epoch seconds), instead of --walltime.",
            ),
            click.option(
                "-m",
                "--margin",
                "margin_s",
                type=UNIT_DURATION,
                help=(
                    "Start tasks without --time only while more than this remains (default: the "
                    f"smaller of {shown_duration(DEFAULT_MARGIN_S)} and {DEFAULT_MARGIN_SHARE:.0%} "
                    f"of the allocation). DURATION: {UNIT_DURATION_FORMS}."
                ),
            ),
            duration_option(
                "--idle-timeout",
                "idle_timeout_s",
                default=defaults.idle_timeout_s,
                help=(
                    "Leave after this long with nothing to run "
                    f"(default {shown_duration(defaults.idle_timeout_s)})."
                ),
            ),
            click.option(
                "--pool",
                type=POOL,
                default=defaults.pool,
                show_default=True,
                help=(
                    "Run only tasks submitted with this --pool; a monitor serves one pool, with "
                    "its own hogs and files. NAME: letters, digits, '_', '.', '-'."
                ),
            ),
            duration_option(
                "--heartbeat",
                "heartbeat_s",
                default=defaults.heartbeat_s,
                help=(
                    f"How often to beat (default {shown_duration(defaults.heartbeat_s)}); a hog silent for "
                    "three beats and 2s more is declared lost."
                ),
            ),
        ]
    ):
        function = option(function)
    return function


@click.command(cls=HogCommand, context_settings=CONTEXT)
@hog_options
@click.option("--hog-id", type=int, hidden=True)
@click.option("--allow-insecure", is_flag=True, hidden=True)
# `tune`'s hogs run only the sample it put in a bundle of its own.
@click.option("--bundle", hidden=True)
@db_options
def hog(hog_id: int | None, allow_insecure: bool, bundle: str | None, **options) -> None:
    """Run tasks from the queue on this node until it is empty or the walltime runs low.

    Normally started by `monitor`; run it yourself inside an allocation to use it at once.
    SIGTERM stops now (tasks go back to the queue), SIGINT or SIGUSR1 drains; `slurm-hog hogs
    stop N [--now]` does the same from anywhere, through the queue.

    \b
    Example:
      srun -N1 --exclusive slurm-hog hog --margin 10m
      srun -N1 --exclusive --gres=gpu:4 slurm-hog hog --pool gpu
    """
    from hog.pilot.runner import run_hog
    from hog.pilot.walltime import check_options

    parsed = HogOptions(**options)
    check_options(parsed)
    configure_logging()
    settings = current_settings()
    status = run_hog(
        settings.path,
        settings.timeout_s,
        parsed,
        hog_id=hog_id,
        allow_insecure=allow_insecure,
        bundle=bundle,
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
    help="Most hogs at once (a hog counts until its process or job has ended).",
)
@click.option(
    "--backend",
    type=click.Choice(["prefix", "sbatch"]),
    default="prefix",
    show_default=True,
    help="How hogs start: a process under --command-prefix, or a batch job through sbatch.",
)
@click.option("--sbatch-args", default="", help="Extra sbatch options for the sbatch backend.")
@duration_option("--poll", default="5s", help="Time between passes (default 5s).")
@click.option(
    "--gather",
    type=GATHER,
    default="0",
    help="Once a task waits, wait up to this long for a hog-full of tasks before starting a hog "
    f"for fewer (default 0: at once). DURATION: {DURATION_FORMS}.",
)
@click.option("--once", is_flag=True, help="Keep hogs going until the queue is empty, then exit.")
@click.option("--daemon", is_flag=True, help="Detach; pid and log files beside the database.")
@click.option("--status", is_flag=True, help="Is a detached monitor running?")
@click.option("--stop", is_flag=True, help="Stop the detached monitor (hogs go on).")
@click.option("--drain", is_flag=True, help="With --stop: also drain the hogs monitors of its pool started.")
@click.option("--log", "show_log", is_flag=True, help="Print the detached monitor's log.")
@click.option("--follow", is_flag=True, help="With --log: print what is added, until the monitor stops.")
@hog_options
@db_options
def monitor(
    daemon: bool, status: bool, stop: bool, drain: bool, show_log: bool, follow: bool, **params
) -> None:
    """Keep up to --hogs hogs submitted while tasks wait, as many as their cores, GPUs and memory
    can use; replace hogs that die.

    One monitor serves one pool (--pool, default 'default'): run one per pool, each with its own
    prefix or sbatch arguments, walltime and --hogs; --daemon, --status and --stop act on the
    monitor of the pool given.

    \b
    Example:
      slurm-hog monitor -c "srun -N1 --exclusive -t 4:00:00" --hogs 8 --daemon
      slurm-hog monitor --backend sbatch --sbatch-args "-p short" -t 1h --hogs 4
      slurm-hog monitor --log --follow
      slurm-hog monitor --stop --drain
      slurm-hog monitor --pool gpu --backend sbatch --sbatch-args "-p gpu --gres=gpu:4" -t 4h \\
          --hogs 16 --gather 30s --daemon
    """
    from hog.fleet.daemon import daemon_status, run_monitor, start_daemon, stop_daemon

    action = monitor_action(daemon=daemon, status=status, stop=stop, log=show_log)
    if drain and action != "stop":
        raise UsageError("--drain goes with --stop: `slurm-hog monitor --stop --drain`")
    if follow and action != "log":
        raise UsageError("--follow goes with --log: `slurm-hog monitor --log --follow`")
    configure_logging()
    config = monitor_config(current_settings(), **params)
    if action == "log":
        _monitor_log(config, follow)
        return
    if action in (None, "daemon"):
        from hog.pilot.walltime import check_options

        # Each hog would refuse them, and the monitor would only start and lose hogs.
        check_options(config.hog_options)
    if action == "status":
        message, running = daemon_status(config)
        click.echo(message)
        raise SystemExit(0 if running else 1)
    if action == "stop":
        click.echo(
            stop_daemon(config, "the hogs monitors started drain" if drain else "its hogs keep running")
        )
        if drain:
            _drain_monitor_hogs(config)
        return
    if action == "daemon":
        verbosity = click.get_current_context().find_root().params.get("verbose", 0)
        click.echo(start_daemon(config, verbosity))
        return
    raise SystemExit(run_monitor(config))


def _drain_monitor_hogs(config: "MonitorConfig") -> None:
    """monitor --stop --drain: the hogs that monitors of its pool started drain (those started by
    hand stay, and so do other pools' hogs)."""
    from hog.cli.steer import report_stops
    from hog.fleet.steering import stop_hogs
    from hog.store import hoglist, steering
    from hog.store.db import open_database

    db = open_database(config.db_path, config.timeout_s)
    started = [
        hog["id"]
        for hog in hoglist.live_hogs(db)
        if hog["pool"] == config.pool and hog["backend"] in ("prefix", "sbatch")
    ]
    outcome = stop_hogs(db, started, steering.DRAIN, say=click.echo)
    report_stops(outcome, asked=False)
    if outcome.unreachable:
        raise SystemExit(1)


def _monitor_log(config: "MonitorConfig", follow: bool) -> None:
    """monitor --log [--follow]: its log, followed while a monitor serves the queue."""
    from hog.cli.logs import print_log
    from hog.store import outlook
    from hog.store.db import open_database

    db = open_database(config.db_path, config.timeout_s)
    running = outlook.monitor_alive(db)
    if follow and not running:
        click.echo(f"no monitor serves {config.db_path}: its log will not grow", err=True)
    print_log(
        config.log_path, "the monitor's log", (lambda: not outlook.monitor_alive(db)) if follow else None
    )


def monitor_action(**flags: bool) -> str | None:
    """The one of --daemon, --status and --stop given, if any."""
    given = [name for name, value in flags.items() if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join('--' + name for name in given)} ask for different things: give one")
    return given[0] if given else None


def monitor_config(
    settings: Settings,
    prefix: str | None,
    hogs: int,
    backend: str,
    sbatch_args: str,
    poll: float,
    once: bool,
    gather: float,
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
        gather_s=gather,
    )


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.option(
    "--processes",
    type=click.IntRange(2, 64),
    default=4,
    show_default=True,
    help="Processes on this host that contend for the lock at once.",
)
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

    A filesystem without coherent locks would corrupt the queue silently. Then times write
    transactions and reports the commit latency and the throughput one queue file can reach there.

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
