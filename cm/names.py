"""Names: hostlist expressions (vm[01-10]) and generated <user>-NNN names."""

from __future__ import annotations

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
        names.extend(n for n in expanded if n not in names)
    if not names:
        raise UsageError("no names given")
    return names


def generated(user: str, numbers: Iterable[int]) -> list[str]:
    """Names from the per-user counter: alice-001, alice-002 ..."""
    return [f"{user}-{n:03d}" for n in numbers]


def collect(names: list[str]) -> str:
    """The compact hostlist of ``names`` (for messages)."""
    import hostlist

    return hostlist.collect_hostlist(names)
