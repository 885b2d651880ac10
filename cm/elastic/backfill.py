"""`cm slurm backfill`: low-priority jobs run in virtual nodes (VMs) on the hosts of the physical
nodes; a job that needs such a host makes cm checkpoint the virtual nodes there instead of
killing their jobs, and its end brings them back.

Slurm's own hooks drive it: ``PrologSlurmctld`` (before any job starts) and
``EpilogSlurmctld`` (after it ends) call `cm slurm backfill prolog|epilog CLUSTER`.  For a job
outside the virtual partition, the prolog finds the virtual nodes whose VMs run on the hosts of
the job's nodes (the kvm cloud's ``hosts:``; a physical node's host is its own name unless
``--host-map n1=h1`` says otherwise), suspends their jobs (`scontrol suspend`: stopped, not
killed) and saves the VMs (`cm vm save`: memory to disk).  The epilog restores those VMs and
resumes their jobs.  Every action is in the cluster's log; `backfill status` shows the policy,
the VMs saved now and the log.  The virtual nodes themselves are cloud nodes of `cm slurm burst
enable --partition P` (booted when low-priority jobs wait, deleted when idle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cm.errors import CmError, UsageError
from cm.elastic import slurmconf, state
from cm.elastic.burst import cluster_of, _program
from cm.elastic.power import controller


def enable(ctx: Any, args: Any) -> dict[str, Any]:
    """Write the controller's prolog/epilog hooks and remember the policy."""
    home = Path(ctx.home)
    cluster, path = cluster_of(ctx, args.cluster)
    st = state.load(home, cluster)
    if st["partition"] != args.virtual_partition:
        raise UsageError(f"partition '{args.virtual_partition}' is not the cloud partition of cluster '{cluster}' "
                         f"('{st['partition']}'); burst it first: cm slurm burst enable ... --partition "
                         f"{args.virtual_partition}")
    host_map = _host_map(args.host_map)
    conf = slurmconf.read(path)
    pause = max(args.max_pause, int(conf.get("SlurmdTimeout", "300") or 300))
    settings = {"PrologSlurmctld": str(_program(home, cluster, "prolog", path, noun="backfill")),
                "EpilogSlurmctld": str(_program(home, cluster, "epilog", path, noun="backfill")),
                # a saved virtual node cannot answer pings: Slurm must not set it DOWN (and kill its job)
                "SlurmdTimeout": str(pause)}
    text = slurmconf.with_block(conf, settings, [], f"virtual partition {args.virtual_partition}, written by cm",
                                block="backfill")
    if args.dryrun:
        ctx.say(text.rstrip("\n"))
        return {}
    old = "\n".join(conf.lines) + "\n"
    slurmconf.write(path, text)
    try:
        # slurmctld 22.05 keeps running its old PrologSlurmctld after `scontrol reconfigure` (measured): restart
        controller(st).restart(st.get("restart_command") or f"slurmctld -f {path}")
    except CmError:
        slurmconf.write(path, old)
        raise
    with state.changing(home, cluster) as now:
        now["backfill"] = {"partition": args.virtual_partition, "host_map": host_map,
                           "saved": now.get("backfill", {}).get("saved", {})}
    state.log(home, cluster, f"backfill enable: virtual partition {args.virtual_partition}; a job on a host "
                             "checkpoints the virtual nodes there (jobs suspended, VMs saved) until it ends")
    return {"cluster": cluster, "virtual_partition": args.virtual_partition, "prolog": settings["PrologSlurmctld"],
            "epilog": settings["EpilogSlurmctld"], "slurmd_timeout": pause}


def _host_map(text: str) -> dict[str, str]:
    found = {}
    for item in filter(None, (text or "").split(",")):
        node, _, host = item.partition("=")
        if not node or not host:
            raise UsageError(f"bad --host-map entry '{item}': use NODE=HOST[,NODE=HOST...]")
        found[node] = host
    return found


def _vm_host(provider: Any, vm: str) -> str:
    found = provider.get_vm(vm)
    return str(found.extra.get("host") or "")


def prolog(ctx: Any, cluster: str, environ: dict[str, str] | None = None) -> list[str]:
    """Before a job starts: checkpoint the virtual nodes on its hosts.  Returns what was done."""
    from cm.names import expand

    env = environ or dict(os.environ)
    home = Path(ctx.home)
    st = state.load(home, cluster)
    policy = st.get("backfill")
    job, partition = env.get("SLURM_JOB_ID", ""), env.get("SLURM_JOB_PARTITION", "")
    nodelist = env.get("SLURM_JOB_NODELIST", "")
    if not policy or partition == policy["partition"] or not nodelist:
        return []
    hosts = {policy["host_map"].get(n, n) for n in expand([nodelist])}
    ctl = controller(st)
    provider = ctx.provider(st["cloud"])
    done = []
    for node, entry in sorted(st["nodes"].items()):
        if not entry.get("since") or _vm_host(provider, entry["vm"]) not in hosts:
            continue
        jobs = ctl.check(["squeue", "-h", "-w", node, "-t", "R", "-o", "%i"]).split()
        for low in jobs:
            ctl.scontrol("suspend", low)
            done.append(f"suspended job {low} on {node}")
        if jobs:
            ctl.delivered()  # the suspend has reached the node before its VM stops: it cannot overtake the resume
        provider.save_vm(entry["vm"])
        done.append(f"saved VM {entry['vm']} of {node}")
        with state.changing(home, cluster) as now:
            now["backfill"]["saved"].setdefault(job, []).append({"node": node, "vm": entry["vm"], "jobs": jobs})
    for line in done or [f"no virtual node runs on host {', '.join(sorted(hosts))}"]:
        state.log(home, cluster, f"backfill prolog job {job} ({partition}) on {nodelist}: {line}")
    return done


def epilog(ctx: Any, cluster: str, environ: dict[str, str] | None = None) -> list[str]:
    """After a job ends: restore the virtual nodes its prolog saved and resume their jobs."""
    from cm import inventory

    env = environ or dict(os.environ)
    home = Path(ctx.home)
    st = state.load(home, cluster)
    job = env.get("SLURM_JOB_ID", "")
    saved = (st.get("backfill") or {}).get("saved", {}).get(job, [])
    if not saved:
        return []
    ctl = controller(st)
    provider = ctx.provider(st["cloud"])
    done = []
    for item in saved:
        provider.restore_vm(item["vm"])
        inventory.wait_for(provider, item["vm"], {"running"}, float(st["resume_timeout"]), interval=0.1)
        done.append(f"restored VM {item['vm']} of {item['node']}")
        for low in item["jobs"]:
            ctl.scontrol("resume", low)
            done.append(f"resumed job {low} on {item['node']}")
    with state.changing(home, cluster) as now:
        now["backfill"]["saved"].pop(job, None)
    for line in done:
        state.log(home, cluster, f"backfill epilog job {job}: {line}")
    return done


def status(ctx: Any, cluster_arg: str) -> list[dict[str, Any]]:
    """The policy, the VMs saved now (and for which job), and every backfill action logged."""
    cluster, _ = cluster_of(ctx, cluster_arg)
    home = Path(ctx.home)
    st = state.load(home, cluster)
    policy = st.get("backfill")
    if not policy:
        raise UsageError(f"backfill is not enabled for cluster '{cluster}' "
                         "(cm slurm backfill enable CLUSTER --virtual-partition P)")
    rows = [{"time": "", "what": f"policy: jobs outside partition {policy['partition']} checkpoint the virtual "
                                 "nodes on their hosts until they end"}]
    for job, items in policy["saved"].items():
        for item in items:
            rows.append({"time": "now", "what": f"VM {item['vm']} of {item['node']} saved for job {job} "
                                                f"(suspended jobs {', '.join(item['jobs']) or 'none'})"})
    for line in state.actions(home, cluster):
        stamp, _, text = line.partition(" ")
        if text.startswith("backfill"):
            rows.append({"time": stamp, "what": text})
    return rows

