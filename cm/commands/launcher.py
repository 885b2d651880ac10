"""`cm launcher`: the recipes clusters are launched from (shipped and your own)."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import Any

from cm.commands import add_cloud_option, add_dryrun_option, subcommands, verb
from cm.output import add_format_options

HELP = "List, show and run cluster launchers (recipes): `cm launcher run slurm -n 2`."
EXAMPLE = "cm launcher run slurm -n 2 --flavor worker=m1.small --dryrun"

COLUMNS = ["name", "command", "roles", "source", "description"]
NODE_COLUMNS = ["name", "role", "image", "flavor", "public"]


def add_launch_options(parser: ArgumentParser) -> None:
    """The options of every launch: `cm launcher run NAME ...`, `cm slurm ...`, `cm hadoop ...`."""
    parser.add_argument("-n", type=int, metavar="N", help="number of worker nodes")
    parser.add_argument("--name", help="the cluster's name (default: <user>-<launcher>-<number>)")
    add_cloud_option(parser)
    parser.add_argument("--flavor", action="append", default=[], metavar="ROLE=FLAVOR",
                        help="flavor of a role's nodes (a bare FLAVOR: every role); repeatable")
    parser.add_argument("--image", action="append", default=[], metavar="ROLE=IMAGE",
                        help="image of a role's nodes (a bare IMAGE: every role); repeatable")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a launcher parameter (see `cm launcher show NAME`); repeatable")
    parser.add_argument("--group", help="put the nodes in this group (default: the cluster's name)")
    add_timeout_options(parser)
    add_dryrun_option(parser)
    add_format_options(parser)


def add_timeout_options(parser: ArgumentParser) -> None:
    parser.add_argument("--no-wait", action="store_true", help="boot the nodes and return without waiting for readiness")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="limit of each phase per node: boot, then readiness (default: the launcher's)")


def launch(ctx: Any, args: Namespace, recipe: str, by_command: bool = False) -> int:
    """Launch (or with --dryrun, plan) a cluster from ``recipe`` as the options say."""
    from cm.clusters.report import launched, show_plan
    from cm.clusters.service import Request, launch as run, prepare

    request = Request(recipe=recipe, cloud=ctx.cloud_name(args), n=args.n, name=args.name or "",
                      flavors=args.flavor, images=args.image, params=args.param, group=args.group or "",
                      dryrun=args.dryrun, wait=not args.no_wait, timeout=args.timeout,
                      by_command=by_command)
    if args.dryrun:
        found, cluster, _ = prepare(ctx, request)
        return show_plan(ctx, args, found, cluster)
    cluster, found = run(ctx, request)
    return launched(ctx, args, cluster)


def list_launchers(ctx: Any, args: Namespace) -> None:
    from cm import recipes
    from cm.errors import ConfigError

    rows = []
    user = recipes.user_dir(ctx.home)
    for item in recipes.all_recipes(ctx.home):
        if isinstance(item, ConfigError):
            ctx.warn(f"cm: skipped a launcher: {item}")
            continue
        rows.append({"name": item.name, "command": f"cm {item.command}" if item.command else "",
                     "roles": ", ".join(item.roles), "source": "yours" if item.directory == user else "shipped",
                     "description": item.description})
    ctx.emit(COLUMNS, rows, args)


def show_launcher(ctx: Any, args: Namespace) -> None:
    from cm import recipes

    recipe = recipes.find(ctx.home, args.name)
    roles = {role: {"count": spec.get("count", 1), **{k: v for k, v in spec.items() if k != "count"}}
             for role, spec in recipe.roles.items()}
    ctx.emit_one({"name": recipe.name, "description": recipe.description, "file": str(recipe.path),
                  "command": recipe.command, "roles": roles, "params": recipe.data.get("params", {}),
                  "outputs": recipe.data.get("outputs", {}), "resize": recipe.resize_role}, args)


def run_launcher(ctx: Any, args: Namespace) -> int:
    return launch(ctx, args, args.launcher)


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    lister = verb(subs, "list", list_launchers, "list the launchers: shipped and yours ($CM_HOME/launchers)")
    add_format_options(lister)
    show = verb(subs, "show", show_launcher, "show a launcher's roles, parameters and outputs")
    show.add_argument("name", metavar="NAME")
    add_format_options(show)
    run = verb(subs, "run", run_launcher, "launch a cluster from a launcher", EXAMPLE)
    run.add_argument("launcher", metavar="NAME")
    add_launch_options(run)
