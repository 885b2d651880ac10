"""Names: hostlist expressions (vm[01-10]) and generated <user>-NNN names."""

from __future__ import annotations

import re
from collections.abc import Iterable

from cm.errors import UsageError


def expand(expressions: Iterable[str]) -> list[str]:
    """Expand hostlists such as ``node[01-03],login`` into names, in order, without duplicates."""
    import hostlist

    names: list[str] = []
    for expression in expressions:
        try:
            expanded = hostlist.expand_hostlist(expression)
        except hostlist.BadHostlist as exc:
            raise UsageError(f"malformed hostlist '{expression}': {exc}") from exc
        if len(expanded) > MAX_NAMES:
            raise UsageError(f"hostlist '{expression}' names {len(expanded)} VMs; at most {MAX_NAMES} at once")
        names.extend(n for n in expanded if n not in names)
    if not names:
        raise UsageError("no names given")
    return names


def generated(user: str, numbers: Iterable[int]) -> list[str]:
    """Names from the per-user counter: alice-001, alice-002 ..."""
    return [f"{user}-{n:03d}" for n in numbers]


MAX_NAMES = 10_000  # more VMs than any one command should make or touch
MAX_NAME_LENGTH = 255  # what OpenStack and file systems take
_BAD_NAME = re.compile(r"[\s,\[\]$]")


def collect(names: list[str]) -> str:
    """The compact hostlist of ``names`` (for messages); plain names when they are no hostlist."""
    import hostlist

    try:
        return hostlist.collect_hostlist(names)
    except hostlist.BadHostlist:
        return ", ".join(names)


def check_name(name: str, what: str = "VM name") -> str:
    """A name cm can address later: not empty, not too long, no spaces, commas, brackets or $."""
    check_length(name, what)
    if not name or _BAD_NAME.search(name):
        raise UsageError(f"bad {what} '{name}': use letters, digits, '-', '_' and '.' (no spaces, ',', '[', ']' or '$')")
    return name


def check_length(name: str, what: str) -> str:
    """A name of at most MAX_NAME_LENGTH characters (longer ones no cloud or file system takes)."""
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(f"bad {what} '{shorten(name)}': {len(name)} characters, at most {MAX_NAME_LENGTH}")
    return name


def shorten(text: str, width: int = 40) -> str:
    """``text`` cut to ``width`` characters for a one-line message."""
    return text if len(text) <= width else text[:width - 3] + "..."


def ambiguous(name: str, cloud: str, ids: list[str]) -> str:
    """The message every verb gives for a name several VMs share: how to pick one by its id."""
    return (f"{len(ids)} VMs on cloud '{cloud}' are named '{name}' (ids {', '.join(ids)}); "
            f"name one by its id instead (e.g. `cm vm show {ids[0]}`)")
