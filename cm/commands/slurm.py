"""`cm slurm`: Slurm clusters; here the subcommands its extension modules add (burst).

Stand-in until the `clusters` branch's cm/commands/slurm.py (the launcher, `cm slurm -n N`)
is on main: that module has the same ``EXTENSIONS`` tuple; merging keeps theirs with
``cm.commands.slurm_burst`` listed in it.
"""

from __future__ import annotations

import importlib
from argparse import ArgumentParser

HELP = "Slurm clusters: grow them with cloud VMs (burst), backfill them with VMs that are checkpointed (backfill)."
EXAMPLE = "cm slurm burst enable /etc/slurm/slurm.conf --cloud kvm --max 4"

# Modules adding subcommands to `cm slurm` (each defines add_subcommands(subs)).
EXTENSIONS: tuple[str, ...] = ("cm.commands.slurm_burst", "cm.commands.slurm_backfill")


def build(parser: ArgumentParser) -> None:
    from cm.commands import subcommands

    subs = subcommands(parser)
    for module in EXTENSIONS:
        importlib.import_module(module).add_subcommands(subs)
