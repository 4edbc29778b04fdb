"""Kinds: named task defaults stored in the queue, so that everyone who uses it shares them.

A kind is a set of submit options kept as the user typed them ({"gpus": "0.5", "time_limit":
"2h"}, by submit's parameter names), not as columns: an option submit gains later fits with no
migration, and `kind list` shows what was typed. What the values mean is the CLI's business: it
checks them against submit's own options when a kind is set, and again when one is applied.
"""

import json
import os
import re
import time
from typing import NamedTuple

from hog.errors import NotFoundError, UsageError
from hog.store.db import Database

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# An option's value as typed: text, a flag's True, or the texts of a repeated option.
OptionValue = str | bool | list[str]


class Kind(NamedTuple):
    name: str
    options: dict[str, OptionValue]  # submit's parameter name -> value as typed
    updated_at: float
    user: str | None


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageError(
            f"bad kind name {name!r}: use letters, digits, '_', '.' and '-' (up to 64, starting with a "
            "letter or digit), like train or cpu-prep"
        )
    return name


def set_kind(db: Database, name: str, options: dict[str, OptionValue], now: float | None = None) -> bool:
    """Make or replace the kind `name`; True if it replaced one."""
    check_name(name)
    now = time.time() if now is None else now
    with db.transaction() as connection:
        existed = bool(connection.execute("SELECT 1 FROM kinds WHERE name = ?", (name,)).fetchall())
        connection.execute(
            "INSERT INTO kinds(name, options, updated_at, user) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(name) DO UPDATE SET options = excluded.options,"
            " updated_at = excluded.updated_at, user = excluded.user",
            (name, json.dumps(options, sort_keys=True), now, os.environ.get("USER") or None),
        )
    return existed


def get_kind(db: Database, name: str) -> Kind:
    row = db.query_one("SELECT name, options, updated_at, user FROM kinds WHERE name = ?", (name,))
    if row is None:
        known = [kind.name for kind in list_kinds(db)]
        hint = f"known: {', '.join(known[:10])}" if known else "none is set yet"
        raise NotFoundError(
            f"no kind {name!r} in {db.path} ({hint}); make it with `slurm-hog kind set {name} ...`"
        )
    return _kind(row)


def list_kinds(db: Database) -> list[Kind]:
    return [_kind(row) for row in db.query("SELECT name, options, updated_at, user FROM kinds ORDER BY name")]


def delete_kinds(db: Database, names: list[str]) -> list[str]:
    """Delete these kinds, all or none; NotFoundError names those that do not exist."""
    with db.transaction() as connection:
        missing = [
            name
            for name in names
            if not connection.execute("SELECT 1 FROM kinds WHERE name = ?", (name,)).fetchall()
        ]
        if missing:
            raise NotFoundError(
                f"no kind {', '.join(map(repr, missing))} in {db.path}: `slurm-hog kind list` shows them"
            )
        for name in names:
            connection.execute("DELETE FROM kinds WHERE name = ?", (name,))
    return names


def _kind(row: tuple) -> Kind:
    name, options, updated_at, user = row
    return Kind(name, json.loads(options), updated_at, user)
