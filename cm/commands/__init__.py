"""The built-in nouns of the shell, one module each, registered like any plugin's.

A noun module defines:

``HELP``      one line shown by ``help``;
``EXAMPLE``   one example command line, shown under the usage;
``build(parser)``  adds the noun's options and subcommands to an argparse parser;
              every leaf sets ``run=handler`` with ``handler(ctx, args) -> int | None``.

The same parser and handler serve interactive, one-shot and script modes: the
cmd2 shell and the one-shot runner both build parsers from ``build``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

NOUNS = ("vm", "image", "flavor", "key", "group", "cloud", "default", "var", "refresh", "plugins", "secgroup", "network",
         "ip", "quota", "limits", "usage", "cluster", "launcher", "slurm", "hadoop", "monitor")

Handler = Callable[..., Any]
# The keys `cm default` takes (plugins declare more through register_settings).
SETTINGS = {"cloud": "the active cloud", "format": "output format: table, json, yaml, csv or value",
            "image": "image new VMs boot", "flavor": "flavor new VMs get", "group": "group new VMs join",
            "user": "prefix of generated VM names", "key": "ssh key name or .pub file",
            "timeout": "seconds that boot and wait wait for a VM", "login": "user `vm ssh` logs in as",
            "monitor_retention": "how long `cm monitor` keeps samples (7d, 12h, ...)"}


def register_commands(register: Callable[[str, str], None]) -> None:
    """Entry-point hook: the built-in nouns."""
    for noun in NOUNS:
        register(noun, f"cm.commands.{noun}")


def register_settings(register: Callable[[str, str], None]) -> None:
    """Entry-point hook: the default keys cm itself uses."""
    for key, text in SETTINGS.items():
        register(key, text)


def subcommands(parser: argparse.ArgumentParser) -> Any:
    """The subcommand table of a noun; a subcommand is required."""
    return parser.add_subparsers(title="subcommands", dest="verb", metavar="SUBCOMMAND", required=True)


def verb(subs: Any, name: str, handler: Handler, help: str, example: str = "",
         **kwargs: Any) -> argparse.ArgumentParser:
    """Add one subcommand whose handler is ``handler``; ``example`` shows under its usage."""
    if example:
        kwargs.setdefault("epilog", f"example:\n  {example}")
    parser = subs.add_parser(name, help=help, description=help, **kwargs)
    parser.set_defaults(run=handler)
    return parser


def completes(action: argparse.Action, what: str) -> argparse.Action:
    """Mark an argument for tab completion from the mirror (vm, image, flavor, key, group, cloud)."""
    action.cm_complete = what  # type: ignore[attr-defined]
    return action


def add_cloud_option(parser: argparse.ArgumentParser, allow_all: bool = False) -> None:
    extra = " ('all' for every cloud)" if allow_all else ""
    completes(parser.add_argument("--cloud", metavar="NAME", help=f"cloud to act on (default: the active cloud){extra}"),
              "cloud")


def add_dryrun_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dryrun", action="store_true", help="show what would be done and change nothing")


def add_names(parser: argparse.ArgumentParser, what: str = "vm", nargs: str = "+", help: str = "") -> None:
    completes(parser.add_argument("names", nargs=nargs, metavar="NAMES",
                                  help=help or "names or hostlists such as vm[01-10]"), what)


def add_list_options(parser: argparse.ArgumentParser, what: str) -> None:
    """The options every mirror-backed list takes: NAMES filter, --cloud [all], --refresh, output."""
    add_names(parser, what, nargs="*", help="only these (hostlists allowed)")
    add_cloud_option(parser, allow_all=True)
    parser.add_argument("--refresh", action="store_true", help="sync the mirror from the cloud first")
    from cm.output import add_format_options

    add_format_options(parser)


def list_records(ctx: Context, args: argparse.Namespace, kind: str, columns: list[str], *,
                 shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 also_match: tuple[str, ...] = ()) -> None:
    """List ``kind`` records from the mirror (after a refresh if asked), filtered by name.

    ``also_match`` names other fields the NAMES filter matches (a floating IP's vm);
    ``shape`` turns a record into its row.
    """
    from cm import inventory
    from cm.names import expand

    from cm.errors import CmError, ProviderError
    from cm.runner import report

    rows: list[dict[str, Any]] = []
    clouds = ctx.cloud_names(args)
    failed: list[str] = []
    for cloud in clouds:
        try:
            rows += inventory.records(ctx, kind, cloud, args.refresh)
        except CmError as exc:
            if len(clouds) == 1:
                raise
            report(ctx, exc)  # the others still answer: list them
            failed.append(cloud)
    if args.names:
        wanted = set(expand(args.names))
        fields = ("name", *also_match)
        rows = [r for r in rows if r.get("name") in wanted or any(r.get(f) in wanted for f in fields[1:])]
    rows = sorted(rows, key=lambda r: (r.get("cloud", ""), str(r.get("name", ""))))
    ctx.emit(columns, [shape(r) for r in rows] if shape else rows, args)
    if failed:
        raise ProviderError(f"{len(failed)} of {len(clouds)} clouds did not answer ({', '.join(failed)}); "
                            "listed the others")


def show_record(ctx: Context, args: argparse.Namespace, kind: str) -> None:
    """Show one ``kind`` record by name (or id) from the mirror."""
    from cm import inventory
    from cm.errors import NotFound

    cloud = ctx.cloud_name(args)
    records = inventory.records(ctx, kind, cloud, getattr(args, "refresh", False))
    for record in records:
        if args.name in (record.get("name"), record.get("id")):
            ctx.emit_one({k: v for k, v in record.items() if not k.startswith("_")}, args)
            return
    raise NotFound(f"unknown {kind} '{args.name}' on cloud '{cloud}' (see `cm {kind} list --refresh`)")


def add_show_options(parser: argparse.ArgumentParser, what: str) -> None:
    completes(parser.add_argument("name", metavar="NAME"), what)
    add_cloud_option(parser)
    parser.add_argument("--refresh", action="store_true", help="sync the mirror from the cloud first")
    from cm.output import add_format_options

    add_format_options(parser)
