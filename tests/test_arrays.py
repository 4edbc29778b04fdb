"""What submit --array and --each-line store, row by row, through the CLI: sqlite makes an
array's rows itself and entries go in as they are read, so every field is checked here."""

import json
import shlex
import sqlite3
from pathlib import Path

from helpers import cli


def submitted(db: Path, *args: str) -> list[tuple]:
    result = cli(db, "submit", "--json", *args)
    assert result.returncode == 0, result.stderr
    ids = json.loads(result.stdout)
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(
            "SELECT id, command, argv, array_index, entry, state, priority, unmet FROM tasks"
            " WHERE id BETWEEN ? AND ? ORDER BY id",
            (ids["first"], ids["last"]),
        ).fetchall()
    finally:
        connection.close()
    assert [row[0] for row in rows] == list(range(ids["first"], ids["last"] + 1))
    return [row[1:] for row in rows]


def test_an_array_gives_one_row_per_index_in_order(db: Path) -> None:
    rows = submitted(db, "--array", "-4-6:5", "--priority", "3", "echo {index} and {index}")
    assert rows == [(f"echo {index} and {index}", None, index, None, "waiting", 3, 0) for index in (-4, 1, 6)]


def test_an_array_replaces_index_in_exact_arguments_and_keeps_a_command_without_it(db: Path) -> None:
    rows = submitted(db, "--array", "7-8", "--", "printf", "%s\\n", "in-{index}")
    assert [(row[0], json.loads(row[1]), row[2]) for row in rows] == [
        (f"printf '%s\\n' 'in-{index}'", ["printf", "%s\\n", f"in-{index}"], index) for index in (7, 8)
    ]
    assert [row[0] for row in submitted(db, "--array", "1-3", "true")] == ["true"] * 3


def test_an_array_of_a_file_repeats_each_line_per_index(db: Path, tmp_path: Path) -> None:
    lines = tmp_path / "lines"
    lines.write_text("a {index}\n# skipped\nb {index}\n")
    rows = submitted(db, "--file", str(lines), "--array", "1-2")
    assert [(row[0], row[2]) for row in rows] == [("a 1", 1), ("a 2", 2), ("b 1", 1), ("b 2", 2)]


def test_a_large_array_is_complete_and_counted(db: Path) -> None:
    rows = submitted(db, "--array", "1-100000:1", "--hold", "run {index}")
    assert len(rows) == 100_000
    assert rows[0][:3] == ("run 1", None, 1) and rows[-1][:3] == ("run 100000", None, 100000)
    assert {row[4] for row in rows} == {"held"}
    status = json.loads(cli(db, "status", "--json").stdout)
    assert status["tasks"]["held"] == 100_000


def test_each_line_quotes_entries_for_the_shell_and_keeps_them_exact(db: Path, tmp_path: Path) -> None:
    entries = ["plain.txt", "two words", "it's", "-dash", "a;b", "ünï"]
    path = tmp_path / "entries"
    path.write_bytes(("\r\n".join(entries) + "\r\n  \r\n").encode())
    rows = submitted(db, "--each-line", str(path), "wc {entry}")
    assert [(row[0], row[3]) for row in rows] == [(f"wc {shlex.quote(entry)}", entry) for entry in entries]
    exact = submitted(db, "--each-line", str(path), "--", "wc", "-l", "{entry}")
    assert [json.loads(row[1]) for row in exact] == [["wc", "-l", entry] for entry in entries]
    assert [row[0] for row in submitted(db, "--each-line", str(path), "true")] == ["true"] * len(entries)


def test_each_line_with_a_nul_byte_is_refused_and_adds_nothing(db: Path, tmp_path: Path) -> None:
    path = tmp_path / "entries"
    path.write_bytes(b"one\ntw\0o\n")
    result = cli(db, "submit", "--each-line", str(path), "echo {entry}")
    assert result.returncode == 2 and "NUL byte" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert json.loads(cli(db, "status", "--json").stdout)["tasks"]["waiting"] == 0
