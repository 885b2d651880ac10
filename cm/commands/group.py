"""`cm group`: named sets of VMs, possibly on several clouds."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING, Any

from cm import inventory
from cm.commands import add_cloud_option, add_names, completes, subcommands, verb
from cm.errors import NotFound
from cm.groups import LOCAL, add_members, exists, members, save
from cm.names import expand
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List groups of VMs, add VMs to a group, remove them, delete a group."
EXAMPLE = "cm group add experiment1 node[01-04]"


def list_groups(ctx: Context, args: Namespace) -> None:
    rows: list[dict[str, Any]] = [{"name": r["name"], "members": r["members"], "count": len(r["members"])}
                                  for r in ctx.mirror.records("group", LOCAL)]
    if args.name:
        rows = [r for r in rows if r["name"] == args.name]
        if not rows:
            raise NotFound(f"unknown group '{args.name}'")
    ctx.emit(["name", "count", "members"], sorted(rows, key=lambda r: r["name"]), args)


def add_to_group(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    names = inventory.known_vms(ctx, cloud, expand(args.names))
    add_members(ctx, args.group, cloud, names)
    ctx.say(f"group {args.group}: {len(members(ctx, args.group))} VMs")


def remove_from_group(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    gone = {f"{cloud}:{n}" for n in expand(args.names)}
    with ctx.mirror.transaction():
        if not exists(ctx, args.group):
            raise NotFound(f"unknown group '{args.group}'")
        current = members(ctx, args.group)
        missing = gone - set(current)
        if missing:
            raise NotFound(f"not in group {args.group}: {', '.join(sorted(missing))}")
        save(ctx, args.group, [m for m in current if m not in gone])
    ctx.say(f"group {args.group}: {len(current) - len(gone)} VMs")


def delete_group(ctx: Context, args: Namespace) -> None:
    if not exists(ctx, args.group):
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
