"""`cm refresh`: sync the mirror from the clouds."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm import bulk, inventory
from cm.commands import add_cloud_option
from cm.errors import CmError, Unsupported
from cm.output import add_format_options, check_columns

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Sync the mirror from the clouds: records gone from a cloud disappear from the mirror."
EXAMPLE = "cm refresh vm --cloud all"
COLUMNS = ["cloud", "kind", "result"]


def run_refresh(ctx: Context, args: Namespace) -> int:
    check_columns(COLUMNS, args)
    kinds = list(inventory.FETCHERS) if args.what == "all" else [args.what]
    rows, failed = [], 0
    for cloud in ctx.cloud_names(args):
        asked = False  # whether this cloud was really asked for a kind (not refused up front as Unsupported)
        for number, kind in enumerate(kinds):
            try:
                with bulk.waiting(f"refreshing {kind} records of {cloud}"):
                    count = inventory.refresh(ctx, cloud, kind)
                    result = f"{count} record{'' if count == 1 else 's'}"
            except Unsupported:
                if args.what != "all":
                    raise
                continue  # this cloud has no such thing; nothing to sync
            except CmError as exc:
                failed += 1
                rows.append({"cloud": cloud, "kind": kind, "result": f"failed: {exc}"})
                if not asked:  # the cloud failed its first answer: do not wait on it again
                    rest = listable(ctx, cloud, kinds[number + 1:])
                    if rest:
                        rows.append({"cloud": cloud, "kind": ", ".join(rest), "result": "skipped"})
                        break
                asked = True
                continue
            asked = True
            rows.append({"cloud": cloud, "kind": kind, "result": result})
    ctx.emit(COLUMNS, rows, args)
    return 1 if failed else 0


def listable(ctx: Context, cloud: str, kinds: list[str]) -> list[str]:
    """The ``kinds`` this cloud's provider can list at all (a cloud that cannot even be made: all)."""
    try:
        verbs = type(ctx.provider(cloud)).verbs()
    except CmError:
        return kinds
    return [kind for kind in kinds if inventory.FETCHERS[kind] in verbs]


def build(parser: ArgumentParser) -> None:
    parser.add_argument("what", nargs="?", default="all", choices=[*inventory.FETCHERS, "all"],
                        help="what to sync (default: all)")
    add_cloud_option(parser, allow_all=True)
    add_format_options(parser)
    parser.set_defaults(run=run_refresh)
