"""Job time limits: what users type (2h, 90m, 1d12h) and what Slurm writes (D-HH:MM:SS, UNLIMITED)."""

from __future__ import annotations

import re

from cm.errors import UsageError

UNLIMITED = None
# Slurm keeps a limit as seconds in a signed 32-bit number: sbatch takes a longer one without a word
# and the job gets a wrapped-around limit (35791394 minutes becomes 2957761-01:03:00).
MOST = 35_791_393
_UNITS = {"d": 1440, "h": 60, "m": 1, "min": 1, "s": 1 / 60}
_FRIENDLY = re.compile(r"(?:(\d+)\s*(d|h|min|m|s))")
# Slurm's own forms: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS
_SLURM = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def minutes(text: str) -> int | None:
    """Minutes in a time limit (rounded up, as Slurm does); None for UNLIMITED/INFINITE."""
    value = str(text).strip().lower()
    if value in ("unlimited", "infinite"):
        return UNLIMITED
    compact = value.replace(" ", "")
    if re.fullmatch(r"(?:\d+(?:d|h|min|m|s))+", compact):
        total = sum(int(n) * _UNITS[u] for n, u in _FRIENDLY.findall(compact))
        return _check(-(-total // 1), text)
    match = _SLURM.fullmatch(value)
    if not match:
        raise UsageError(f"bad time limit '{text}': use 2h, 90m, 1d12h, or Slurm's MM, HH:MM:SS, D-HH:MM:SS")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, mins, secs = int(first), int(second or 0), int(third or 0)
        if hours > 23 or mins > 59 or secs > 59:
            raise UsageError(f"bad time limit '{text}': hours, minutes and seconds out of range")
        return _check(int(days) * 1440 + hours * 60 + mins + (secs > 0), text)
    if third is not None:  # HH:MM:SS
        hours, mins, secs = int(first), int(second), int(third)
    elif second is not None:  # MM:SS
        hours, mins, secs = 0, int(first), int(second)
    else:  # MM
        hours, mins, secs = 0, int(first), 0
    if (third is not None and mins > 59) or secs > 59:
        raise UsageError(f"bad time limit '{text}': minutes and seconds must be below 60")
    return _check(hours * 60 + mins + (secs > 0), text)


def _check(total: float, text: str) -> int:
    if total <= 0:
        raise UsageError(f"bad time limit '{text}': it must be at least a minute")
    if total > MOST:
        raise UsageError(f"bad time limit '{text}': Slurm takes at most {slurm(MOST)} (or UNLIMITED)")
    return int(total)


def slurm(total: int | None) -> str:
    """Minutes as Slurm's D-HH:MM:SS (what sbatch --time takes)."""
    if total is None:
        return "UNLIMITED"
    days, rest = divmod(total, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text
