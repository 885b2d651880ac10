"""`cm quota`: how much of each resource the project may use, and how much it uses."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from typing import Any

from cm.commands import add_cloud_option
from cm.errors import Unsupported
from cm.output import add_format_options

HELP = "Show the project's quotas (limit and use of instances, cores, ram, IPs ...), asked live."
EXAMPLE = "cm quota --cloud chameleon"
COLUMNS = ["cloud", "service", "resource", "limit", "used"]


def live_rows(ctx, args: Namespace, fetch: Callable[[Any], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows fetched from each cloud (``--cloud all``: the clouds that can answer), with a cloud column."""
    rows: list[dict[str, Any]] = []
    clouds = ctx.cloud_names(args)
    for cloud in clouds:
        try:
            rows += [{"cloud": cloud, **row} for row in fetch(ctx.provider(cloud))]
        except Unsupported:
            if len(clouds) == 1:
                raise
    return rows


def show_quota(ctx, args: Namespace) -> None:
    ctx.emit(COLUMNS, live_rows(ctx, args, lambda p: p.quotas()), args)


def build(parser: ArgumentParser) -> None:
    add_cloud_option(parser, allow_all=True)
    add_format_options(parser)
    parser.set_defaults(run=show_quota)
