"""`cm plugins`: what is loaded, from which package and version."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List the loaded plugins: their package, version, cloud kinds and commands."
EXAMPLE = "cm plugins -f json"


def list_plugins(ctx: Context, args: Namespace) -> int:
    from cm.plugins import registry

    reg = registry()
    rows = [{"name": p.name, "package": p.package, "version": p.version, "kinds": p.kinds,
             "commands": p.nouns, "status": f"failed: {p.error}" if p.error else "loaded"} for p in reg.plugins]
    ctx.emit(["name", "package", "version", "kinds", "commands", "status"], rows, args)
    return 1 if reg.failed else 0


def build(parser: ArgumentParser) -> None:
    add_format_options(parser)
    parser.set_defaults(run=list_plugins)
