"""Workflows on the command line: submit's options for dependencies, arrays, held bundles and
workflow files, and the commands release, export and deps."""

import re
from collections.abc import Iterable
from typing import NamedTuple

import click

from hog.cli.group import CONTEXT, HogCommand, current_settings, db_options
from hog.errors import HogError, UsageError
from hog.pools import check_pool
from hog.timeutil import counted

_ID_WORD = re.compile(r"[0-9][0-9,\s-]*")


class WorkflowRequest(NamedTuple):
    """What submit's workflow options asked for."""

    after: tuple[tuple[int | str, str], ...] = ()
    hold: bool = False
    bundle: str | None = None
    array: range | None = None
    each_line: str | None = None
    workflow: str | None = None  # a workflow file

    @property
    def used(self) -> bool:
        return self != WorkflowRequest()


def workflow_options(function):
    """submit's options for workflows (they come before the command, as every option)."""
    options = [
        click.option(
            "--after",
            "after_ok",
            multiple=True,
            metavar="SPEC",
            help="Run after these tasks end done: ids, ranges and names (12,40-45,prep); "
            "a name stands for every task bearing it now. Until then the task is blocked.",
        ),
        click.option("--after-ok", "after_ok_too", multiple=True, metavar="SPEC", help="Same as --after."),
        click.option(
            "--after-any", multiple=True, metavar="SPEC", help="Run after these tasks end, however they end."
        ),
        click.option("--hold", is_flag=True, help="Submit held: nothing runs until `release`."),
        click.option(
            "--bundle", metavar="NAME", help="Submit held into the bundle NAME (`release --bundle`)."
        ),
        click.option(
            "--array",
            metavar="FIRST-LAST[:STEP]",
            help="One task per index; {index} in the command and -o/-e, and $HOG_ARRAY_INDEX.",
        ),
        click.option(
            "--each-line",
            metavar="FILE",
            help="One task per line of FILE; {entry} (shell-quoted) in the command and -o/-e; $HOG_ENTRY.",
        ),
        click.option(
            "--workflow",
            metavar="FILE",
            help="Submit the tasks of a workflow file (JSON, or *.toml on Python 3.11+), all or none; "
            "the other options are defaults.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def workflow_request(options: dict) -> WorkflowRequest:
    """Take submit's workflow options out of `options`, parsed; refuse bad ones."""
    after = [
        (item, "ok")
        for spec in (*options.pop("after_ok"), *options.pop("after_ok_too"))
        for item in parse_after(spec)
    ]
    after += [(item, "any") for spec in options.pop("after_any") for item in parse_after(spec)]
    bundle = options.pop("bundle")
    array, each_line = options.pop("array"), options.pop("each_line")
    if array is not None and each_line is not None:
        raise UsageError("give either --array or --each-line, not both")
    return WorkflowRequest(
        after=tuple(after),
        hold=options.pop("hold") or bundle is not None,
        bundle=bundle,
        array=None if array is None else parse_array(array),
        each_line=each_line,
        workflow=options.pop("workflow"),
    )


def parse_after(spec: str) -> list[int | str]:
    """`12,40-45,prep` as ids and names, in order."""
    from hog.ids import parse_ids

    items: list[int | str] = []
    for word in spec.split(","):
        word = word.strip()
        if not word:
            continue
        if _ID_WORD.fullmatch(word):
            items.extend(parse_ids([word]))
        else:
            items.append(word)
    if not items:
        raise UsageError("--after needs task ids or names, like --after 12,40-45,prep")
    return items


def parse_array(text: str) -> range:
    """`1-1000`, `0-99:10` or `7` as a range of indexes; empty or reversed ones refused."""
    match = re.fullmatch(r"\s*(-?\d+)(?:\s*-\s*(-?\d+))?(?:\s*:\s*(\d+))?\s*", text)
    if not match:
        raise UsageError(f"--array {text!r}: write FIRST-LAST or FIRST-LAST:STEP, like 1-1000 or 0-99:10")
    first = int(match[1])
    last = int(match[2]) if match[2] is not None else first
    step = int(match[3]) if match[3] is not None else 1
    if last < first:
        raise UsageError(
            f"--array {text!r}: the range is reversed; write it low to high, like {last}-{first}"
        )
    if step < 1:
        raise UsageError(f"--array {text!r}: the step must be 1 or more")
    return range(first, last + 1, step)


def read_entries(path: str) -> list[str]:
    """The lines of an --each-line file (not blank ones); refuses an empty file."""
    try:
        # Text mode reads \r\n and \r as \n, so the lines are the pieces between \n.
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read()
    except OSError as error:
        raise UsageError(f"--each-line {path}: {error.strerror}") from None
    if "\0" in text:
        raise UsageError(f"--each-line {path}: a line contains a NUL byte, which no program can receive")
    entries = [entry for entry in text.split("\n") if entry.strip()]
    if not entries:
        raise UsageError(f"--each-line {path}: the file has no lines: nothing to submit")
    return entries


# What shlex.quote leaves as it is (its own test, called here without a function call per entry).
_SHELL_UNSAFE = re.compile(r"[^\w@%+=:,./-]", re.ASCII).search


def expanded(commands: Iterable[tuple[str, str | None]], request: WorkflowRequest) -> Iterable:
    """The tasks of these commands: one per array index or entry, placeholders replaced.

    A million of them must go in at least as fast as `submit --file` adds its lines: an array is
    made by sqlite (ArrayTasks), entries are plain tuples in NewTask's order.
    """
    from hog.store.workflows import ArrayTasks

    if request.array is not None:
        return ArrayTasks(commands, request.array)
    if request.each_line is not None:
        return _entry_tasks(commands, read_entries(request.each_line))
    return ((command, argv, None, None) for command, argv in commands)


def _entry_tasks(commands: Iterable[tuple[str, str | None]], entries: list[str]) -> Iterable[tuple]:
    from itertools import chain

    return chain.from_iterable(_one_per_entry(command, argv, entries) for command, argv in commands)


def _one_per_entry(command: str, argv: str | None, entries: list[str]) -> Iterable[tuple]:
    """A generator expression, not a generator: one Python frame per task, not two."""
    import shlex

    if argv:
        import json

        words = json.loads(argv)
        return (
            (shlex.join(exact), json.dumps(exact), None, entry)
            for entry in entries
            for exact in ([word.replace("{entry}", entry) for word in words],)
        )
    if "{entry}" not in command:
        return ((command, None, None, entry) for entry in entries)
    return (
        (command.replace("{entry}", shlex.quote(entry) if _SHELL_UNSAFE(entry) else entry), None, None, entry)
        for entry in entries
    )


def submit_request(
    db, request: WorkflowRequest, commands: Iterable[tuple[str, str | None]], options
) -> tuple[int, int]:
    """Submit one step as `request` asks; its first and last ids."""
    from hog.store.workflows import Step, submit_steps

    step = Step(options, expanded(commands, request), request.after, (), request.hold, request.bundle)
    ((first, last),) = submit_steps(db, [step])
    return first, last


def with_reasons(db, rows: list[tuple]) -> list[tuple]:
    """check's rows, with why a task waits for parents or was cancelled by one."""
    from hog.store.workflows import waiting_reasons

    found = waiting_reasons(db, [row[0] for row in rows])
    return [(*row[:-1], row[-1] or found.get(row[0])) for row in rows]


def related_options(function):
    """show's --after ID and --before ID."""
    function = click.option(
        "--before",
        "before_id",
        type=click.IntRange(min=1),
        metavar="ID",
        help="Only tasks ID runs after (upstream).",
    )(function)
    return click.option(
        "--after",
        "after_id",
        type=click.IntRange(min=1),
        metavar="ID",
        help="Only tasks that run after ID (downstream).",
    )(function)


def related_ids(db, after_id: int | None, before_id: int | None) -> tuple[int, ...] | None:
    """The ids --after/--before pick (maybe none), or None when neither was given."""
    from hog.store.dependencies import related
    from hog.store.queue import require_ids_exist

    picked: set[int] | None = None
    for task_id, downstream in ((after_id, True), (before_id, False)):
        if task_id is not None:
            require_ids_exist(db, [task_id])
            found = set(related(db, task_id, downstream))
            picked = found if picked is None else picked & found
    return None if picked is None else tuple(sorted(picked))


# -- workflow files -------------------------------------------------------------------------


def workflow_steps(path: str, defaults, request: WorkflowRequest) -> list:
    """The steps of a workflow file, each task's fields over `defaults` (submit's options)."""
    import shlex

    from hog.store.submitting import encode_argv
    from hog.store.workflows import NewTask, Step
    from hog.timeutil import parse_duration, parse_size
    from hog.workflowfile import parse

    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--workflow {path}: {getattr(error, 'strerror', None) or error}") from None
    tasks = parse(text, path)
    index = {task.name: number for number, task in enumerate(tasks)}
    steps = []
    for task in tasks:
        fields, where = task.fields, f"{path}:{task.line}: task {task.name!r}"
        if "argv" in fields:
            argv = fields["argv"]
            if (
                not isinstance(argv, list)
                or not argv
                or not all(isinstance(word, str) and word for word in argv)
            ):
                raise UsageError(f'{where}: "argv" is a list of words, the program first')
            new = NewTask(shlex.join(argv), encode_argv(argv))
        else:
            if not isinstance(fields["command"], str) or not fields["command"].strip():
                raise UsageError(f'{where}: "command" is the text of a shell command')
            new = NewTask(fields["command"])
        environment = dict(defaults.environment or {})
        if isinstance(fields.get("environment"), dict):
            environment.update({str(key): str(value) for key, value in fields["environment"].items()})
        options = defaults._replace(
            name=task.name,
            cores=_count(fields.get("cores", defaults.cores), 1, where, "cores"),
            gpus=_gpus(fields["gpus"], where) if "gpus" in fields else defaults.gpus,
            mem_bytes=parse_size(str(fields["mem"]), what=f"{where} mem")
            if "mem" in fields
            else defaults.mem_bytes,
            time_limit_s=(
                parse_duration(str(fields["time"]), what=f"{where} time")
                if "time" in fields
                else defaults.time_limit_s
            ),
            max_retries=_count(fields.get("retries", defaults.max_retries), 0, where, "retries"),
            priority=_count(fields.get("priority", defaults.priority), -1_000_000, where, "priority"),
            pool=check_pool(str(fields["pool"]), f'{where}: "pool"') if "pool" in fields else defaults.pool,
            stdout_pattern=fields.get("stdout", defaults.stdout_pattern),
            stderr_pattern=fields.get("stderr", defaults.stderr_pattern),
            cwd=fields.get("cwd", defaults.cwd),
            environment=environment,
        )
        after_steps = tuple((index[name], "ok") for name in task.after)
        after_steps += tuple((index[name], "any") for name in task.after_any)
        steps.append(Step(options, [new], request.after, after_steps, request.hold, request.bundle))
    return steps


def _gpus(value: object, where: str) -> int:
    """GPU units: a whole number of GPUs, or a share of one (0.5, "1/3")."""
    from hog.gpushare import parse_gpus

    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UsageError(f'{where}: "gpus" is a whole number of GPUs or a share of one like 0.5')
    return parse_gpus(str(value), what=f'{where} "gpus"')


def _count(value: object, least: int, where: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise UsageError(f'{where}: "{field}" is a whole number of at least {least}')
    return value


def submit_workflow(db, request: WorkflowRequest, defaults) -> tuple[int, int]:
    from hog.store.workflows import submit_steps

    ranges = submit_steps(db, workflow_steps(request.workflow or "", defaults, request))
    return ranges[0][0], ranges[-1][1]


# -- release ---------------------------------------------------------------------------------


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("targets", nargs=-1)
@click.option("--bundle", metavar="NAME", help="Every task of this bundle.")
@db_options
def release(targets: tuple[str, ...], bundle: str | None) -> None:
    """Let held tasks go: they wait for their parents, if any, then run.

    TARGETS are ids, ranges (3-9) or names given with submit --name.

    \b
    Example:
      slurm-hog submit --bundle sweep --array 1-100 -- ./sim {index}
      slurm-hog release --bundle sweep
    """
    from hog.ids import parse_ids
    from hog.store.workflows import release as release_tasks

    if not targets and bundle is None:
        raise UsageError("nothing to release: give ids, names or --bundle NAME")
    ids = parse_ids([word for word in targets if _ID_WORD.fullmatch(word)])
    names = [word for word in targets if not _ID_WORD.fullmatch(word)]
    released, others = release_tasks(current_settings().open(), ids, names, bundle)
    if not released and others:
        raise HogError(
            f"nothing released: of {counted(others, 'task')} given, none is held; only held tasks are"
            " released"
        )
    message = f"released {counted(len(released), 'held task')}"
    click.echo(message + (f"; {counted(others, 'other')} not held, left alone" if others else ""))


# -- export and deps -------------------------------------------------------------------------


def _picked(db, targets: tuple[str, ...], bundle: str | None) -> list[int]:
    from hog.ids import parse_ids
    from hog.store.workflows import tasks_for

    if not targets and bundle is None:
        raise UsageError("which tasks? give ids, names or --bundle NAME")
    ids = parse_ids([word for word in targets if _ID_WORD.fullmatch(word)])
    names = [word for word in targets if not _ID_WORD.fullmatch(word)]
    return tasks_for(db, ids, names, bundle)


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("targets", nargs=-1)
@click.option("--bundle", metavar="NAME", help="Every task of this bundle.")
@click.option("--environment", "with_environment", is_flag=True, help="Include each task's environment.")
@db_options
def export(targets: tuple[str, ...], bundle: str | None, with_environment: bool) -> None:
    """Write tasks as a workflow file (JSON) on stdout, to submit again with --workflow.

    TARGETS are ids, ranges (3-9) or names. Each task keeps what it was submitted with and its
    parents among the exported tasks; the environment only with --environment.

    \b
    Example:
      slurm-hog export --bundle sweep > sweep.json
      slurm-hog --db other.sqlite submit --workflow sweep.json
    """
    from hog.store.workflows import export as export_tasks
    from hog.workflowfile import dump

    db = current_settings().open()
    entries = export_tasks(db, _picked(db, targets, bundle), with_environment)
    for entry in entries:
        if "mem" in entry:
            entry["mem"] = f"{-(-entry['mem'] // 1024)}K"
        if "time" in entry:
            entry["time"] = f"{-(-int(entry['time'] * 1000) // 1000)}s"
    click.echo(dump(entries), nl=False)


@click.command(cls=HogCommand, context_settings=CONTEXT)
@click.argument("targets", nargs=-1)
@click.option("--bundle", metavar="NAME", help="Every task of this bundle.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "dot", "json")),
    default="text",
    help="text, dot (Graphviz) or json.",
)
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@db_options
def deps(targets: tuple[str, ...], bundle: str | None, fmt: str, as_json: bool) -> None:
    """Print the graph of tasks: each task under its parents, indented.

    TARGETS are ids, ranges or names; the graph holds them and every task before or after them.

    \b
    Example:
      slurm-hog deps --bundle sweep
      slurm-hog deps 12 --format dot | dot -Tpng > graph.png
    """
    import json

    from hog.store import queue
    from hog.store.dependencies import edges_among, related

    fmt = "json" if as_json else fmt
    db = current_settings().open()
    picked = _picked(db, targets, bundle)
    members = set(picked)
    for task_id in picked:
        members.update(related(db, task_id, downstream=True))
        members.update(related(db, task_id, downstream=False))
    rows = {row.id: row for row in queue.iter_tasks(db, ids=tuple(sorted(members)))}
    edges = [edge for edge in edges_among(db, list(rows)) if edge.parent in rows]
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "tasks": [{"id": row.id, "state": row.state, "name": row.name} for row in rows.values()],
                    "edges": [edge._asdict() for edge in edges],
                }
            )
        )
        return
    if fmt == "dot":
        click.echo("digraph tasks {")
        for row in rows.values():
            label = f"{row.id} {row.name or ''}\\n{row.state}".replace('"', "'")
            click.echo(f'  t{row.id} [label="{label}"];')
        for edge in edges:
            style = "" if edge.kind == "ok" else " [style=dashed]"
            click.echo(f"  t{edge.parent} -> t{edge.child}{style};")
        click.echo("}")
        return
    children: dict[int, list[tuple[int, str]]] = {}
    has_parent = set()
    for edge in edges:
        children.setdefault(edge.parent, []).append((edge.child, edge.kind))
        has_parent.add(edge.child)

    def line(task_id: int, depth: int, kind: str) -> None:
        row = rows[task_id]
        after = "" if depth == 0 else (" (after any end)" if kind == "any" else "")
        click.echo(f"{'  ' * depth}{row.id} {row.state} {row.name or '-'}: {row.command}{after}")
        for child, child_kind in children.get(task_id, []):
            line(child, depth + 1, child_kind)

    for task_id in rows:
        if task_id not in has_parent:
            line(task_id, 0, "ok")
