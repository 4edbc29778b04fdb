"""`tune`: run samples of a workload at several tasks per GPU (or cores per task), print what
each setting did and the best one as a `kind set` line to paste."""

import shlex

import click

from hog.cli.group import (
    CONTEXT,
    SIZE,
    HogCommand,
    current_settings,
    db_options,
    format_options,
    output_format,
)
from hog.cli.hogs import GPUS
from hog.cli.render import emit
from hog.errors import UsageError

COLUMNS = ("setting", "option", "tasks", "done", "seconds", "tasks_per_s", "peak_rss_kib")


def _numbers(text: str, option: str, most: int) -> list[int]:
    """`1,2,4` as [1, 2, 4]: each from 1 to `most`, none twice."""
    words = [word.strip() for word in text.split(",")]
    if not all(word.isdigit() and 1 <= int(word) <= most for word in words):
        raise UsageError(f"bad {option} {text!r}: give whole numbers from 1 to {most}, like 1,2,4")
    numbers = [int(word) for word in words]
    if len(set(numbers)) != len(numbers):
        raise UsageError(f"bad {option} {text!r}: a number appears twice")
    return numbers


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.option("--name", help="Tune the waiting tasks of this name (submit --name).")
@click.option("--kind", help="Tune the waiting tasks submitted with this kind (submit --kind).")
@click.option(
    "--per-gpu",
    default="1,2,4",
    show_default=True,
    metavar="LIST",
    help="For GPU work (its tasks ask for GPUs): tasks per GPU to try; 1,2,4 tries --gpus 1, 0.5 "
    "and 0.25 (each from 1 to 16).",
)
@click.option(
    "--cores-per-task",
    default="1,2,4",
    show_default=True,
    metavar="LIST",
    help="For CPU work (its tasks ask for no GPU): cores per task to try.",
)
@click.option(
    "--sample",
    type=click.IntRange(1, 100_000),
    default=8,
    show_default=True,
    help="Tasks to run at each setting (a count).",
)
@click.option(
    "-s", "--cores", type=click.IntRange(min=1), help="Cores of the hog that runs them (default: detected)."
)
@click.option("--gpus", type=GPUS, help="GPUs of that hog: a count, or ids like 0,1 (default: detected).")
@click.option(
    "--mem", "mem_bytes", type=SIZE, help="Memory of that hog: 64G; a bare number is MiB (default: detected)."
)
@click.option(
    "-c",
    "--command-prefix",
    "prefix",
    metavar="PREFIX",
    help="Start that hog through this, e.g. 'srun -N1 --gres=gpu:4 -t 1:00:00' (default: on this machine).",
)
@format_options
@db_options
def tune(
    name: str | None,
    kind: str | None,
    per_gpu: str,
    cores_per_task: str,
    sample: int,
    cores: int | None,
    gpus: str | None,
    mem_bytes: int | None,
    prefix: str | None,
    fmt: str | None,
    as_json: bool,
) -> None:
    """Find how many tasks per GPU (or cores per task) run a workload fastest, by running it.

    Takes --sample waiting tasks of a name or kind for each setting in turn, gives them that
    share, and runs them on a hog started for them alone (here, or with --command-prefix), which
    claims nothing else. Prints each setting's throughput (tasks done per second, from the
    first start to the last end) and the peak memory of a task, and the best setting as a
    `kind set` line to paste. The sample's tasks are recorded like any others (done, failed);
    the rest of the queue is not touched.

    \b
    Example:
      slurm-hog tune --kind train --per-gpu 1,2,4 --sample 16
      slurm-hog tune --name prep --cores-per-task 1,2,4 -c 'srun -N1 --exclusive -t 1:00:00'
    """
    from hog.fleet.tuner import Workload, best, run_trials, settings_for
    from hog.pilot.options import HogOptions

    if (name is None) == (kind is None):
        raise UsageError("tune which tasks? give --name NAME or --kind KIND (one of them)")
    fmt = output_format(fmt, as_json)
    per_gpu_list = _numbers(per_gpu, "--per-gpu", 16)
    cores_list = _numbers(cores_per_task, "--cores-per-task", 100_000)
    settings = current_settings()
    db = settings.open()
    if kind is not None:
        from hog.store.kinds import get_kind

        get_kind(db, kind)  # a kind that does not exist is an error, not "no task waits"
    workload = Workload(name, kind)
    tried = settings_for(db, workload, per_gpu_list, cores_list)
    hog = HogOptions(cores=cores, gpus=gpus, mem_bytes=mem_bytes)

    def said(trial) -> None:
        rate = trial.tasks_per_s
        click.echo(
            f"{trial.setting.label}: {trial.measured.done} of {trial.measured.tasks} done"
            + (f", {rate:.3g} tasks/s" if rate else ""),
            err=True,
        )

    trials = run_trials(db, workload, tried, sample, hog, prefix, on_trial=said)
    winner = best(trials)
    paste = None if winner is None else _kind_set_line(db, workload, winner.setting.option, settings.db_path)
    rows = [
        (
            trial.setting.label,
            f"--{trial.setting.option[0]} {trial.setting.option[1]}",
            trial.measured.tasks,
            trial.measured.done,
            None if trial.measured.seconds is None else round(trial.measured.seconds, 3),
            None if trial.tasks_per_s is None else round(trial.tasks_per_s, 3),
            trial.measured.peak_rss_kib,
        )
        for trial in trials
    ]
    if fmt == "json":
        import json

        settings_json = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
        click.echo(
            json.dumps(
                {
                    "settings": settings_json,
                    "best": None if winner is None else winner.setting.label,
                    "kind_set": paste,
                }
            )
        )
    else:
        emit(COLUMNS, rows, fmt)
    if fmt == "table":
        if winner is None:
            click.echo("best: none (no setting ran its whole sample to done: see `slurm-hog check`)")
        else:
            click.echo(f"best: {winner.setting.label}\n  {paste}")
    if winner is None:
        raise SystemExit(1)


def _kind_set_line(db, workload, option: tuple[str, str], db_path: str | None) -> str:
    """`slurm-hog kind set NAME ...` with the best setting: for a kind, all of its options with
    that one replaced (setting a kind replaces all of them)."""
    from hog.cli.kinds import kind_options, option_text

    options: dict = {}
    if workload.kind is not None:
        from hog.store.kinds import get_kind

        options = dict(get_kind(db, workload.kind).options)
    options[option[0]] = option[1]
    params = {param.name: param for param in kind_options()}
    words = " ".join(
        option_text(params[key], value) for key, value in sorted(options.items()) if key in params
    )
    target = workload.kind if workload.kind is not None else workload.name
    db_words = f" --db {shlex.quote(db_path)}" if db_path else ""
    return f"slurm-hog{db_words} kind set {shlex.quote(target or 'KIND')} {words}"
