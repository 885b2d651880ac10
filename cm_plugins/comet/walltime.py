"""Walltimes as users write them (90m, 2h, 3d, 1w, 1d12h, or plain minutes) -> minutes."""

from __future__ import annotations

import re

from cm.errors import UsageError

UNITS = {"m": 1, "h": 60, "d": 1440, "w": 10080}
PART = re.compile(r"(\d+)([mhdw])")
MAX_MINUTES = 4 * UNITS["w"]  # no centre grants more in one computeset


def minutes(text: str) -> int:
    """The walltime in minutes; a malformed, zero or over-long one is a usage error."""
    value = str(text).strip().lower()
    if value.isdigit():
        total = int(value)
    elif value and PART.sub("", value) == "":
        total = sum(int(n) * UNITS[u] for n, u in PART.findall(value))
    else:
        raise UsageError(f"bad walltime '{text}': write minutes or a number with m, h, d or w (90m, 2h, 3d, 1w)")
    if total < 1:
        raise UsageError(f"bad walltime '{text}': it must be at least one minute")
    if total > MAX_MINUTES:
        raise UsageError(f"bad walltime '{text}': at most {MAX_MINUTES // UNITS['w']} weeks")
    return total


def show(total: int) -> str:
    """Minutes as the largest exact unit: 120 -> 2h, 90 -> 90m."""
    for unit in ("w", "d", "h"):
        if total % UNITS[unit] == 0:
            return f"{total // UNITS[unit]}{unit}"
    return f"{total}m"
