"""The one output layer: every list and show command hands rows here.

Commands return ``(columns, rows)``; this module renders them as table, json,
yaml, csv or value, honouring ``-c/--column`` and ``--sort-column``.  No command
formats its own output.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from cm.errors import UsageError

FORMATS = ("table", "json", "yaml", "csv", "value")


def add_format_options(parser: argparse.ArgumentParser) -> None:
    """-f/--format, -c/--column and --sort-column, shared by every list and show."""
    group = parser.add_argument_group("output")
    group.add_argument("-f", "--format", choices=FORMATS, help="output format (default: the 'format' default, else table)")
    group.add_argument("-c", "--column", action="append", default=[], metavar="COLUMN",
                       help="show only this column; repeat for more")
    group.add_argument("--sort-column", action="append", default=[], metavar="COLUMN",
                       help="sort rows by this column; repeat for more")


def _cell(value: Any) -> str:
    if value.__class__ is str:  # most cells: skip the checks below (10,000-row lists)
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(v if v.__class__ is str else _cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def to_json(value: Any, indent: int | None = None) -> str:
    """Valid JSON always: nan and inf (which JSON lacks) are written as the strings "nan" and "inf"."""
    try:
        return json.dumps(value, default=str, indent=indent, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), default=str, indent=indent)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers before strings, so mixed columns still sort without a TypeError.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, _cell(value))


def select(columns: Sequence[str], rows: list[dict[str, Any]], wanted: Sequence[str],
           sort_by: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Apply -c and --sort-column; unknown column names are a usage error."""
    known = list(columns)
    for name in [*wanted, *sort_by]:
        if name not in known:
            raise UsageError(f"unknown column '{name}' (columns: {', '.join(known)})")
    shown = list(wanted) or known
    if sort_by:
        rows = sorted(rows, key=lambda r: tuple(_sort_key(r.get(c)) for c in sort_by))
    return shown, rows


def check_columns(columns: Sequence[str], args: Any) -> None:
    """Refuse a bad -c/--sort-column before a command changes anything (exit 2 means nothing done)."""
    select(columns, [], getattr(args, "column", []), getattr(args, "sort_column", []))


def _terminal_width() -> int | None:
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        import shutil

        return shutil.get_terminal_size().columns
    return None  # piped: never wrap


def render_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    return render_cells(columns, [[_cell(r.get(c)) for c in columns] for r in rows])


def render_cells(columns: list[str], table: list[list[str]]) -> str:
    """A box table of ready-made cells, made harmless and fitted to the terminal."""
    from cm.table import fitted, harmless_rows

    return fitted(harmless_rows([columns])[0], harmless_rows(table), _terminal_width())


def render(columns: Sequence[str], rows: list[dict[str, Any]], fmt: str = "table", *,
           wanted: Sequence[str] = (), sort_by: Sequence[str] = ()) -> str:
    """Render a list of records."""
    shown, rows = select(columns, rows, wanted, sort_by)
    if fmt in ("table", "csv", "value"):
        cells = [[_cell(r.get(c)) for c in shown] for r in rows]
        if fmt == "table":
            return render_cells(shown, cells)
        if fmt == "value":
            from cm.table import harmless

            return "\n".join(harmless(" ".join(row)) for row in cells)
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(shown)
        writer.writerows(cells)
        return buf.getvalue().rstrip("\n")
    data = [{c: r.get(c) for c in shown} for r in rows]
    if fmt == "json":
        # One record a line: json's indent= runs the pure-Python encoder, ten times slower
        # on a 10,000-VM list; this stays valid, readable JSON.
        if not data:
            return "[]"
        return "[\n" + ",\n".join("  " + to_json(r) for r in data) + "\n]"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False).rstrip()
    raise UsageError(f"unknown format '{fmt}' (formats: {', '.join(FORMATS)})")


def render_one(record: dict[str, Any], fmt: str = "table", *, wanted: Sequence[str] = ()) -> str:
    """Render one record: a Field/Value table, or the object itself in json/yaml."""
    fields = list(record)
    shown, _ = select(fields, [], wanted, ())
    data = {k: record[k] for k in shown}
    if fmt == "table":
        return render_table(["Field", "Value"], [{"Field": k, "Value": _cell(v)} for k, v in data.items()])
    if fmt == "json":
        return to_json(data, indent=2)
    if fmt == "value":
        from cm.table import harmless

        return "\n".join(harmless(_cell(v)) for v in data.values())
    if fmt == "yaml":  # the object itself, as json shows it: not a one-item list
        import yaml

        return yaml.safe_dump(json.loads(json.dumps(data, default=str)), sort_keys=False).rstrip()
    return render(shown, [data], fmt)
