"""`cm flavor`: the VM sizes a cloud offers."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm.commands import add_list_options, add_show_options, list_records, show_record, subcommands, verb

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List and show flavors (VM sizes: vcpus, ram in MiB, disk in GiB)."
EXAMPLE = "cm flavor list --refresh --sort-column ram"
COLUMNS = ["name", "cloud", "vcpus", "ram", "disk", "id"]


def list_flavors(ctx: Context, args: Namespace) -> None:
    list_records(ctx, args, "flavor", COLUMNS)


def show_flavor(ctx: Context, args: Namespace) -> None:
    show_record(ctx, args, "flavor")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_list_options(verb(subs, "list", list_flavors, "list flavors from the mirror"), "flavor")
    add_show_options(verb(subs, "show", show_flavor, "show one flavor"), "flavor")
