"""`cm vm`: boot, list and manage virtual machines on any cloud."""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError, Namespace
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cm.commands import (add_cloud_option, add_dryrun_option, add_list_options, add_names, completes, list_records,
                         subcommands, verb)
from cm.errors import NotFound, UsageError
from cm.names import check_name, expand
from cm.output import add_format_options, check_columns

if TYPE_CHECKING:  # types only: the handlers run without importing what they do not use
    from cm.bulk import Outcome
    from cm.context import Context

# The lifecycle machinery (threads, the provider contract) is imported inside the
# handlers that use it: `cm vm list` answers from the mirror and must start fast.

HELP = "Boot, list, show, start, stop, delete and reach virtual machines."
EXAMPLE = "cm vm boot --n 3 --image ubuntu-22.04 --flavor m1.small"

COLUMNS = ["name", "cloud", "state", "image", "flavor", "public_ips", "private_ips"]
RESULT_COLUMNS = ["name", "cloud", "state", "result"]
TAG_COLUMNS = ["cluster", "role"]  # set on cluster nodes (cm.clusters); shown when asked for with -c

STATES = ("pending", "running", "stopped", "suspended", "paused", "rebooting", "error", "deleted", "unknown")
# verb -> (provider method, the states the VM settles in, past tense for messages);
# cm.provider.State is a str enum, so these strings compare equal to its members.
LIFECYCLE: dict[str, tuple[str, set[str], str]] = {
    "start": ("start_vm", {"running"}, "started"),
    "stop": ("stop_vm", {"stopped"}, "stopped"),
    "reboot": ("reboot_vm", {"running"}, "rebooted"),
    "suspend": ("suspend_vm", {"suspended", "paused"}, "suspended"),
    "resume": ("resume_vm", {"running"}, "resumed"),
    "delete": ("delete_vm", set(), "deleted"),  # settles when the cloud no longer has it
}
GONE = "gone from the cloud (removed from the mirror)"


def count(text: str) -> int:
    """--n: a plain positive whole number (not 1_000, 1e3 or -1)."""
    if not text.isdigit() or not text.isascii():
        raise ArgumentTypeError(f"invalid int value: '{text}' (a whole number of VMs, digits only)")
    return int(text)


def seconds(text: str) -> float:
    """--timeout: a number of seconds, 0 or more (not nan, inf or negative)."""
    from cm.context import parse_seconds

    try:
        return parse_seconds(text)
    except ValueError:
        raise ArgumentTypeError(f"invalid value: '{text}' (a number of seconds, 0 or more)") from None


def _targets(ctx: Context, args: Namespace, cloud: str) -> list[str]:
    """The VMs a bulk verb acts on: NAMES (hostlists), or every VM of --group on this cloud."""
    from cm import inventory

    if args.group:
        from cm.groups import members_on

        names = members_on(ctx, args.group, cloud)
        return inventory.known_vms(ctx, cloud, [*names, *(expand(args.names) if args.names else [])])
    if not args.names:
        raise UsageError("name the VMs: NAMES (hostlists such as vm[01-03]) or --group GROUP")
    return inventory.known_vms(ctx, cloud, expand(args.names))


def add_targets(parser: ArgumentParser) -> None:
    add_names(parser, nargs="*")
    completes(parser.add_argument("--group", help="act on every VM of this group"), "group")


def list_vms(ctx: Context, args: Namespace) -> None:
    wanted = [*args.column, *args.sort_column]
    list_records(ctx, args, "vm", COLUMNS + [c for c in TAG_COLUMNS if c in wanted])


def boot(ctx: Context, args: Namespace) -> int:
    from cm.commands.boot import boot_vms

    return boot_vms(ctx, args)


def _where(clouds: list[str]) -> str:
    return f"cloud '{clouds[0]}'" if len(clouds) == 1 else "any cloud"


def show_vm(ctx: Context, args: Namespace) -> None:
    """Everything the mirror knows of each VM (after asking the cloud, with --refresh)."""
    from cm import inventory

    clouds = ctx.cloud_names(args)
    names = expand(args.names)
    if args.refresh:
        for cloud in clouds:
            if len(clouds) == 1:
                for name in names:
                    inventory.store_vm(ctx, cloud, ctx.provider(cloud).get_vm(name))
            else:
                inventory.refresh(ctx, cloud, "vm")
    found = []
    for name in names:
        hits = []
        for cloud in clouds:
            try:
                hits.append(inventory.vm_record(ctx, cloud, name))  # a shared name is refused, as by every verb
            except NotFound:
                continue
        if not hits:
            raise NotFound(f"unknown VM '{name}' on {_where(clouds)} (see `cm vm list --refresh`)")
        found += [{k: v for k, v in r.items() if not k.startswith("_")} for r in hits]
    ctx.emit_records(found, args)


def status_vms(ctx: Context, args: Namespace) -> int:
    """Ask the clouds for the live state of each VM and update the mirror with what they say
    (a VM gone from its cloud leaves the mirror and its groups)."""
    from cm import bulk, inventory

    check_columns(RESULT_COLUMNS, args)
    rows, code = [], 0
    for cloud, names in _targets_by_cloud(ctx, args):
        provider = ctx.provider(cloud)

        def look(name: str, provider: Any = provider) -> Any:
            try:
                return provider.get_vm(name)
            except NotFound:
                return None  # an answer too: the cloud has no such VM

        def record(outcome: Outcome, cloud: str = cloud) -> None:
            if outcome.value is None:
                inventory.forget_vm(ctx, cloud, outcome.name)
            else:
                inventory.store_vm(ctx, cloud, outcome.value)

        outcomes = bulk.run_each(names, look, "status", record, batch=ctx.mirror.transaction)
        code = max(code, bulk.summary(outcomes, "")[1])
        rows += [{"name": o.name, "cloud": cloud, "state": _status_state(o), "result": _status_result(o)}
                 for o in outcomes]
    ctx.emit(RESULT_COLUMNS, rows, args)
    return code


def _status_state(o: Outcome) -> str:
    if not o.ok:
        return ""
    return "deleted" if o.value is None else str(o.value.state)


def _status_result(o: Outcome) -> str:
    if o.ok:
        return "ok" if o.value is not None else GONE
    return o.message if o.interrupted else f"failed: {o.message}"


def _targets_by_cloud(ctx: Context, args: Namespace) -> list[tuple[str, list[str]]]:
    """(cloud, VM names) pairs; with --cloud all, each name is looked for on every cloud."""
    if getattr(args, "cloud", None) != "all":
        cloud = ctx.cloud_name(args)
        return [(cloud, _targets(ctx, args, cloud))]
    wanted = expand(args.names) if args.names else []
    pairs = []
    for cloud in ctx.cloud_names(args):
        known = {r["name"] for r in ctx.mirror.records("vm", cloud)}
        if args.group:
            from cm.groups import members_of

            known &= set(members_of(ctx, args.group, cloud))
            names = sorted(known)
        else:
            names = [n for n in wanted if n in known]
        if names:
            pairs.append((cloud, names))
    missing = [n for n in wanted if not any(n in names for _, names in pairs)]
    if missing or not pairs:
        raise NotFound(f"unknown VM '{', '.join(missing)}' on any cloud" if missing else
                       f"group '{args.group}' has no VMs on any cloud")
    return pairs


def bulk_targets(ctx: Context, args: Namespace, label: str, method: str) -> tuple[str, list[str], Any] | None:
    """(cloud, target VMs, provider) of a bulk verb, its columns checked and the verb required first;
    None after a dry run has said what it would do."""
    check_columns(RESULT_COLUMNS, args)
    cloud = ctx.cloud_name(args)
    names = _targets(ctx, args, cloud)
    if args.dryrun:
        for name in names:
            ctx.say(f"would {label} {name} on {cloud}")
        return None
    provider = ctx.provider(cloud)
    provider.require(method)
    return cloud, names, provider


def lifecycle(verb_name: str) -> Callable[[Context, Namespace], int]:
    method, settled, done = LIFECYCLE[verb_name]

    def handler(ctx: Context, args: Namespace) -> int:
        from cm import bulk, groups, inventory

        planned = bulk_targets(ctx, args, verb_name, method)
        if planned is None:
            return 0
        cloud, names, provider = planned
        timeout = ctx.timeout(cloud, args.timeout)
        had_ips = any(inventory.vm_record(ctx, cloud, n).get("public_ips") for n in names)

        def act(name: str) -> Any:
            if verb_name == "delete":
                return _delete(provider, name, 0 if args.no_wait else timeout)
            if verb_name == "stop":
                provider.stop_vm(name, timeout=args.timeout)
            else:
                getattr(provider, method)(name)
            if args.no_wait:
                return None
            return inventory.wait_for(provider, name, settled, timeout)

        def record(outcome: Outcome) -> None:
            if verb_name == "delete" and outcome.value is None:
                inventory.forget_vm(ctx, cloud, outcome.name)
            elif outcome.value is not None:
                inventory.store_vm(ctx, cloud, outcome.value)
                if verb_name == "delete":  # still deleting: recorded so, and out of its groups already
                    groups.forget_vm(ctx, cloud, outcome.value.name)

        outcomes = bulk.run_each(names, act, verb_name, record, batch=ctx.mirror.transaction)
        if verb_name == "delete" and had_ips:
            inventory.refresh_quietly(ctx, cloud, "ip")  # its floating IPs were released
        return bulk.report(ctx, cloud, outcomes, done, args, state=True,
                           result_of=_delete_result if verb_name == "delete" else None)

    handler.__doc__ = f"{verb_name.capitalize()} VMs."
    return handler


def _delete(provider: Any, name: str, timeout: float) -> Any:
    """Delete and wait until the cloud no longer has the VM: None; the VM, marked deleted, if it still has it
    at the timeout or a Ctrl-C (so no refresh brings it back as running)."""
    from cm import inventory
    from cm.provider import State

    try:
        provider.delete_vm(name)
    except NotFound:
        return None  # already gone from the cloud: the record goes too
    vm = inventory.wait_gone(provider, name, timeout)
    if vm is not None:
        vm.state = State.DELETED
        vm.extra = {**vm.extra, "task_state": "deleting"}
    return vm


def _delete_result(outcome: Outcome) -> str:
    return "deleted" if outcome.value is None else "deleting (the cloud has not finished; recorded as deleted)"


def rename_vm(ctx: Context, args: Namespace) -> None:
    from cm import groups, inventory

    cloud = ctx.cloud_name(args)
    [old] = inventory.known_vms(ctx, cloud, [args.old])
    old_name = inventory.vm_record(ctx, cloud, args.old)["name"]
    check_name(args.new)
    if ctx.mirror.get("vm", cloud, args.new):
        raise UsageError(f"a VM named '{args.new}' already exists on cloud '{cloud}'")
    if args.dryrun:
        ctx.say(f"would rename {args.old} to {args.new} on {cloud}")
        return
    vm = ctx.provider(cloud).rename_vm(old, args.new)
    with ctx.mirror.transaction():
        if old == old_name:
            ctx.mirror.remove("vm", cloud, [old])
        else:
            ctx.mirror.remove_ids("vm", cloud, [old])
        inventory.store_vm(ctx, cloud, vm)
        if not ctx.mirror.get("vm", cloud, old_name):
            groups.rename_vm(ctx, cloud, old_name, args.new)
    ctx.say(f"renamed {args.old} to {args.new}")


def resize_vm(ctx: Context, args: Namespace) -> None:
    from cm import inventory

    cloud = ctx.cloud_name(args)
    [ref] = inventory.known_vms(ctx, cloud, [args.name])
    if args.dryrun:
        ctx.say(f"would resize {args.name} to {args.flavor} on {cloud}")
        return
    inventory.store_vm(ctx, cloud, ctx.provider(cloud).resize_vm(ref, args.flavor))
    ctx.say(f"resized {args.name} to {args.flavor}")


def wait_vms(ctx: Context, args: Namespace) -> int:
    from cm import bulk, inventory

    cloud = ctx.cloud_name(args)
    names = _targets(ctx, args, cloud)
    provider = ctx.provider(cloud)
    target = {args.state}
    timeout = ctx.timeout(cloud, args.timeout)

    def record(outcome: Outcome) -> None:
        inventory.store_vm(ctx, cloud, outcome.value)

    outcomes = bulk.run_each(names, lambda n: inventory.wait_for(provider, n, target, timeout), "wait", record,
                             batch=ctx.mirror.transaction)
    return bulk.report(ctx, cloud, outcomes, args.state, args, state=True)


def console_vm(ctx: Context, args: Namespace) -> None:
    from cm import inventory

    cloud = ctx.cloud_name(args)
    [ref] = inventory.known_vms(ctx, cloud, [args.name])
    text = ctx.provider(cloud).console_log(ref, args.lines)
    ctx.say(text.rstrip("\n"))


def _address(record: dict[str, Any]) -> str:
    for ip in [*record.get("public_ips", []), *record.get("private_ips", [])]:
        return ip
    raise UsageError(f"VM '{record['name']}' has no address yet (try `cm vm status {record['name']}`)")


def ssh_vm(ctx: Context, args: Namespace) -> int:
    from cm import inventory

    cloud = ctx.cloud_name(args)
    record = inventory.vm_record(ctx, cloud, args.name)
    login = ctx.value("login", cloud, args.user) or "root"
    return run_ssh(ctx, ["ssh", "-o", "StrictHostKeyChecking=accept-new", f"{login}@{_address(record)}"], args)


def run_ssh(ctx: Context, command: list[str], args: Namespace) -> int:
    """Run ``command`` (ssh up to its destination) with the user's --command, or print it with --dryrun."""
    if args.command:
        command = [*command, args.command]
    if args.dryrun:
        import shlex

        ctx.say(shlex.join(command))
        return 0
    import subprocess

    return subprocess.run(command).returncode


def ip_show(ctx: Context, args: Namespace) -> None:
    list_records(ctx, args, "vm", ["name", "cloud", "public_ips", "private_ips"])


def ip_change(assign: bool) -> Callable[[Any, Namespace], int]:
    def handler(ctx: Context, args: Namespace) -> int:
        from cm import bulk, inventory

        check_columns(RESULT_COLUMNS, args)
        cloud = ctx.cloud_name(args)
        names = _targets(ctx, args, cloud)
        if args.dryrun:
            for name in names:
                ctx.say(f"would {'assign a public IP to' if assign else 'release the public IPs of'} {name}")
            return 0
        provider = ctx.provider(cloud)
        provider.require("assign_public_ip" if assign else "release_public_ip")
        change = provider.assign_public_ip if assign else provider.release_public_ip

        def act(name: str) -> Any:
            change(name)
            return provider.get_vm(name)  # the VM with its addresses as they are now

        def record(outcome: Outcome) -> None:
            inventory.store_vm(ctx, cloud, outcome.value)

        outcomes = bulk.run_each(names, act, "ip", record, batch=ctx.mirror.transaction)
        inventory.refresh_quietly(ctx, cloud, "ip")  # `ip list` shows the change at once
        return bulk.report(ctx, cloud, outcomes, "assigned" if assign else "released", args, state=True)

    return handler


def add_boot_arguments(parser: ArgumentParser) -> None:
    names = parser.add_mutually_exclusive_group()
    names.add_argument("--name", metavar="NAMES", help="names or a hostlist such as node[01-10]")
    names.add_argument("--n", type=count, metavar="COUNT", help="boot COUNT VMs named <user>-NNN (default 1)")
    add_cloud_option(parser)
    completes(parser.add_argument("--image", help="image name (default: the 'image' default)"), "image")
    completes(parser.add_argument("--flavor", help="flavor name (default: the 'flavor' default)"), "flavor")
    completes(parser.add_argument("--key", help="ssh key: a key name or a public key file"), "key")
    completes(parser.add_argument("--group", help="put the VMs in this group (default: the 'group' default)"), "group")
    parser.add_argument("--user-data", metavar="FILE", help="cloud-init user-data file")
    parser.add_argument("--network-config", metavar="FILE", help="cloud-init network-config file (kvm clouds)")
    parser.add_argument("--secgroup", action="append", default=[], help="security group (repeatable)")
    parser.add_argument("--network", action="append", default=[], help="network to attach (repeatable)")
    parser.add_argument("--public", action="store_true", help="allocate and attach a public (floating) IP")
    parser.add_argument("--no-wait", action="store_true", help="return once the cloud accepted the VMs")
    parser.add_argument("--timeout", type=seconds, help="seconds to wait for running (default: the 'timeout' default)")
    add_dryrun_option(parser)
    add_format_options(parser)



def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_boot_arguments(verb(subs, "boot", boot, "boot VMs: --n COUNT named <user>-NNN, or --name node[01-10]",
                            example="cm vm boot --n 3 --image ubuntu-22.04 --flavor m1.small --public"))

    add_list_options(verb(subs, "list", list_vms, "list VMs from the mirror (instant, offline)",
                          example="cm vm list --cloud all -f json -c name -c state"), "vm")

    show = verb(subs, "show", show_vm, "show everything the mirror knows of VMs",
                example="cm vm show node01 --refresh -f yaml")
    add_names(show)
    add_cloud_option(show, allow_all=True)
    show.add_argument("--refresh", action="store_true", help="ask the cloud first")
    add_format_options(show)

    status = verb(subs, "status", status_vms, "ask the cloud for the live state of VMs",
                  example="cm vm status --cloud all --group experiment1")
    add_targets(status)
    add_cloud_option(status, allow_all=True)
    add_format_options(status)

    for name in LIFECYCLE:
        sub = verb(subs, name, lifecycle(name), f"{name} VMs (in parallel; one failure does not stop the rest)",
                   example=f"cm vm {name} node[01-04]   # or: cm vm {name} --group experiment1")
        add_targets(sub)
        add_cloud_option(sub)
        add_dryrun_option(sub)
        sub.add_argument("--no-wait", action="store_true", help="return without waiting for the new state")
        sub.add_argument("--timeout", type=seconds, help="seconds to wait (default: the 'timeout' default)")
        add_format_options(sub)

    from cm.commands.vm_checkpoint import add_checkpoint_verbs

    add_checkpoint_verbs(subs)  # save, restore, migrate

    rename = verb(subs, "rename", rename_vm, "rename a VM")
    completes(rename.add_argument("old", metavar="OLD"), "vm")
    rename.add_argument("new", metavar="NEW")
    add_cloud_option(rename)
    add_dryrun_option(rename)

    resize = verb(subs, "resize", resize_vm, "give a VM another flavor")
    completes(resize.add_argument("name", metavar="NAME"), "vm")
    completes(resize.add_argument("--flavor", required=True), "flavor")
    add_cloud_option(resize)
    add_dryrun_option(resize)

    wait = verb(subs, "wait", wait_vms, "wait until VMs reach a state")
    add_targets(wait)
    wait.add_argument("--state", default="running", choices=STATES, help="default: running")
    wait.add_argument("--timeout", type=seconds, help="seconds (default: the 'timeout' default)")
    add_cloud_option(wait)
    add_format_options(wait)

    console = verb(subs, "console", console_vm, "print what a VM wrote on its console")
    completes(console.add_argument("name", metavar="NAME"), "vm")
    console.add_argument("--lines", type=int, default=0, help="only the last LINES lines")
    add_cloud_option(console)

    ssh = verb(subs, "ssh", ssh_vm, "log in to a VM with ssh, or run one command there")
    completes(ssh.add_argument("name", metavar="NAME"), "vm")
    ssh.add_argument("--command", help="run this command instead of a login shell")
    ssh.add_argument("--user", help="login name (default: the 'login' default, else root)")
    add_cloud_option(ssh)
    add_dryrun_option(ssh)

    ip = verb(subs, "ip", ip_show, "show, assign or release VM addresses")
    ip_subs = subcommands(ip)
    add_list_options(verb(ip_subs, "show", ip_show, "show the addresses of VMs"), "vm")
    for name, assign in (("assign", True), ("release", False)):
        sub = verb(ip_subs, name, ip_change(assign), f"{name} public (floating) IPs of VMs")
        add_targets(sub)
        add_cloud_option(sub)
        add_dryrun_option(sub)
        add_format_options(sub)
