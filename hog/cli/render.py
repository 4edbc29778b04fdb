"""Listings as a table, JSON or CSV, streamed so that memory does not grow with the queue."""

import itertools
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

FORMATS = ("table", "json", "csv")
# Rows read before a table's column widths are fixed; later rows are cut to fit.
_WIDTH_SAMPLE_ROWS = 200


def emit(
    columns: Sequence[str],
    rows: Iterable[Sequence],
    fmt: str,
    cell: Callable[[str, object], str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Write `rows` in `fmt`; `cell` turns a raw value into table text. Returns the row count."""
    out = out or sys.stdout
    if fmt == "json":
        return _emit_json(columns, rows, out)
    if fmt == "csv":
        import csv

        writer = csv.writer(out)
        writer.writerow(columns)
        count = 0
        for row in rows:
            writer.writerow(["" if value is None else value for value in row])
            count += 1
        return count
    return _emit_table(columns, rows, cell or _plain, out)


def _plain(column: str, value: object) -> str:
    return "-" if value is None else str(value)


def _emit_json(columns: Sequence[str], rows: Iterable[Sequence], out: TextIO) -> int:
    import json

    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n " if count else "\n ")
        out.write(json.dumps(dict(zip(columns, row, strict=True))))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def _emit_table(
    columns: Sequence[str],
    rows: Iterable[Sequence],
    cell: Callable[[str, object], str],
    out: TextIO,
) -> int:
    iterator = iter(rows)
    sample = [
        [cell(column, value) for column, value in zip(columns, row, strict=True)]
        for row in itertools.islice(iterator, _WIDTH_SAMPLE_ROWS)
    ]
    widths = [len(column) for column in columns]
    for texts in sample:
        widths = [max(width, len(text)) for width, text in zip(widths, texts, strict=True)]
    widths = [min(width, 60) for width in widths]

    def line(texts: Sequence[str]) -> str:
        # The last column is free-form (commands): never padded, never cut.
        cells = [
            (text if len(text) <= width else text[: width - 1] + "…").ljust(width)
            for text, width in zip(texts[:-1], widths[:-1], strict=True)
        ]
        return "  ".join([*cells, texts[-1]])

    out.write(line(list(columns)).rstrip() + "\n")
    count = 0
    for texts in sample:
        out.write(line(texts).rstrip() + "\n")
        count += 1
    for row in iterator:
        out.write(line([cell(c, v) for c, v in zip(columns, row, strict=True)]).rstrip() + "\n")
        count += 1
    return count
