"""`cm monitor export`: samples as CSV (standard library) or Parquet (pyarrow, an optional extra)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from typing import Any

from cm.errors import UsageError
from cm.monitoring.sample import COLUMNS

HEADER = ["node", "kind", *COLUMNS]


def _plain(row: tuple[Any, ...]) -> list[Any]:
    """The vCPU bytes as 'p0;p1;...' percents: readable by any tool."""
    values = list(row)
    index = HEADER.index("vcpu")
    values[index] = ";".join(str(b) for b in values[index] or b"")
    return values


def write(rows: Iterable[tuple[Any, ...]], fmt: str, output: str | None) -> str | None:
    """Write ``rows`` (node, kind, *sample columns) to ``output``; return the CSV text when there is no file."""
    if fmt == "csv":
        buffer = open(output, "w", newline="") if output else io.StringIO()
        with buffer if output else _keep(buffer):
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(_plain(r) for r in rows)
            return None if output else buffer.getvalue().rstrip("\n")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install 'cm[parquet]'") from None
    columns = list(zip(*(_plain(r) for r in rows))) or [[] for _ in HEADER]
    table = pa.table({name: list(values) for name, values in zip(HEADER, columns)})
    pq.write_table(table, output, compression="zstd")
    return None


class _keep:
    """A context manager that leaves a StringIO open (its text is read after the block)."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    def __enter__(self) -> io.StringIO:
        return self.buffer

    def __exit__(self, *_: Any) -> None:
        return None
