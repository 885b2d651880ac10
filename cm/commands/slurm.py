"""`cm slurm -n N`: a Slurm cluster from the `slurm` launcher (head + N workers)."""

from __future__ import annotations

from argparse import ArgumentParser

HELP = "Launch a Slurm cluster: a head node (slurmctld, munge, NFS /home) and N workers."
EXAMPLE = "cm slurm -n 4 --flavor worker=m1.medium"

# Modules adding subcommands to `cm slurm` (each defines add_subcommands(subs)), e.g. burst, backfill.
EXTENSIONS: tuple[str, ...] = ("cm.commands.slurm_burst", "cm.commands.slurm_backfill")


def build(parser: ArgumentParser) -> None:
    from cm.clusters.noun import build as build_noun

    build_noun(parser, "slurm", EXTENSIONS)
