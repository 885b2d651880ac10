"""`cm secgroup`: security groups and their rules (OpenStack and clouds like it)."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING, Any

from cm import bulk, inventory
from cm.commands import (
    add_cloud_option,
    add_dryrun_option,
    add_list_options,
    add_names,
    add_show_options,
    completes,
    list_records,
    subcommands,
    verb,
)
from cm.errors import UsageError
from cm.names import expand
from cm.output import add_format_options
from cm.provider import SecRule

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List, show, add and delete security groups and their rules (firewall of the VMs)."
EXAMPLE = "cm secgroup add ssh-ping --default-rules"
COLUMNS = ["name", "cloud", "rules", "description", "id"]
RULE_COLUMNS = ["id", "direction", "protocol", "ports", "remote", "ethertype"]
# What --default-rules opens: ssh and ping from anywhere.
DEFAULT_RULES = [SecRule(protocol="tcp", port_min=22, port_max=22, cidr="0.0.0.0/0"),
                 SecRule(protocol="icmp", cidr="0.0.0.0/0")]
PROTOCOLS = ("tcp", "udp", "icmp", "any")


def _store(ctx: Context, cloud: str, group: Any) -> dict[str, Any]:
    record = inventory.as_record(group)
    ctx.mirror.put("secgroup", cloud, record)
    return record


def _record(ctx: Context, cloud: str, name: str, refresh: bool) -> dict[str, Any]:
    if refresh:
        return _store(ctx, cloud, ctx.provider(cloud).get_secgroup(name))
    return inventory.known(ctx, "secgroup", cloud, name, "security group")


def list_groups(ctx: Context, args: Namespace) -> None:
    list_records(ctx, args, "secgroup", COLUMNS, shape=lambda r: {**r, "rules": len(r.get("rules") or [])})


def show_group(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    record = _record(ctx, cloud, args.name, args.refresh)
    shown = {k: v for k, v in record.items() if not k.startswith("_") and k != "kind" and v != {}}
    shown["rules"] = [r.get("rule", "") for r in record.get("rules") or []]
    ctx.emit_one(shown, args)


def add_group(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    rules = DEFAULT_RULES if args.default_rules else []
    if args.dryrun:
        extra = f" allowing {', '.join(r.name for r in rules)}" if rules else ""
        ctx.say(f"would add security group {args.name} to {cloud}{extra}")
        return
    provider = ctx.provider(cloud)
    group = provider.add_secgroup(args.name, args.description or "")
    _store(ctx, cloud, group)
    for rule in rules:
        provider.add_secgroup_rule(args.name, rule)
    if rules:
        _store(ctx, cloud, provider.get_secgroup(args.name))
        ctx.say(f"added security group {args.name} to {cloud}, allowing ssh (tcp 22) and ping (icmp) from anywhere")
    else:
        ctx.say(f"added security group {args.name} to {cloud}")


def delete_groups(ctx: Context, args: Namespace) -> int:
    cloud = ctx.cloud_name(args)
    names = expand(args.names)
    if args.dryrun:
        for name in names:
            ctx.say(f"would delete security group {name} from {cloud}")
        return 0
    provider = ctx.provider(cloud)

    def record(outcome: bulk.Outcome) -> None:
        if outcome.ok:
            ctx.mirror.remove("secgroup", cloud, [outcome.name])

    outcomes = bulk.run_each(names, provider.delete_secgroup, "delete", record)
    return bulk.report(ctx, cloud, outcomes, "deleted", args)


def _ports(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 0
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError as exc:
        raise UsageError(f"--port expects PORT or FIRST-LAST, got '{text}'") from exc
    if not (1 <= first <= last <= 65535):
        raise UsageError(f"--port {text}: ports go from 1 to 65535, first ≤ last")
    return first, last


def _rule_from(args: Namespace) -> SecRule:
    protocol = "" if args.protocol == "any" else args.protocol
    first, last = _ports(args.port)
    if first and protocol not in ("tcp", "udp"):
        raise UsageError("--port needs --protocol tcp or udp")
    if args.cidr and args.group:
        raise UsageError("give --cidr or --group, not both")
    cidr = args.cidr or ("" if args.group else ("0.0.0.0/0" if args.ethertype == "IPv4" else "::/0"))
    return SecRule(direction=args.direction, protocol=protocol, port_min=first, port_max=last, cidr=cidr,
                   remote_group=args.group or "", ethertype=args.ethertype)


def _rule_row(rule: dict[str, Any]) -> dict[str, Any]:
    low, high = rule.get("port_min") or 0, rule.get("port_max") or 0
    ports = "" if not low else (str(low) if low == high else f"{low}-{high}")
    remote = rule.get("cidr") or (f"group:{rule['remote_group']}" if rule.get("remote_group") else "any")
    return {"id": rule.get("id", ""), "direction": rule.get("direction", ""), "protocol": rule.get("protocol") or "any",
            "ports": ports, "remote": remote, "ethertype": rule.get("ethertype", "")}


def list_rules(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    record = _record(ctx, cloud, args.name, args.refresh)
    ctx.emit(RULE_COLUMNS, [_rule_row(r) for r in record.get("rules") or []], args)


def add_rule(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    rule = _rule_from(args)
    if args.dryrun:
        ctx.say(f"would add rule '{rule.name}' to security group {args.name} on {cloud}")
        return
    provider = ctx.provider(cloud)
    created = provider.add_secgroup_rule(args.name, rule)
    _store(ctx, cloud, provider.get_secgroup(args.name))
    ctx.say(f"added rule {created.id} '{created.name}' to security group {args.name}")


def delete_rule(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    if args.dryrun:
        ctx.say(f"would delete rule {args.rule} from security group {args.name} on {cloud}")
        return
    provider = ctx.provider(cloud)
    provider.delete_secgroup_rule(args.name, args.rule)
    _store(ctx, cloud, provider.get_secgroup(args.name))
    ctx.say(f"deleted rule {args.rule} from security group {args.name}")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_list_options(verb(subs, "list", list_groups, "list security groups from the mirror",
                          example="cm secgroup list --refresh"), "secgroup")
    add_show_options(verb(subs, "show", show_group, "show one security group and its rules",
                          example="cm secgroup show default"), "secgroup")

    add = verb(subs, "add", add_group, "add a security group (--default-rules: allow ssh and ping)",
               example="cm secgroup add ssh-ping --default-rules")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--description", help="what the group is for")
    add.add_argument("--default-rules", action="store_true",
                     help="allow ssh (tcp 22) and ping (icmp) from anywhere")
    add_cloud_option(add)
    add_dryrun_option(add)

    delete = verb(subs, "delete", delete_groups, "delete security groups", example="cm secgroup delete ssh-ping")
    add_names(delete, "secgroup")
    add_cloud_option(delete)
    add_dryrun_option(delete)
    add_format_options(delete)

    rule = verb(subs, "rule", list_rules, "list, add and delete the rules of a security group")
    rule_subs = subcommands(rule)
    listing = verb(rule_subs, "list", list_rules, "list the rules of a security group",
                   example="cm secgroup rule list default")
    completes(listing.add_argument("name", metavar="GROUP"), "secgroup")
    add_cloud_option(listing)
    listing.add_argument("--refresh", action="store_true", help="ask the cloud first")
    add_format_options(listing)

    add_r = verb(rule_subs, "add", add_rule, "add a rule (default: ingress, any protocol, from anywhere)",
                 example="cm secgroup rule add web --protocol tcp --port 8000-8080 --cidr 10.0.0.0/8")
    completes(add_r.add_argument("name", metavar="GROUP"), "secgroup")
    add_r.add_argument("--protocol", choices=PROTOCOLS, default="any", help="default: any")
    add_r.add_argument("--port", metavar="PORT[-PORT]", help="a port or a range (tcp and udp)")
    add_r.add_argument("--cidr", help="allowed source (egress: destination) addresses (default: anywhere)")
    completes(add_r.add_argument("--group", metavar="GROUP", help="allow the members of this group instead"),
              "secgroup")
    add_r.add_argument("--direction", choices=("ingress", "egress"), default="ingress", help="default: ingress")
    add_r.add_argument("--ethertype", choices=("IPv4", "IPv6"), default="IPv4", help="default: IPv4")
    add_cloud_option(add_r)
    add_dryrun_option(add_r)

    del_r = verb(rule_subs, "delete", delete_rule, "delete a rule by its id (a unique prefix is enough)",
                 example="cm secgroup rule delete web 3f2a9c")
    completes(del_r.add_argument("name", metavar="GROUP"), "secgroup")
    del_r.add_argument("rule", metavar="RULE_ID", help="see `cm secgroup rule list GROUP`")
    add_cloud_option(del_r)
    add_dryrun_option(del_r)
