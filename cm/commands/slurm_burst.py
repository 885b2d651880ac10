"""`cm slurm burst ...`: grow a Slurm cluster with VMs from any cloud while jobs wait.

Added to the `slurm` noun through its EXTENSIONS (``add_subcommands(subs)``).  The
resume, suspend and resume-fail subcommands are what slurmctld runs (through the small
programs `burst enable` writes, or through the agent that handles the requests those programs
spool on a controller host without cm); users run enable, status, agent and disable.
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from cm.commands import add_cloud_option, add_dryrun_option, completes, subcommands, verb
from cm.output import add_format_options

STATUS_COLUMNS = ["node", "slurm_state", "vm", "computeset", "cloud", "address", "node_hours", "reason", "agent"]


def show_done(ctx: Any, args: Namespace, done: dict[str, Any]) -> None:
    """What a change did, as one record (nothing after a --dryrun, which printed the file)."""
    if done:
        ctx.emit_one(done, args)


def enable(ctx: Any, args: Namespace) -> None:
    from cm.elastic.burst import enable as run

    show_done(ctx, args, run(ctx, args))


def status(ctx: Any, args: Namespace) -> None:
    from cm.elastic.burst import status as run

    ctx.emit(STATUS_COLUMNS, run(ctx, args.cluster), args)


def agent(ctx: Any, args: Namespace) -> None:
    from cm.elastic.burst import start_agent

    ctx.emit_one(start_agent(ctx, args.cluster), args)


def disable(ctx: Any, args: Namespace) -> None:
    from cm.elastic.burst import disable as run

    show_done(ctx, args, run(ctx, args.cluster, args.timeout, args.dryrun))


def power(action: str):
    """The handler of a program slurmctld runs: resume, suspend or resume-fail HOSTLIST."""
    def handler(ctx: Any, args: Namespace) -> int:
        from cm.elastic import power as run
        from cm.names import expand

        nodes = expand([args.nodes])
        if action == "resume":
            outcomes = run.resume(ctx, args.cluster, nodes)
        else:
            outcomes = run.suspend(ctx, args.cluster, nodes, failed=action == "resume-fail")
        for outcome in outcomes:
            (ctx.say if outcome.ok else ctx.warn)(f"{action} {outcome.name}: {outcome.message or 'done'}")
        return 0 if all(o.ok for o in outcomes) else 1

    return handler


def add_subcommands(subs: Any) -> None:
    """`burst` and its verbs under the `slurm` noun."""
    burst = verb(subs, "burst", None, "grow the cluster with cloud VMs while jobs wait",
                 example="cm slurm burst enable /etc/slurm/slurm.conf --cloud chameleon --max 10")
    verbs = subcommands(burst)
    on = verb(verbs, "enable", enable, "add up to --max cloud nodes, powered up by cm when jobs wait",
              example="cm slurm burst enable /etc/slurm/slurm.conf --cloud kvm --max 4 --idle 300")
    on.add_argument("cluster", metavar="CLUSTER",
                    help="the cluster's slurm.conf (on --controller when given), or the name of a cluster "
                         "cm launched or enabled before")
    add_cloud_option(on)
    on.add_argument("--max", type=int, required=True, help="at most this many cloud nodes")
    completes(on.add_argument("--image", help="image the VMs boot (default: the cloud's 'image' default); "
                                              "a comet cloud's nodes boot their own disk"), "image")
    completes(on.add_argument("--flavor", help="flavor of the VMs (default: the cloud's 'flavor' default)"), "flavor")
    on.add_argument("--comet-cluster", default="", metavar="VC",
                    help="on a comet cloud: the virtual cluster whose compute nodes back the cloud nodes "
                         "(default: its only one)")
    on.add_argument("--allocation", default="", help="on a comet cloud: the allocation the computesets charge "
                                                     "(default: the virtual cluster's only one)")
    on.add_argument("--walltime", default="", help="on a comet cloud: walltime of each node's computeset "
                                                   "(90m, 2h, 3d, 1w; default 2d)")
    on.add_argument("--idle", type=int, default=300, help="seconds a cloud node stays idle before its VM goes")
    on.add_argument("--partition", default="cloud", help="partition (and node name prefix) of the cloud nodes")
    on.add_argument("--resume-timeout", type=int, default=300, help="seconds a VM has to register its slurmd")
    on.add_argument("--suspend-timeout", type=int, default=60,
                    help="seconds Slurm gives a node to power down before it counts as off (cm stops its machine "
                         "before SuspendProgram returns, so a short one only has Slurm wait less)")
    completes(on.add_argument("--network", action="append", default=[],
                              help="network the VMs join (repeatable; Slurm reaches a node at its address on the "
                                   "first; default: the cloud's)"), "network")
    completes(on.add_argument("--secgroup", action="append", default=[],
                              help="security group of the VMs (repeatable): it must let slurmctld and srun reach "
                                   "slurmd (default: the cloud's)"), "secgroup")
    on.add_argument("--munge-key", default="", help="the cluster's munge key on the controller host (default: "
                                                     "the key of a cluster cm launched, else /etc/munge/munge.key)")
    on.add_argument("--controller", default="local",
                    help="where slurmctld runs: local, an ssh destination, or a slurm cloud's login host")
    on.add_argument("--restart-command", default="",
                    help="how to restart slurmctld when the node set changes (default: slurmctld -f SLURM_CONF)")
    add_dryrun_option(on)
    add_format_options(on)

    st = verb(verbs, "status", status, "each cloud node: Slurm state, VM, cloud, node-hours; the agent")
    st.add_argument("cluster", metavar="CLUSTER")
    add_format_options(st)

    ag = verb(verbs, "agent", agent, "start the agent that handles a remote controller's requests, unless it runs",
              example="cm slurm burst agent mycluster")
    ag.add_argument("cluster", metavar="CLUSTER")
    add_format_options(ag)

    off = verb(verbs, "disable", disable, "drain the cloud nodes, delete their VMs, restore the static config")
    off.add_argument("cluster", metavar="CLUSTER")
    off.add_argument("--timeout", type=float, default=600, help="seconds to wait for jobs on cloud nodes")
    add_dryrun_option(off)
    add_format_options(off)

    for action, text in (("resume", "boot the VMs of these nodes (slurmctld's ResumeProgram)"),
                         ("suspend", "delete the VMs of these idle nodes (SuspendProgram)"),
                         ("resume-fail", "clean up nodes that never registered (ResumeFailProgram)")):
        p = verb(verbs, action, power(action), text)
        p.add_argument("cluster", metavar="CLUSTER")
        p.add_argument("nodes", metavar="HOSTLIST")
