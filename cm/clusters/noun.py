"""A noun for a recipe that names its own command (`cm slurm -n 4`, `cm hadoop -n 10`).

The launch options sit on the noun itself; modules listed in a noun's
``extensions`` add optional subcommands beside it (for example `cm slurm burst ...`)
through their own ``add_subcommands(subs)``, without changing the noun's module.
"""

from __future__ import annotations

import importlib
from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from typing import Any


def launcher(command: str) -> Callable[[Any, Namespace], int]:
    def handler(ctx: Any, args: Namespace) -> int:
        from cm.commands.launcher import launch

        return launch(ctx, args, command, by_command=True)

    return handler


def build(parser: ArgumentParser, command: str, extensions: tuple[str, ...] = ()) -> None:
    """Launch options on ``parser`` (running the recipe of ``command``), plus the extensions' subcommands."""
    from cm.commands.launcher import add_launch_options

    add_launch_options(parser)
    parser.set_defaults(run=launcher(command))
    if extensions:
        subs = parser.add_subparsers(title="subcommands", dest="verb", metavar="SUBCOMMAND", required=False)
        for module in extensions:
            importlib.import_module(module).add_subcommands(subs)
