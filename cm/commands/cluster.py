"""`cm cluster`: virtual clusters launched from recipes, as records in the mirror."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import Any

from cm.commands import add_cloud_option, add_dryrun_option, subcommands, verb
from cm.output import add_format_options

HELP = "List, show, reach, resize and delete virtual clusters (launch them with `cm slurm`, `cm launcher run`)."
EXAMPLE = "cm cluster resize mycluster +2"


def _clouds(ctx: Any, args: Namespace) -> list[str]:
    return ctx.cloud_names(args)


def _find(ctx: Any, args: Namespace, name: str) -> tuple[str, dict[str, Any]]:
    """(cloud, cluster) by name, looked for on every cloud with --cloud all."""
    from cm.clusters import store
    from cm.errors import NotFound

    for cloud in _clouds(ctx, args):
        record = store.get(ctx, cloud, name)
        if record:
            return cloud, record
    where = "any cloud" if getattr(args, "cloud", None) == "all" else f"cloud '{ctx.cloud_name(args)}'"
    raise NotFound(f"unknown cluster '{name}' on {where} (see `cm cluster list --cloud all`)")


def list_clusters(ctx: Any, args: Namespace) -> None:
    from cm.clusters import store
    from cm.clusters.report import LIST_COLUMNS, summary_row

    clouds = _clouds(ctx, args)
    rows = [summary_row(r) for r in store.records(ctx, clouds)]
    rows += [own_cluster_row(r, cloud) for cloud in clouds for r in ctx.mirror.records("cloud_cluster", cloud)]
    if args.names:
        rows = [r for r in rows if r["name"] in args.names]
    ctx.emit(LIST_COLUMNS, sorted(rows, key=lambda r: (r["cloud"], r["name"])), args)


def own_cluster_row(record: dict[str, Any], cloud: str) -> dict[str, Any]:
    """A cluster the cloud keeps itself (mirrored by `cm refresh`) as a `cluster list` row."""
    return {"name": record["name"], "cloud": cloud, "recipe": f"({record.get('source') or 'cloud'})",
            "state": record.get("state", ""), "nodes": record.get("nodes", ""), "login": record.get("login", ""),
            "reason": ""}


def show_cluster(ctx: Any, args: Namespace) -> None:
    from cm.clusters.report import summary_row

    _, cluster = _find(ctx, args, args.name)
    shown = {**summary_row(cluster), "params": cluster["params"], "flavors": cluster["flavors"],
             "images": cluster["images"], "group": cluster.get("group", ""), "outputs": cluster.get("outputs", {}),
             "simulated": cluster.get("simulated", False), "updated": cluster.get("updated", ""),
             "made": cluster.get("made", {})}
    ctx.emit_one(shown, args)


def list_nodes(ctx: Any, args: Namespace) -> None:
    from cm.clusters.report import NODE_COLUMNS, node_rows

    _, cluster = _find(ctx, args, args.name)
    rows = node_rows(cluster, all_nodes=args.all)
    if args.role:
        rows = [r for r in rows if r["role"] == args.role]
    ctx.emit(NODE_COLUMNS, rows, args)


def ssh_cluster(ctx: Any, args: Namespace) -> int:
    from cm.clusters.service import login
    from cm.clusters.teardown import ssh_access
    from cm.commands.vm import run_ssh

    cloud, cluster = _find(ctx, args, args.name)
    _, address = login(ctx, cloud, args.name)
    user, options = ssh_access(ctx, cloud, cluster, args.user)
    return run_ssh(ctx, ["ssh", *options, f"{user}@{address}"], args)


def resize_cluster(ctx: Any, args: Namespace) -> int:
    from cm.clusters.report import launched
    from cm.clusters.service import parse_change, resize

    change = parse_change(args.change)
    cloud, cluster = _find(ctx, args, args.name)
    if args.dryrun:
        role = "nodes"
        ctx.say(f"would {'add' if change > 0 else 'drain and remove'} {abs(change)} {role} "
                f"{'to' if change > 0 else 'from'} cluster '{args.name}' on {cloud}")
        return 0
    cluster, changed = resize(ctx, cloud, args.name, change, force=args.force, wait=not args.no_wait,
                               timeout=args.timeout)
    if change < 0:
        ctx.warn(f"removed {', '.join(n['name'] for n in changed)} from cluster '{args.name}'")
        return 0
    return launched(ctx, args, cluster)


def delete_clusters(ctx: Any, args: Namespace) -> int:
    from cm.clusters.teardown import delete

    failed = 0
    for name in args.names:
        cloud, cluster = _find(ctx, args, name)
        if args.dryrun:
            nodes = [n["name"] for n in cluster["nodes"] if n["state"] != "deleted"]
            made = cluster.get("made", {})
            ctx.say(f"would delete cluster '{name}' on {cloud}: VMs {', '.join(nodes) or 'none'}; "
                    f"security groups {', '.join(made.get('secgroups', [])) or 'none'}; "
                    f"floating IPs {', '.join(made.get('ips', [])) or 'none'}")
            continue
        problems = delete(ctx, cloud, name)
        if problems:
            failed += 1
            ctx.warn(f"cm: cluster '{name}' is not fully deleted: {'; '.join(problems)}; run the delete again")
        else:
            ctx.warn(f"deleted cluster '{name}' and everything it made on {cloud}")
    return 1 if failed else 0


def timeline(ctx: Any, args: Namespace) -> None:
    from cm.clusters import timeline as tl

    clusters = [_find(ctx, args, name)[1] for name in args.names]
    rows = [row for cluster in clusters for row in tl.rows(cluster)]
    ctx.emit(tl.COLUMNS, rows, args)
    if ctx.output_format(args) == "table" and not args.column:
        for cluster in clusters:
            ctx.say("")
            ctx.say(tl.chart(cluster))
    if args.png:
        from pathlib import Path

        tl.png(clusters, Path(args.png))
        ctx.warn(f"wrote {args.png}")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    lister = verb(subs, "list", list_clusters, "list clusters with their state and login address")
    lister.add_argument("names", nargs="*", metavar="NAMES", help="only these")
    add_cloud_option(lister, allow_all=True)
    add_format_options(lister)

    show = verb(subs, "show", show_cluster, "show a cluster: recipe, parameters, state, outputs")
    show.add_argument("name", metavar="NAME")
    add_cloud_option(show, allow_all=True)
    add_format_options(show)

    nodes = verb(subs, "nodes", list_nodes, "list a cluster's nodes with their roles and states")
    nodes.add_argument("name", metavar="NAME")
    nodes.add_argument("--role", help="only nodes of this role")
    nodes.add_argument("--all", action="store_true", help="also nodes deleted by a resize or replaced")
    add_cloud_option(nodes, allow_all=True)
    add_format_options(nodes)

    ssh = verb(subs, "ssh", ssh_cluster, "log in to the cluster's login node", "cm cluster ssh c1 --command sinfo")
    ssh.add_argument("name", metavar="NAME")
    ssh.add_argument("--command", help="run this command instead of a login shell")
    ssh.add_argument("--user", help="login name (default: the 'login' default, else the user the nodes were booted with)")
    add_cloud_option(ssh, allow_all=True)
    add_dryrun_option(ssh)

    resize = verb(subs, "resize", resize_cluster, "add (+N) or drain and remove (-N) worker nodes",
                  "cm cluster resize c1 +2")
    resize.add_argument("name", metavar="NAME")
    resize.add_argument("change", metavar="+N|-N")
    resize.add_argument("--force", action="store_true", help="remove nodes even if they run jobs")
    from cm.commands.launcher import add_timeout_options

    add_timeout_options(resize)
    add_cloud_option(resize, allow_all=True)
    add_dryrun_option(resize)
    add_format_options(resize)

    delete = verb(subs, "delete", delete_clusters,
                  "delete clusters and every VM, security group and floating IP they made")
    delete.add_argument("names", nargs="+", metavar="NAMES")
    add_cloud_option(delete, allow_all=True)
    add_dryrun_option(delete)

    line = verb(subs, "timeline", timeline, "each node's phases (requested .. ready) as a table and a chart",
                "cm cluster timeline c1 c2 --png launches.png")
    line.add_argument("names", nargs="+", metavar="NAMES", help="one cluster, or two to compare")
    line.add_argument("--png", metavar="FILE", help="also draw the chart into a PNG (needs matplotlib)")
    add_cloud_option(line, allow_all=True)
    add_format_options(line)
