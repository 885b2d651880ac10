"""`cm ip`: floating (public) IPs: allocate, attach to VMs, detach, give back."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING, Any

from cm import bulk, inventory
from cm.commands import add_cloud_option, add_dryrun_option, add_list_options, completes, list_records, subcommands, verb
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List, create, delete, attach and detach floating (public) IPs."
EXAMPLE = "cm ip attach 172.24.4.10 alice-001"
COLUMNS = ["address", "cloud", "vm", "fixed_ip", "network", "status", "id"]


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "address": record.get("name", "")}


def _store(ctx: Context, cloud: str, fip: Any) -> dict[str, Any]:
    record = inventory.as_record(fip)
    ctx.mirror.put("ip", cloud, record)
    return record


def _refresh_vm(ctx: Context, cloud: str, name: str) -> None:
    """Keep the VM's addresses in the mirror in step with the IP just moved."""
    if name and ctx.mirror.get("vm", cloud, name):
        inventory.store_vm(ctx, cloud, ctx.provider(cloud).get_vm(name))


def list_ips(ctx: Context, args: Namespace) -> None:
    list_records(ctx, args, "ip", COLUMNS, shape=_row, also_match=("vm",))


def create_ip(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    if args.dryrun:
        ctx.say(f"would allocate a floating IP on {cloud}" + (f" from {args.network}" if args.network else ""))
        return
    fip = ctx.provider(cloud).create_floating_ip(args.network or "")
    row = _row({**_store(ctx, cloud, fip), "cloud": cloud})
    ctx.emit_one({c: row.get(c, "") for c in COLUMNS}, args)


def delete_ips(ctx: Context, args: Namespace) -> int:
    cloud = ctx.cloud_name(args)
    if args.dryrun:
        for address in args.addresses:
            ctx.say(f"would delete floating IP {address} from {cloud}")
        return 0
    provider = ctx.provider(cloud)

    def record(outcome: bulk.Outcome) -> None:
        if outcome.ok:
            ctx.mirror.remove("ip", cloud, [outcome.name])

    outcomes = bulk.run_each(list(args.addresses), provider.delete_floating_ip, "delete", record)
    return bulk.report(ctx, cloud, outcomes, "deleted", args, key="address")


def attach_ip(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    inventory.known_vms(ctx, cloud, [args.vm])
    if args.dryrun:
        ctx.say(f"would attach floating IP {args.address} to {args.vm} on {cloud}")
        return
    fip = ctx.provider(cloud).attach_floating_ip(args.address, args.vm)
    _store(ctx, cloud, fip)
    _refresh_vm(ctx, cloud, args.vm)
    ctx.say(f"attached {args.address} to {args.vm}")


def detach_ip(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    if args.dryrun:
        ctx.say(f"would detach floating IP {args.address} on {cloud}")
        return
    before = ctx.mirror.get("ip", cloud, args.address) or {}
    fip = ctx.provider(cloud).detach_floating_ip(args.address)
    _store(ctx, cloud, fip)
    _refresh_vm(ctx, cloud, before.get("vm", ""))
    ctx.say(f"detached {args.address}" + (f" from {before['vm']}" if before.get("vm") else ""))


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_list_options(verb(subs, "list", list_ips, "list floating IPs from the mirror (NAMES: addresses or VMs)",
                          example="cm ip list --refresh"), "ip")

    create = verb(subs, "create", create_ip, "allocate a floating IP (default: from the external network)",
                  example="cm ip create --network public")
    completes(create.add_argument("--network", help="external network to allocate from"), "network")
    add_cloud_option(create)
    add_dryrun_option(create)
    add_format_options(create)

    delete = verb(subs, "delete", delete_ips, "give floating IPs back to the cloud",
                  example="cm ip delete 172.24.4.10")
    completes(delete.add_argument("addresses", nargs="+", metavar="ADDRESS"), "ip")
    add_cloud_option(delete)
    add_dryrun_option(delete)
    add_format_options(delete)

    attach = verb(subs, "attach", attach_ip, "attach a floating IP to a VM", example="cm ip attach 172.24.4.10 alice-001")
    completes(attach.add_argument("address", metavar="ADDRESS"), "ip")
    completes(attach.add_argument("vm", metavar="VM"), "vm")
    add_cloud_option(attach)
    add_dryrun_option(attach)

    detach = verb(subs, "detach", detach_ip, "detach a floating IP from its VM (it stays allocated)",
                  example="cm ip detach 172.24.4.10")
    completes(detach.add_argument("address", metavar="ADDRESS"), "ip")
    add_cloud_option(detach)
    add_dryrun_option(detach)
