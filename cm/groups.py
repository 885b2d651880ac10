"""Group membership in the mirror: named sets of VMs, each member ``cloud:name``.

The one home of membership, used by `cm group` and by every command that
creates, deletes, renames or refreshes VMs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cm.errors import NotFound

if TYPE_CHECKING:
    from cm.context import Context

LOCAL = ""  # groups belong to no single cloud


def members(ctx: Context, group: str) -> list[str]:
    """Every ``cloud:name`` of ``group`` (none if it does not exist)."""
    record = ctx.mirror.get("group", LOCAL, group)
    return list(record["members"]) if record else []


def save(ctx: Context, group: str, new_members: list[str]) -> None:
    ctx.mirror.put("group", LOCAL, {"name": group, "members": new_members})


def exists(ctx: Context, group: str) -> bool:
    return ctx.mirror.get("group", LOCAL, group) is not None


def members_of(ctx: Context, group: str, cloud: str) -> list[str]:
    """The VM names of ``group`` on ``cloud`` (none is fine); an unknown group is an error."""
    if not exists(ctx, group):
        raise NotFound(f"unknown group '{group}' (see `cm group list`)")
    return sorted(m.split(":", 1)[1] for m in members(ctx, group) if m.split(":", 1)[0] == cloud)


def members_on(ctx: Context, group: str, cloud: str) -> list[str]:
    """The VM names of ``group`` on ``cloud``; an unknown group, or none of its VMs there, is an error."""
    names = members_of(ctx, group, cloud)
    if not names:
        raise NotFound(f"group '{group}' has no VMs on cloud '{cloud}'")
    return names


def add_members(ctx: Context, group: str, cloud: str, names: list[str]) -> None:
    with ctx.mirror.transaction():
        current = members(ctx, group)
        current += [f"{cloud}:{n}" for n in names if f"{cloud}:{n}" not in current]
        save(ctx, group, current)


def forget_vm(ctx: Context, cloud: str, name: str) -> None:
    """Drop a deleted VM from every group."""
    member = f"{cloud}:{name}"
    with ctx.mirror.transaction():
        for record in ctx.mirror.records("group", LOCAL):
            if member in record["members"]:
                save(ctx, record["name"], [m for m in record["members"] if m != member])


def keep_only(ctx: Context, cloud: str, names: set[str]) -> None:
    """Drop from every group the VMs of ``cloud`` that are not in ``names`` (gone from the cloud)."""
    with ctx.mirror.transaction():
        for record in ctx.mirror.records("group", LOCAL):
            kept = [m for m in record["members"] if not m.startswith(f"{cloud}:") or m.split(":", 1)[1] in names]
            if kept != record["members"]:
                save(ctx, record["name"], kept)


def rename_vm(ctx: Context, cloud: str, old: str, new: str) -> None:
    with ctx.mirror.transaction():
        for record in ctx.mirror.records("group", LOCAL):
            if f"{cloud}:{old}" in record["members"]:
                save(ctx, record["name"], [f"{cloud}:{new}" if m == f"{cloud}:{old}" else m
                                           for m in record["members"]])
