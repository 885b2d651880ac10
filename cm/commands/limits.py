"""`cm limits`: the absolute limits of the project (Nova's view), asked live."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm.commands import add_cloud_option
from cm.commands.quota import emit_live
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Show the project's absolute limits and what is used of them, asked live."
EXAMPLE = "cm limits -f json"
COLUMNS = ["cloud", "name", "value"]


def show_limits(ctx: Context, args: Namespace) -> int:
    return emit_live(ctx, args, COLUMNS, lambda p: p.limits())


def build(parser: ArgumentParser) -> None:
    add_cloud_option(parser, allow_all=True)
    add_format_options(parser)
    parser.set_defaults(run=show_limits)
