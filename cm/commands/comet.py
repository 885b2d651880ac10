"""`cm comet`: Comet-style HPC virtual clusters: computesets, power, consoles, ISOs, and the service."""

from __future__ import annotations

import sys
import time
from argparse import ArgumentParser, Namespace
from typing import Any

from cm.commands import add_cloud_option, add_dryrun_option, subcommands, verb
from cm.errors import ConfigError, NotFound, ProviderError, UsageError
from cm.names import collect, expand
from cm.output import add_format_options, check_columns

HELP = "HPC virtual clusters (Comet/Nucleus): clusters, computesets, power, consoles, ISOs; `comet serve` runs the service."
EXAMPLE = "cm comet start vc1 --count 2 --walltime 2h"

NODE_COLUMNS = ["name", "cluster", "type", "state", "host", "computeset", "cpus", "memory"]
STATUS_COLUMNS = ["name", "type", "state", "computeset", "computeset_state"]
CLUSTER_COLUMNS = ["name", "frontend", "frontend_state", "nodes", "running", "computes", "allocations"]
SET_COLUMNS = ["id", "cluster", "account", "state", "walltime", "start_time", "nodes", "hosts", "reservation", "job_id"]
ACTIVE = ("created", "submitted", "running", "ending")
DONE = {"poweron": "powered on", "poweroff": "powered off", "reboot": "rebooted", "reset": "reset",
        "shutdown": "shut down"}
STATES = ("created", "submitted", "running", "ending", "completed", "failed", "cancelled")


def _provider(ctx, args: Namespace):  # type: ignore[no-untyped-def]
    cloud = ctx.cloud_name(args)
    provider = ctx.provider(cloud)
    if provider.kind != "comet":
        raise UsageError(f"cloud '{cloud}' is a {provider.kind} cloud; pick a comet one with --cloud "
                         "or `cm default cloud=NAME`")
    return cloud, provider


def _remember(ctx, cloud: str, clusters: list[dict[str, Any]], whole: bool = True) -> None:
    """What the endpoint said goes into the mirror: nodes as VMs, clusters as the cloud's own (cloud_cluster)."""
    from cm.inventory import as_record
    from cm_plugins.comet.provider import node_rows, own_cluster

    vms = [as_record(ctx.provider(cloud)._vm(row)) for c in clusters for row in node_rows(c)]
    with ctx.mirror.transaction():
        if whole:
            ctx.mirror.replace("vm", cloud, vms)
            ctx.mirror.replace("cloud_cluster", cloud, [own_cluster(c) for c in clusters])
        else:
            for vm in vms:
                ctx.mirror.put("vm", cloud, vm)
            for c in clusters:
                ctx.mirror.put("cloud_cluster", cloud, own_cluster(c))


def _set_row(cs: dict[str, Any]) -> dict[str, Any]:
    from cm_plugins.comet.walltime import show

    start = cs.get("start_time")
    return {"id": cs["id"], "cluster": cs["cluster"], "account": cs.get("account", ""), "state": cs["state"],
            "walltime": show(int(cs["walltime_mins"])),
            "start_time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)) if start else "",
            "nodes": collect([c["name"] for c in cs.get("computes") or []]) if cs.get("computes") else "",
            "hosts": collect(sorted({c["host"] for c in cs.get("computes") or [] if c.get("host")})) or "",
            "reservation": cs.get("reservation") or "", "job_id": cs.get("job_id") or ""}


# -- init, listings ------------------------------------------------------------------------------
def init(ctx, args: Namespace) -> None:
    """Fetch the user's API key with the password and keep it 0600 for signed requests."""
    import getpass
    import os

    cloud, provider = _provider(ctx, args)
    username = args.username or provider.config.get("username") or ctx.user(cloud)
    password = os.environ.get("COMET_PASSWORD", "")
    if not password:
        if not sys.stdin.isatty():
            raise UsageError("comet init needs the password: run it at a terminal or set COMET_PASSWORD")
        password = getpass.getpass(f"password for {username} at {cloud}: ")
    key = provider.init_key(username, password)
    ctx.say(f"API key '{key['key_name']}' for {username} stored in {provider.key_file} (0600); "
            f"requests to cloud '{cloud}' are now signed")


def ll(ctx, args: Namespace) -> None:
    from cm_plugins.comet.provider import node_rows

    cloud, provider = _provider(ctx, args)
    clusters = [provider.cluster(args.cluster)] if args.cluster else provider.clusters()
    _remember(ctx, cloud, clusters, whole=not args.cluster)
    ctx.emit(NODE_COLUMNS, [r for c in clusters for r in node_rows(c)], args)


def cluster(ctx, args: Namespace) -> None:
    from cm_plugins.comet.provider import cluster_summary, node_rows

    cloud, provider = _provider(ctx, args)
    sort = [args.sort] if args.sort else []
    if not args.name:
        clusters = provider.clusters()
        _remember(ctx, cloud, clusters)
        args.sort_column = [*args.sort_column, *sort]
        ctx.emit(CLUSTER_COLUMNS, [cluster_summary(c) for c in clusters], args)
        return
    data = provider.cluster(args.name)
    _remember(ctx, cloud, [data], whole=False)
    if args.concise:
        ctx.emit(CLUSTER_COLUMNS, [cluster_summary(data)], args)
        return
    columns = STATUS_COLUMNS if args.status else NODE_COLUMNS
    args.sort_column = [*args.sort_column, *sort]
    ctx.emit(columns, node_rows(data), args)


def computeset(ctx, args: Namespace) -> None:
    cloud, provider = _provider(ctx, args)
    if args.id is not None:
        ctx.emit_one(_set_row(provider.computeset(args.id)), args)
        return
    states = [s for s in args.state or [] if s != "all"]
    bad = [s for s in states if s not in STATES]
    if bad:
        raise UsageError(f"unknown state '{bad[0]}' (states: {', '.join(STATES)}, or all)")
    if not args.state:
        states = list(ACTIVE)
    sets = provider.computesets(states)
    sets = [cs for cs in sets if (not args.cluster or cs["cluster"] == args.cluster)
            and (not args.allocation or cs.get("account") == args.allocation)]
    with ctx.mirror.transaction():
        for cs in sets:
            ctx.mirror.put("computeset", cloud, {"name": str(cs["id"]), **cs})
    ctx.emit(SET_COLUMNS, [_set_row(cs) for cs in sets], args)


# -- starting and ending computesets ---------------------------------------------------------------
def allocation_of(ctx, data: dict[str, Any], given: str | None) -> str:
    """--allocation, else the cluster's only one; several are asked for at a terminal, refused in scripts."""
    mine = list(data.get("allocations") or [])
    if given:
        if given not in mine:
            raise UsageError(f"allocation '{given}' is not one of cluster {data['name']}'s: {', '.join(mine) or 'none'}")
        return given
    if len(mine) == 1:
        return mine[0]
    if not mine:
        raise UsageError(f"you have no allocation on cluster {data['name']}")
    if not sys.stdin.isatty():
        raise UsageError(f"cluster {data['name']} has several allocations ({', '.join(mine)}): give --allocation")
    for number, name in enumerate(mine, 1):
        ctx.warn(f"  {number}) {name}")
    answer = _ask(f"allocation to charge on {data['name']} (1-{len(mine)}): ")
    if answer.isdigit() and 1 <= int(answer) <= len(mine):
        return mine[int(answer) - 1]
    if answer in mine:
        return answer
    raise UsageError(f"no allocation '{answer}'")


def _ask(prompt: str) -> str:
    """One answer from the terminal; the question goes to stderr so stdout stays the command's output."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer:
        raise UsageError("no answer (end of input)")
    return answer.strip()


def _free_check(data: dict[str, Any], names: list[str], count: int | None) -> None:
    """Refuse unknown nodes, nodes in an active computeset, or more nodes than are free, before any change."""
    computes = {n["name"]: n for n in data.get("computes") or []}
    if names:
        unknown = [n for n in names if n not in computes]
        if unknown:
            raise NotFound(f"cluster {data['name']} has no node {collect(unknown)}")
        busy = [n for n in names if computes[n].get("active_computeset")]
        if busy:
            sets = sorted({str(computes[n]["active_computeset"]) for n in busy})
            raise UsageError(f"{collect(busy)} already in active computeset {', '.join(sets)}")
    elif count is not None:
        free = sum(not n.get("active_computeset") for n in computes.values())
        if count < 1 or count > free:
            raise UsageError(f"cluster {data['name']} has {free} free nodes; cannot start {count}")


def start(ctx, args: Namespace) -> int:
    from cm_plugins.comet.walltime import minutes, show

    check_columns(SET_COLUMNS, args)
    cloud, provider = _provider(ctx, args)
    names = expand(args.nodes) if args.nodes else []
    if names and args.count is not None:
        raise UsageError("give NODES or --count, not both")
    if not names and args.count is None:
        raise UsageError("name the nodes (a hostlist) or give --count N")
    walltime = minutes(args.walltime)
    data = provider.cluster(args.cluster)
    _free_check(data, names, args.count)
    allocation = allocation_of(ctx, data, args.allocation)
    what = collect(names) if names else f"{args.count} nodes"
    if args.dryrun:
        ctx.say(f"would start {what} of {args.cluster} for {show(walltime)} on allocation {allocation}")
        return 0
    cs = provider.start_computeset(args.cluster, allocation=allocation, walltime_mins=walltime,
                                   count=args.count or 0, computes=collect(names) if names else "",
                                   reservation=args.reservation or "")
    if not args.no_wait:
        cs = _wait(ctx, provider, cs, {"running"}, ctx.timeout(cloud, args.timeout))
    _remember(ctx, cloud, [provider.cluster(args.cluster)], whole=False)
    ctx.emit(SET_COLUMNS, [_set_row(cs)], args)
    return 0 if cs["state"] in ("running", "submitted") else 1


def _wait(ctx, provider, cs: dict[str, Any], states: set[str], timeout: float) -> dict[str, Any]:
    """Poll the computeset until it reaches ``states`` (or a final one); the timeout is a failure."""
    from cm.bulk import pause, waiting

    deadline = time.monotonic() + timeout
    final = {"completed", "failed", "cancelled"}
    with waiting(f"computeset {cs['id']} is {cs['state']}"):
        while cs["state"] not in states | final:
            if time.monotonic() > deadline:
                raise ProviderError(f"computeset {cs['id']} is still {cs['state']} after {timeout:g} s "
                                    f"(its Slurm job {cs.get('job_id')} may be queued; see `cm comet computeset`)")
            pause(0.25)
            cs = provider.computeset(cs["id"])
    if cs["state"] == "failed":
        ctx.warn(f"computeset {cs['id']} failed: {cs.get('message') or 'see the service log'}")
    return cs


def terminate(ctx, args: Namespace) -> None:
    cloud, provider = _provider(ctx, args)
    if args.dryrun:
        ctx.say(f"would terminate computeset {args.id} on {cloud}")
        return
    cs = provider.computeset_action(args.id, "shutdown")
    ctx.emit(SET_COLUMNS, [_set_row(cs)], args)


def power(ctx, args: Namespace) -> int:
    """power ACTION CLUSTER [NODES|ID]: nothing = the frontend, a number = a computeset, a hostlist = nodes."""
    from cm import bulk
    from cm_plugins.comet.provider import POWER

    cloud, provider = _provider(ctx, args)
    action = POWER[args.action]
    target = args.target
    if args.count is not None and action != "poweron":
        raise UsageError("--count starts a computeset: only with `power on`")
    if target is None and args.count is None:
        if args.dryrun:
            ctx.say(f"would {action} the frontend of {args.cluster}")
            return 0
        provider.power(args.cluster, None, action)
        ctx.say(f"{action}: frontend of {args.cluster}")
        return 0
    if target is not None and target.isdigit():
        cs_action = {"poweron": None, "poweroff": "poweroff", "shutdown": "shutdown"}.get(action, action)
        if cs_action is None:
            raise UsageError("a computeset starts with `cm comet start`; `power on` takes NODES or --count")
        if args.dryrun:
            ctx.say(f"would {cs_action} computeset {target} on {cloud}")
        else:
            ctx.emit(SET_COLUMNS, [_set_row(provider.computeset_action(int(target), cs_action))], args)
        return 0
    names = expand([target]) if target else []
    data = provider.cluster(args.cluster)
    computes = {n["name"]: n for n in data.get("computes") or []}
    if action == "poweron" and (args.count is not None or not all(computes.get(n, {}).get("active_computeset")
                                                                   for n in names)):
        args.nodes = [target] if target else []
        return start(ctx, args)  # `power on CLUSTER NODES` is the older spelling of start
    unknown = [n for n in names if n not in computes]
    if unknown:
        raise NotFound(f"cluster {args.cluster} has no node {collect(unknown)}")
    if args.dryrun:
        ctx.say(f"would {action} {collect(names)} of {args.cluster}")
        return 0
    outcomes = bulk.run_each(names, lambda n: provider.power(args.cluster, n, action), action)
    return bulk.report(ctx, cloud, outcomes, DONE[action], args)


# -- nodes, consoles, ISOs, reservations ---------------------------------------------------------------
def console(ctx, args: Namespace) -> None:
    _, provider = _provider(ctx, args)
    link = provider.console_link(args.cluster, args.node)
    ctx.say(link if args.link else provider.console_text(link))


def node_info(ctx, args: Namespace) -> None:
    _, provider = _provider(ctx, args)
    ctx.emit_one(provider.node_info(args.cluster, args.node), args)


def node_rename(ctx, args: Namespace) -> int:
    from cm import bulk
    from cm.names import check_name

    cloud, provider = _provider(ctx, args)
    old, new = expand([args.old]), expand([args.new])
    if len(old) != len(new):
        raise UsageError(f"{args.old} names {len(old)} nodes but {args.new} names {len(new)}")
    for name in new:
        check_name(name, "node name")
    data = provider.cluster(args.cluster)
    have = {n["name"] for n in data.get("computes") or []}
    missing = [n for n in old if n not in have]
    if missing:
        raise NotFound(f"cluster {args.cluster} has no node {collect(missing)}")
    clash = [n for n in new if n in have and n not in old]
    if clash:
        raise UsageError(f"cluster {args.cluster} already has {collect(clash)}")
    pairs = list(zip(old, new))
    if args.dryrun:
        for a, b in pairs:
            ctx.say(f"would rename {a} to {b}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("renaming asks first; give --yes in scripts")
        if _ask(f"rename {collect(old)} to {collect(new)} on {args.cluster}? [y/N] ").lower() not in ("y", "yes"):
            ctx.warn("nothing renamed")
            return 1
    outcomes: list[bulk.Outcome] = []
    for a, b in pairs:  # one at a time: a swap of names must happen in order
        try:
            provider.rename_node(args.cluster, a, b)
            outcomes.append(bulk.Outcome(a, True, value=b))
        except (ProviderError, NotFound) as exc:
            outcomes.append(bulk.Outcome(a, False, str(exc)))
    _remember(ctx, cloud, provider.clusters())
    return bulk.report(ctx, cloud, outcomes, "renamed", args)


def iso_list(ctx, args: Namespace) -> None:
    _, provider = _provider(ctx, args)
    ctx.emit(["name"], [{"name": n} for n in provider.isos()], args)


def iso_upload(ctx, args: Namespace) -> None:
    import os

    _, provider = _provider(ctx, args)
    if not os.path.isfile(args.path):
        raise UsageError(f"no such file: {args.path}")
    name = args.isoname or os.path.basename(args.path)
    provider.upload_iso(args.path, name, private=args.private)
    ctx.say(f"uploaded {'private' if args.private else 'public'}/{name} (md5 checked by the service)")


def iso_name(given: str) -> str:
    """An ISO as the API names it: ``public/NAME`` or ``private/NAME``; a bare NAME is a public one."""
    return given if given.startswith(("public/", "private/")) else f"public/{given}"


def iso_delete(ctx, args: Namespace) -> None:
    _, provider = _provider(ctx, args)
    iso = args.iso if "/" in args.iso else f"private/{args.iso}"  # only private ISOs can be deleted
    if not iso.startswith("private/") or not iso[len("private/"):]:
        raise UsageError(f"cannot delete '{args.iso}': only your private ISOs (private/NAME) can be deleted")
    provider.delete_iso(iso)
    ctx.say(f"deleted {iso}")


def _iso_targets(ctx, provider, args: Namespace, iso: str) -> int:
    from cm import bulk

    names = expand([args.nodes]) if args.nodes else [None]
    outcomes = bulk.run_each([n or args.cluster for n in names],
                             lambda n: provider.attach_iso(iso, args.cluster, None if n == args.cluster else n),
                             "attach" if iso else "detach")
    return bulk.report(ctx, ctx.cloud_name(args), outcomes, "attached" if iso else "detached", args)


def iso_attach(ctx, args: Namespace) -> int:
    _, provider = _provider(ctx, args)
    return _iso_targets(ctx, provider, args, iso_name(args.iso))


def iso_detach(ctx, args: Namespace) -> int:
    _, provider = _provider(ctx, args)
    return _iso_targets(ctx, provider, args, "")


def reservation_list(ctx, args: Namespace) -> None:
    _, provider = _provider(ctx, args)
    ctx.emit(["name", "state", "start", "end", "nodes", "accounts", "users"], provider.reservations(), args)


def serve(ctx, args: Namespace) -> int:
    """Run the Nucleus service in the foreground (needs the comet-service extra)."""
    try:
        from cm_nucleus.app import serve as run
    except ImportError as exc:
        raise ConfigError(f"the service needs its packages: pip install 'cm[comet-service]' ({exc.name} missing)") from exc
    from cm_nucleus.settings import SettingsError
    from cm_nucleus.store import SchemaError

    try:
        run(args.config, args.port, args.log_level)
    except (SettingsError, SchemaError) as exc:
        raise ConfigError(str(exc)) from exc
    return 0


# -- the parser -------------------------------------------------------------------------------------
def _common(parser: ArgumentParser, listing: bool = True) -> ArgumentParser:
    add_cloud_option(parser)
    if listing:
        add_format_options(parser)
    return parser


def _start_options(parser: ArgumentParser) -> None:
    parser.add_argument("--count", type=int, metavar="N", help="this many free nodes")
    parser.add_argument("--allocation", help="the allocation (Slurm account) to charge; default: the only one")
    parser.add_argument("--reservation", help="a Slurm reservation to run in")
    parser.add_argument("--walltime", default="2d", help="90m, 2h, 3d, 1w or minutes (default 2d)")
    parser.add_argument("--no-wait", action="store_true", help="return once submitted, not once running")
    parser.add_argument("--timeout", type=float, help="seconds to wait for the nodes to run")
    add_dryrun_option(parser)


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    p = _common(verb(subs, "init", init, "fetch your API key with your password; later requests are signed",
                     example="COMET_PASSWORD=... cm comet init --cloud comet"), listing=False)
    p.add_argument("--username", help="default: the cloud's username, else your login name")
    p = _common(verb(subs, "ll", ll, "every node of every cluster (or of CLUSTER)"))
    p.add_argument("cluster", nargs="?", metavar="CLUSTER")
    p = _common(verb(subs, "cluster", cluster, "the clusters, or one cluster's nodes",
                     example="cm comet cluster vc1 --status --sort state"))
    p.add_argument("name", nargs="?", metavar="CLUSTER")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--concise", action="store_true", help="one summary line")
    how.add_argument("--status", action="store_true", help="only names, states and computesets")
    p.add_argument("--sort", metavar="COLUMN", help="sort the rows by this column")
    p = _common(verb(subs, "computeset", computeset, "computesets (default: the active ones) or one by ID",
                     example="cm comet computeset --state all --cluster vc1"))
    p.add_argument("id", nargs="?", type=int, metavar="ID")
    p.add_argument("--allocation", help="only those charged to this allocation")
    p.add_argument("--cluster", help="only those of this cluster")
    p.add_argument("--state", action="append", metavar="STATE", help=f"{', '.join(STATES)} or all; repeatable")
    p = _common(verb(subs, "start", start, "start a computeset: NODES (a hostlist) or --count N free nodes",
                     example="cm comet start vc1 vm-vc1-[0-1] --walltime 2h"))
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("nodes", nargs="*", metavar="NODES")
    _start_options(p)
    p = _common(verb(subs, "terminate", terminate, "end a computeset: its job is cancelled and its nodes power off"))
    p.add_argument("id", type=int, metavar="ID")
    add_dryrun_option(p)
    p = _common(verb(subs, "power", power, "power the frontend (no target), a computeset (ID) or nodes (NODES)",
                     example="cm comet power off vc1 vm-vc1-[0-1]"))
    p.add_argument("action", choices=["on", "off", "reboot", "reset", "shutdown"])
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("target", nargs="?", metavar="NODES|ID")
    _start_options(p)
    p = _common(verb(subs, "console", console, "a node's serial console (the frontend's without NODE)"),
                listing=False)
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("node", nargs="?", metavar="NODE")
    p.add_argument("--link", action="store_true", help="print the one-hour console URL instead")
    node = subcommands(verb(subs, "node", None, "node info and rename"))
    p = _common(verb(node, "info", node_info, "one node (the frontend without NODE)"))
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("node", nargs="?", metavar="NODE")
    p = _common(verb(node, "rename", node_rename, "rename nodes: OLDNAMES and NEWNAMES are hostlists of equal length",
                     example="cm comet node rename vc1 vm-vc1-[0-1] node[1-2] --yes"))
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("old", metavar="OLDNAMES")
    p.add_argument("new", metavar="NEWNAMES")
    p.add_argument("--yes", action="store_true", help="do not ask")
    add_dryrun_option(p)
    iso = subcommands(verb(subs, "iso", None, "ISO images: list, upload, delete, attach, detach"))
    _common(verb(iso, "list", iso_list, "the ISO images you can attach (public ones and your private ones)"))
    p = _common(verb(iso, "upload", iso_upload, "upload an ISO image (its md5 is checked)"), listing=False)
    p.add_argument("path", metavar="PATH")
    p.add_argument("--isoname", help="the name to give it (default: the file's)")
    p.add_argument("--private", action="store_true",
                   help="only you can list, attach and delete it (private/NAME; for ISOs holding secrets)")
    p = _common(verb(iso, "delete", iso_delete, "delete one of your private ISOs (detach it first)",
                     example="cm comet iso delete private/seed.iso"), listing=False)
    p.add_argument("iso", metavar="NAME")
    p = _common(verb(iso, "attach", iso_attach, "attach an ISO to the frontend or NODES"))
    p.add_argument("iso", metavar="ISO")
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("nodes", nargs="?", metavar="NODES")
    p = _common(verb(iso, "detach", iso_detach, "detach the ISO of the frontend or NODES"))
    p.add_argument("cluster", metavar="CLUSTER")
    p.add_argument("nodes", nargs="?", metavar="NODES")
    res = subcommands(verb(subs, "reservation", None, "Slurm reservations you can start computesets in"))
    _common(verb(res, "list", reservation_list, "the reservations"))
    p = verb(subs, "serve", serve, "run the Nucleus service (FastAPI + SQLite + Slurm + libvirt) in the foreground",
             example="cm comet serve --config /etc/cm-nucleus/nucleus.yaml")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--port", type=int, help="overrides listen.port of the configuration")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
