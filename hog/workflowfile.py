"""Workflow files: JSON naming tasks with their command, resources and `after` lists.

    {"tasks": [
      {"name": "prep", "command": "./prepare"},
      {"name": "run", "argv": ["./simulate", "--fast"], "cores": 4, "after": ["prep"]},
      {"name": "sum", "command": "./summarise", "after_any": ["run"]}
    ]}

The same as TOML (a file named *.toml), where Python has tomllib (3.11 and newer):

    [[tasks]]
    name = "prep"
    command = "./prepare"

Parsing refuses, with the line, what would make a wrong graph: invalid JSON (line and column),
names used twice, unknown names, cycles (named `a -> b -> a`); tasks come back in topological
order, each after the tasks it names.
"""

import json
import sys
from typing import Any, NamedTuple

from hog.errors import UsageError

FIELDS = {
    "name",
    "command",
    "argv",
    "cores",
    "gpus",
    "mem",
    "time",
    "retries",
    "priority",
    "pool",
    "stdout",
    "stderr",
    "cwd",
    "environment",
    "after",
    "after_any",
}


class WorkflowTask(NamedTuple):
    name: str
    fields: dict[str, Any]  # as written, less name and the after lists
    after: tuple[str, ...]
    after_any: tuple[str, ...]
    line: int


def parse(text: str, source: str) -> list[WorkflowTask]:
    """The tasks of a workflow file, parents before children (else file order)."""
    document = _toml(text, source) if source.endswith(".toml") else _json(text, source)
    entries = document.get("tasks") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsageError(
            f'{source}: a workflow file is an object with a non-empty "tasks" list ([[tasks]] in TOML)'
        )
    tasks: dict[str, WorkflowTask] = {}
    searched_from, line = 0, 1
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise UsageError(f'{source}: task {number} needs a "name" (text)')
        name = entry["name"]
        line, searched_from = _line_of(text, name, searched_from, line)
        unknown = sorted(set(entry) - FIELDS)
        if unknown:
            raise UsageError(f"{source}:{line}: task {name!r} has an unknown field {unknown[0]!r}")
        if name in tasks:
            raise UsageError(
                f"{source}:{line}: the name {name!r} is used twice (first at line {tasks[name].line})"
            )
        if ("command" in entry) == ("argv" in entry):
            raise UsageError(f'{source}:{line}: task {name!r} needs either "command" or "argv"')
        after = {
            kind: _names(entry.get(kind, []), source, line, name, kind) for kind in ("after", "after_any")
        }
        fields = {key: value for key, value in entry.items() if key not in ("name", "after", "after_any")}
        tasks[name] = WorkflowTask(name, fields, after["after"], after["after_any"], line)
    for task in tasks.values():
        for parent in (*task.after, *task.after_any):
            if parent not in tasks:
                line, _ = _line_of(text, parent, _offset_of_line(text, task.line), task.line)
                raise UsageError(
                    f"{source}:{line}: task {task.name!r} is after {parent!r}, which no task is named"
                )
    return _topological(tasks, source)


def _json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"{source}: not valid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


def _toml(text: str, source: str) -> object:
    try:
        import tomllib
    except ModuleNotFoundError:
        version = ".".join(map(str, sys.version_info[:2]))
        raise UsageError(
            f"{source}: TOML workflow files need Python 3.11 or newer (this is {version}); "
            "write it as JSON (the same fields)"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{source}: not valid TOML: {error}") from None


def _names(value: object, source: str, line: int, name: str, kind: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsageError(f'{source}:{line}: task {name!r}: "{kind}" is a list of task names')
    return tuple(value)


def _line_of(text: str, name: str, start: int, line: int) -> tuple[int, int]:
    """The line of the first `"name"` at or after `start` (on `line`), and the offset after it.

    Lines are counted on from `start`, not from the top: a file of 100,000 tasks took minutes so.
    """
    quoted = json.dumps(name)
    found = text.find(quoted, start)
    if found < 0:
        return line, start
    return line + text.count("\n", start, found), found + len(quoted)


def _offset_of_line(text: str, line: int) -> int:
    offset = 0
    for _ in range(line - 1):
        offset = text.index("\n", offset) + 1
    return offset


def _topological(tasks: dict[str, WorkflowTask], source: str) -> list[WorkflowTask]:
    """Depth first, in file order; a name met again on the current path is a cycle."""
    done: dict[str, None] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in path:
            # Shown in the order the tasks would run: a -> b when b is after a.
            cycle = [name, *reversed(path[path.index(name) :])]
            raise UsageError(
                f"{source}:{tasks[name].line}: the tasks form a cycle, {' -> '.join(cycle)}: "
                "no order can run them"
            )
        path.append(name)
        for parent in (*tasks[name].after, *tasks[name].after_any):
            visit(parent)
        path.pop()
        done[name] = None

    for name in tasks:
        visit(name)
    return [tasks[name] for name in done]


def dump(tasks: list[dict[str, Any]]) -> str:
    """A workflow file of these tasks (each a dict with the fields above)."""
    return json.dumps({"tasks": tasks}, indent=2) + "\n"
