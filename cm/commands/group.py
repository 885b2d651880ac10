"""`cm group`: named sets of VMs, possibly on several clouds."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import Any

from cm import inventory
from cm.commands import add_cloud_option, add_names, completes, subcommands, verb
from cm.errors import NotFound
from cm.names import expand
from cm.output import add_format_options

HELP = "List groups of VMs, add VMs to a group, remove them, delete a group."
EXAMPLE = "cm group add experiment1 node[01-04]"
LOCAL = ""  # groups belong to no single cloud


def _members(ctx, group: str) -> list[str]:
    record = ctx.mirror.get("group", LOCAL, group)
    return list(record["members"]) if record else []


def _save(ctx, group: str, members: list[str]) -> None:
    ctx.mirror.put("group", LOCAL, {"name": group, "members": members})


def members_of(ctx, group: str, cloud: str) -> list[str]:
    """The VM names of ``group`` on ``cloud`` (none is fine); an unknown group is an error."""
    if not ctx.mirror.get("group", LOCAL, group):
        raise NotFound(f"unknown group '{group}' (see `cm group list`)")
    return sorted(m.split(":", 1)[1] for m in _members(ctx, group) if m.split(":", 1)[0] == cloud)


def members_on(ctx, group: str, cloud: str) -> list[str]:
    """The VM names of ``group`` on ``cloud``; an unknown group, or none of its VMs there, is an error."""
    names = members_of(ctx, group, cloud)
    if not names:
        raise NotFound(f"group '{group}' has no VMs on cloud '{cloud}'")
    return names


def add_members(ctx, group: str, cloud: str, names: list[str]) -> None:
    with ctx.mirror.transaction():
        members = _members(ctx, group)
        members += [f"{cloud}:{n}" for n in names if f"{cloud}:{n}" not in members]
        _save(ctx, group, members)


def forget_vm(ctx, cloud: str, name: str) -> None:
    """Drop a deleted VM from every group."""
    member = f"{cloud}:{name}"
    with ctx.mirror.transaction():
        for record in ctx.mirror.records("group", LOCAL):
            if member in record["members"]:
                _save(ctx, record["name"], [m for m in record["members"] if m != member])


def keep_only(ctx, cloud: str, names: set[str]) -> None:
    """Drop from every group the VMs of ``cloud`` that are not in ``names`` (gone from the cloud)."""
    with ctx.mirror.transaction():
        for record in ctx.mirror.records("group", LOCAL):
            kept = [m for m in record["members"] if not m.startswith(f"{cloud}:") or m.split(":", 1)[1] in names]
            if kept != record["members"]:
                _save(ctx, record["name"], kept)


def rename_vm_in_groups(ctx, cloud: str, old: str, new: str) -> None:
    with ctx.mirror.transaction():
        for record in ctx.mirror.records("group", LOCAL):
            if f"{cloud}:{old}" in record["members"]:
                _save(ctx, record["name"], [f"{cloud}:{new}" if m == f"{cloud}:{old}" else m
                                            for m in record["members"]])


def list_groups(ctx, args: Namespace) -> None:
    rows: list[dict[str, Any]] = [{"name": r["name"], "members": r["members"], "count": len(r["members"])}
                                  for r in ctx.mirror.records("group", LOCAL)]
    if args.name:
        rows = [r for r in rows if r["name"] == args.name]
        if not rows:
            raise NotFound(f"unknown group '{args.name}'")
    ctx.emit(["name", "count", "members"], sorted(rows, key=lambda r: r["name"]), args)


def add_to_group(ctx, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    names = inventory.known_vms(ctx, cloud, expand(args.names))
    add_members(ctx, args.group, cloud, names)
    ctx.say(f"group {args.group}: {len(_members(ctx, args.group))} VMs")


def remove_from_group(ctx, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    gone = {f"{cloud}:{n}" for n in expand(args.names)}
    with ctx.mirror.transaction():
        if not ctx.mirror.get("group", LOCAL, args.group):
            raise NotFound(f"unknown group '{args.group}'")
        members = _members(ctx, args.group)
        missing = gone - set(members)
        if missing:
            raise NotFound(f"not in group {args.group}: {', '.join(sorted(missing))}")
        _save(ctx, args.group, [m for m in members if m not in gone])
    ctx.say(f"group {args.group}: {len(members) - len(gone)} VMs")


def delete_group(ctx, args: Namespace) -> None:
    if not ctx.mirror.get("group", LOCAL, args.group):
        raise NotFound(f"unknown group '{args.group}'")
    ctx.mirror.remove("group", LOCAL, [args.group])
    ctx.say(f"deleted group {args.group} (its VMs are untouched)")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    listing = verb(subs, "list", list_groups, "list groups and their VMs")
    completes(listing.add_argument("name", nargs="?", metavar="GROUP"), "group")
    add_format_options(listing)
    for name, handler, help in (("add", add_to_group, "add VMs to a group (creating it)"),
                                ("remove", remove_from_group, "remove VMs from a group")):
        sub = verb(subs, name, handler, help)
        completes(sub.add_argument("group", metavar="GROUP"), "group")
        add_names(sub)
        add_cloud_option(sub)
    delete = verb(subs, "delete", delete_group, "delete a group (not its VMs)")
    completes(delete.add_argument("group", metavar="GROUP"), "group")
