"""`cm singularity`: build SIF images, keep them locally, push them to HPC systems and run them through Slurm."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import TYPE_CHECKING

from cm.commands import add_cloud_option, subcommands, verb
from cm.errors import UsageError
from cm.jobs.systems import slurm_cloud
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Singularity/Apptainer images: build (from a definition file or a directory), list, push, run via Slurm."
EXAMPLE = "cm singularity build hello --def hello.def && cm singularity run hello --nodes 2 --cloud hpc"
COLUMNS = ["name", "size", "created", "bootstrap", "sha256", "pushed"]


def build_image(ctx: Context, args: Namespace) -> None:
    from cm.bulk import waiting
    from cm.images import store

    if bool(args.from_dir) == bool(args.definition):
        raise UsageError("singularity build: give --from DIR or --def FILE (one of them)")
    cache = Path(args.cache).expanduser() if args.cache else None
    with waiting(f"building {args.name}"):
        meta = store.build(ctx.home, args.name, from_dir=Path(args.from_dir).expanduser() if args.from_dir else None,
                           def_file=Path(args.definition).expanduser() if args.definition else None,
                           force=args.force, cache=cache)
    path = store.image_path(ctx.home, meta["name"])
    ctx.emit_one({"name": meta["name"], "path": str(path), "size": path.stat().st_size,
                  "bootstrap": meta["bootstrap"], "seconds": meta["build_seconds"]}, args)


def list_images(ctx: Context, args: Namespace) -> None:
    from cm.images import store
    from cm.images.ship import KIND

    pushed: dict[str, list[str]] = {}
    for record in ctx.mirror.records(KIND):
        pushed.setdefault(f"{record['name']}:{record['sha256']}", []).append(record["cloud"])
    rows = [{**m, "pushed": sorted(pushed.get(f"{m['name']}:{m['sha256']}", []))} for m in store.list_images(ctx.home)]
    ctx.emit(COLUMNS, rows, args)


def inspect_image(ctx: Context, args: Namespace) -> None:
    from cm.images import store

    ctx.emit_one(store.inspect(ctx.home, args.image), args)


def delete_image(ctx: Context, args: Namespace) -> None:
    from cm.images import store

    store.delete(ctx.home, args.image)
    ctx.say(f"deleted image {args.image}")


def push_image(ctx: Context, args: Namespace) -> None:
    from cm.images import ship, store

    cloud = slurm_cloud(ctx, args)
    path = store.image_path(ctx.home, args.image)
    meta = store.describe(path)
    result = ship.push(ctx, cloud, path, meta)
    where = ship.remote_path(ctx.provider(cloud), meta["name"]).replace('"', "")
    ctx.emit_one({"name": meta["name"], "cloud": cloud, "path": where, "sha256": meta["sha256"],
                  "result": "identical copy already there, not copied" if result == "identical" else "copied"}, args)


def run_image(ctx: Context, args: Namespace) -> int:
    """The runscript (run) or a command (exec) on N nodes through srun, each node's lines labelled."""
    from cm.images import ship, store

    cloud = slurm_cloud(ctx, args)
    path = store.image_path(ctx.home, args.image)
    provider = ctx.provider(cloud)
    runtime = provider.runtime()  # first: a system without a runtime gets nothing copied
    ship.push(ctx, cloud, path, store.describe(path))
    words = list(args.words)
    if words and words[0] == "--":
        words = words[1:]
    if args.verb == "exec" and not words:
        raise UsageError("singularity exec: give the command to run in the image")
    action = [args.verb, *words]
    options = []
    if args.partition:
        options.append(f"--partition={args.partition}")
    if args.time:
        from cm.jobs import timelimit

        options.append(f"--time={timelimit.slurm(timelimit.minutes(args.time))}")
    statuses = ship.run(provider, ship.srun_script(provider, runtime, path.stem, action, args.nodes, options), ctx.say)
    failed = {node: code for node, code in statuses.items() if code}
    if failed:
        ctx.warn(f"cm: {len(failed)} of {len(statuses)} nodes failed: "
                 + ", ".join(f"{node} exit {code}" for node, code in sorted(failed.items())))
        return 1
    ctx.warn(f"ran {path.stem} on {len(statuses)} node(s) of {cloud} with {Path(runtime).name}")
    return 0


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    b = verb(subs, "build", build_image, "build a SIF image from a definition file or a root directory",
             example="cm singularity build hello --def hello.def")
    b.add_argument("name", metavar="NAME")
    b.add_argument("--def", dest="definition", metavar="FILE", help="a Singularity definition file")
    b.add_argument("--from", dest="from_dir", metavar="DIR", help="a directory that becomes the image's root")
    b.add_argument("--force", action="store_true", help="replace an image of that name")
    b.add_argument("--cache", metavar="DIR", help="keep debootstrap's downloaded packages here")
    add_format_options(b)
    add_format_options(verb(subs, "list", list_images, "list the local images"))
    i = verb(subs, "inspect", inspect_image, "show an image's labels, definition and SIF objects")
    i.add_argument("image", metavar="IMAGE")
    add_format_options(i)
    d = verb(subs, "delete", delete_image, "delete a local image")
    d.add_argument("image", metavar="IMAGE")
    p = verb(subs, "push", push_image, "copy an image to an HPC system's image directory (skipped when identical)",
             example="cm singularity push hello --cloud hpc")
    p.add_argument("image", metavar="IMAGE")
    add_cloud_option(p)
    add_format_options(p)
    for name, text, example in (
            ("run", "run the image's runscript on N nodes through Slurm", "cm singularity run hello --nodes 2 -- a b"),
            ("exec", "run a command in the image on N nodes through Slurm", "cm singularity exec hello cat /etc/os-release")):
        r = verb(subs, name, run_image, text, example=example)
        r.add_argument("image", metavar="IMAGE")
        r.add_argument("words", nargs="*", metavar="ARGS" if name == "run" else "CMD",
                       help="arguments for the runscript (after --)" if name == "run" else "the command and its arguments")
        r.add_argument("--nodes", "-N", type=int, default=1, metavar="N", help="nodes, one task each (default 1)")
        r.add_argument("--partition", "-p", metavar="NAME")
        r.add_argument("--time", "-t", metavar="LIMIT", help="time limit (2h, 90m, HH:MM:SS)")
        add_cloud_option(r)
