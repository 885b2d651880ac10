"""`cm network`: the networks a cloud offers its VMs."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm.commands import add_list_options, add_show_options, list_records, show_record, subcommands, verb

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List and show networks (private ones for VMs, external ones for public IPs)."
EXAMPLE = "cm network list --refresh"
COLUMNS = ["name", "cloud", "status", "external", "shared", "subnets", "id"]


def list_networks(ctx: Context, args: Namespace) -> None:
    list_records(ctx, args, "network", COLUMNS)


def show_network(ctx: Context, args: Namespace) -> None:
    show_record(ctx, args, "network")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_list_options(verb(subs, "list", list_networks, "list networks from the mirror",
                          example="cm network list --refresh"), "network")
    add_show_options(verb(subs, "show", show_network, "show one network", example="cm network show private"), "network")
