"""`cm slurm backfill ...`: low-priority jobs in virtual nodes that are moved to a free host or
checkpointed, not killed, when a job needs their host.  Added to the `slurm` noun through its EXTENSIONS; prolog and
epilog are what slurmctld runs (PrologSlurmctld/EpilogSlurmctld)."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from cm.commands import add_dryrun_option, subcommands, verb
from cm.output import add_format_options

POLICIES = ("migrate", "checkpoint")   # what cm.elastic.backfill.prolog does to a virtual node on a needed host


def enable(ctx: Any, args: Namespace) -> None:
    from cm.commands.slurm_burst import show_done
    from cm.elastic.backfill import enable as run

    show_done(ctx, args, run(ctx, args))


def disable(ctx: Any, args: Namespace) -> None:
    from cm.commands.slurm_burst import show_done
    from cm.elastic.backfill import disable as run

    show_done(ctx, args, run(ctx, args.cluster, args.dryrun))


def status(ctx: Any, args: Namespace) -> None:
    from cm.elastic.backfill import status as run

    ctx.emit(["time", "what"], run(ctx, args.cluster), args)


def hook(which: str):
    def handler(ctx: Any, args: Namespace) -> int:
        from cm.elastic import backfill

        for line in getattr(backfill, which)(ctx, args.cluster):
            ctx.say(line)
        return 0

    return handler


def add_subcommands(subs: Any) -> None:
    """`backfill` and its verbs under the `slurm` noun."""
    backfill = verb(subs, "backfill", None, "run low-priority jobs in VMs that are moved or checkpointed, not killed",
                    example="cm slurm backfill enable /etc/slurm/slurm.conf --virtual-partition low")
    verbs = subcommands(backfill)
    on = verb(verbs, "enable", enable, "move or checkpoint the virtual nodes on a host while another job needs it",
              example="cm slurm backfill enable /etc/slurm/slurm.conf --virtual-partition cloud --host-map n1=h1")
    on.add_argument("cluster", metavar="CLUSTER", help="the cluster's slurm.conf (or its name)")
    on.add_argument("--virtual-partition", required=True, metavar="P",
                    help="the partition of virtual nodes (a burst partition of this cluster)")
    on.add_argument("--host-map", default="", help="NODE=HOST,...: the cloud host of each physical node "
                                                  "(default: the node's own name)")
    on.add_argument("--max-pause", type=int, default=3600,
                    help="seconds a virtual node may stay saved before Slurm sets it DOWN (SlurmdTimeout)")
    on.add_argument("--policy", choices=POLICIES, default="migrate",
                    help="migrate: move them live to a free host of the cloud when there is one, else checkpoint; "
                         "checkpoint: always suspend their jobs and save them")
    add_dryrun_option(on)
    add_format_options(on)
    off = verb(verbs, "disable", disable, "remove the prolog/epilog hooks: slurm.conf as before enable")
    off.add_argument("cluster", metavar="CLUSTER")
    add_dryrun_option(off)
    add_format_options(off)
    st = verb(verbs, "status", status, "the policy, the VMs saved now and every action taken")
    st.add_argument("cluster", metavar="CLUSTER")
    add_format_options(st)
    for which, text in (("prolog", "checkpoint virtual nodes on a starting job's hosts (PrologSlurmctld)"),
                        ("epilog", "restore what a finished job's prolog saved (EpilogSlurmctld)")):
        p = verb(verbs, which, hook(which), text)
        p.add_argument("cluster", metavar="CLUSTER")
