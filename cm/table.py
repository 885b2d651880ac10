"""Box tables for people: cells made harmless, wrapped at word boundaries, fitted to the terminal.

A table never gets wider than the width it is given.  Cells wrap between words
(and after a '-' or '_' inside one), never inside a token such as an IP
address; when the columns cannot fit even so, each row is drawn as its own
Field/Value table instead, and only a token wider than the whole terminal is
ever cut.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import chain

# C0 and C1 controls (but newline and tab), DEL, and the bidirectional overrides that
# reorder what a terminal shows: printed raw they can recolour, move or hide text.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_BREAK = re.compile(r"(?<=\w[-_])(?=\w)")  # after a hyphen or underscore between word characters
GRID_EXTRA = 3  # '│ ' + ... + ' │' per column: 3 characters each, plus one


def harmless(text: str) -> str:
    """``text`` with control characters and escape sequences shown as escapes (\\x1b), tabs as spaces."""
    if "\t" in text:
        text = text.replace("\t", " ")
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                       text)


def harmless_rows(rows: list[list[str]]) -> list[list[str]]:
    """``harmless`` on every cell; one scan of the whole table when nothing needs it (the usual case)."""
    joined = "".join(chain.from_iterable(rows))
    if "\t" not in joined and not _UNSAFE.search(joined):
        return rows
    return [[harmless(cell) for cell in row] for row in rows]


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide East Asian characters take two, combining marks none)."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, size: int) -> str:
    return text + " " * (size - width(text))


def _pieces(line: str) -> list[tuple[str, str]]:
    """(separator, piece) pairs a line may wrap between: words, and parts of words after - or _."""
    found: list[tuple[str, str]] = []
    for word in line.split():
        parts = _BREAK.split(word)
        found += [(" " if found else "", parts[0]), *(("", p) for p in parts[1:])]
    return found


def _cut(text: str, size: int) -> list[str]:
    """Cut a token wider than ``size`` (the last resort) into pieces that fit."""
    lines, current = [], ""
    for char in text:
        if current and width(current + char) > size:
            lines.append(current)
            current = ""
        current += char
    return [*lines, current]


def wrap(text: str, size: int) -> list[str]:
    """The lines of a cell at most ``size`` columns wide."""
    lines: list[str] = []
    for line in text.split("\n"):
        if width(line) <= size:
            lines.append(line)
            continue
        current = ""
        for sep, piece in _pieces(line):
            joined = current + sep + piece if current else piece
            if width(joined) <= size:
                current = joined
                continue
            if current:
                lines.append(current)
            *done, current = _cut(piece, size)
            lines += done
        lines.append(current)
    return lines


def _natural(cells: list[str]) -> int:
    """The width of a column's widest line."""
    joined = "".join(cells)
    if "\n" not in joined:
        return max(map(len if joined.isascii() else width, cells), default=0)
    return max((width(line) for cell in cells for line in cell.split("\n")), default=0)


def _unbreakable(cells: list[str]) -> int:
    """The widest piece of a column that wrapping may not split."""
    return max((width(piece) for cell in cells for line in cell.split("\n") for _, piece in _pieces(line)), default=0)


def fit(columns: list[str], table: list[list[str]], total: int, floors: list[int]) -> list[int] | None:
    """Column widths that make the grid at most ``total`` wide, narrowing the widest column first;
    None when the columns cannot shrink to their ``floors`` and fit."""
    cols = [[c, *(row[i] for row in table)] for i, c in enumerate(columns)]
    widths = [max(_natural(cells), 1) for cells in cols]
    budget = total - (GRID_EXTRA * len(columns) + 1)
    floors = [min(f, w) for f, w in zip(floors, widths)]
    if sum(floors) > budget:
        return None
    for _ in range(sum(widths) - budget):  # narrow the widest column that can still give, one at a time
        widest = max((i for i in range(len(widths)) if widths[i] > floors[i]), key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def grid(columns: list[str], table: list[list[str]], widths: list[int] | None = None) -> str:
    """The box table ("simple_outline"), each cell wrapped to its column's width."""
    if widths is None:
        widths = [_natural([c, *(r[i] for r in table)]) for i, c in enumerate(columns)]
        if "\n" not in "".join(chain.from_iterable(table)):  # the fast path of long one-line lists
            return _grid_lines(columns, table, widths)
    lines = [_rule("┌", "┬", "┐", widths)]
    for number, row in enumerate([columns, *table]):
        wrapped = [wrap(cell, size) for cell, size in zip(row, widths)]
        for depth in range(max(len(w) for w in wrapped)):
            lines.append("│ " + " │ ".join(_pad(w[depth] if depth < len(w) else "", size)
                                            for w, size in zip(wrapped, widths)) + " │")
        if number == 0:
            lines.append(_rule("├", "┼", "┤", widths))
    lines.append(_rule("└", "┴", "┘", widths))
    return "\n".join(lines)


def _rule(left: str, middle: str, right: str, widths: list[int]) -> str:
    return left + middle.join("─" * (w + 2) for w in widths) + right


def _grid_lines(columns: list[str], table: list[list[str]], widths: list[int]) -> str:
    if "".join(columns).isascii() and "".join(chain.from_iterable(table)).isascii():
        def row(cells: list[str]) -> str:
            return "│ " + " │ ".join(c.ljust(w) for c, w in zip(cells, widths)) + " │"
    else:
        def row(cells: list[str]) -> str:
            return "│ " + " │ ".join(_pad(c, w) for c, w in zip(cells, widths)) + " │"
    return "\n".join([_rule("┌", "┬", "┐", widths), row(columns), _rule("├", "┼", "┤", widths), *map(row, table),
                      _rule("└", "┴", "┘", widths)])


def fitted(columns: list[str], table: list[list[str]], total: int | None) -> str:
    """The table at most ``total`` columns wide (None: as wide as it needs)."""
    if total is None:
        return grid(columns, table)
    natural = [_natural([c, *(r[i] for r in table)]) for i, c in enumerate(columns)]
    if sum(natural) + GRID_EXTRA * len(columns) + 1 <= total and "\n" not in "".join(chain.from_iterable(table)):
        return _grid_lines(columns, table, natural)  # it fits as it is (most lists)
    if len(columns) > 2:
        # A token wider than a Field/Value table could show is cut either way: it need not fit whole here.
        longest = max(total - (2 * GRID_EXTRA + 1) - max(map(width, ["Field", *columns])), 1)
        floors = [min(_unbreakable([c, *(r[i] for r in table)]), longest) for i, c in enumerate(columns)]
        widths = fit(columns, table, total, floors)
        if widths is None:  # too many columns to fit without cutting tokens: one Field/Value table a row
            rows = table or [["" for _ in columns]]
            return "\n".join(_narrow(["Field", "Value"], [[c, v] for c, v in zip(columns, row)], total)
                             for row in rows)
    return _narrow(columns, table, total)


def _narrow(columns: list[str], table: list[list[str]], total: int) -> str:
    """The grid narrowed to ``total``: tokens kept whole if they fit, else cut, the first column's last."""
    cols = [[c, *(r[i] for r in table)] for i, c in enumerate(columns)]
    whole = [_unbreakable(cells) for cells in cols]
    for floors in (whole, whole[:1] + [1] * (len(cols) - 1), [1] * len(cols)):
        widths = fit(columns, table, total, floors)
        if widths is not None:
            natural = [max(_natural(cells), 1) for cells in cols]
            return grid(columns, table) if widths == natural else grid(columns, table, widths)
    return grid(columns, table, [1] * len(cols))  # narrower than any grid can be
