"""`cm slurm backfill`: low-priority jobs run in virtual nodes (VMs) on the hosts of the physical
nodes; a job that needs such a host makes cm move the virtual nodes there to a free host, or
checkpoint them, instead of killing their jobs.

Slurm's own hooks drive it: ``PrologSlurmctld`` (before any job starts) and
``EpilogSlurmctld`` (after it ends) call `cm slurm backfill prolog|epilog CLUSTER` (on a controller
host without cm they are spool hooks the burst agent answers: cm.elastic.spool_hooks).  For a job
outside the virtual partition, the prolog finds the virtual nodes whose VMs run on the hosts of
the job's nodes (the kvm cloud's ``hosts:``; a physical node's host is its own name unless
``--host-map n1=h1`` says otherwise).  With ``--policy migrate`` (the default) each such VM
moves live to a free host of the cloud (one no allocated physical node and no starting job is
on), its job running on; when no host is free, or with ``--policy checkpoint``, its jobs are
suspended (`scontrol suspend`: stopped, not killed) and the VM saved (`cm vm save`).  The
epilog restores the saved VMs and resumes their jobs.  Every decision is in the cluster's log;
`backfill status` shows the policy, the VMs saved now and the log.  `backfill disable` takes the
hooks out of slurm.conf again.  The virtual nodes themselves are cloud nodes of `cm slurm burst
enable --partition P` (booted when low-priority jobs wait, deleted when idle).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cm.errors import CmError, Conflict, UsageError
from cm.elastic import slurmconf, state
from cm.elastic.burst import _program, program_env
from cm.elastic.target import cluster_of, controller, read_conf

BUSY = ("ALLOCATED", "MIXED", "COMPLETING")   # a physical node in these states needs its host


def enable(ctx: Any, args: Any) -> dict[str, Any]:
    """Write the controller's prolog/epilog hooks and remember the policy."""
    home = Path(ctx.home)
    cluster = cluster_of(ctx, args.cluster).cluster
    st = state.load(home, cluster)
    if st["partition"] != args.virtual_partition:
        raise UsageError(f"partition '{args.virtual_partition}' is not the cloud partition of cluster '{cluster}' "
                         f"('{st['partition']}'); burst it first: cm slurm burst enable ... --partition "
                         f"{args.virtual_partition}")
    host_map = _host_map(args.host_map)
    ctl = controller(st)
    conf = read_conf(ctl)
    pause = max(args.max_pause, int(conf.get("SlurmdTimeout", "300") or 300))
    settings = {k: str(v) for k, v in _hooks(ctx, cluster, st, ctl, conf, args).items()}
    # a saved virtual node cannot answer pings: Slurm must not set it DOWN (and kill its job)
    settings["SlurmdTimeout"] = str(pause)
    text = slurmconf.with_block(conf, settings, [], f"virtual partition {args.virtual_partition}, written by cm",
                                block="backfill")
    if args.dryrun:
        ctx.say(text.rstrip("\n"))
        return {}
    _rewrite(ctl, st, conf, text)
    with state.changing(home, cluster) as now:
        now["backfill"] = {"partition": args.virtual_partition, "host_map": host_map, "policy": args.policy,
                           "saved": now.get("backfill", {}).get("saved", {})}
    state.log(home, cluster, f"backfill enable: virtual partition {args.virtual_partition}, policy {args.policy}: "
                             f"{_describe(args.policy)}")
    return {"cluster": cluster, "virtual_partition": args.virtual_partition, "policy": args.policy,
            "prolog": settings["PrologSlurmctld"], "epilog": settings["EpilogSlurmctld"], "slurmd_timeout": pause}


def _hooks(ctx: Any, cluster: str, st: dict[str, Any], ctl: Any, conf: slurmconf.SlurmConf,
           args: Any) -> dict[str, Path]:
    """PrologSlurmctld and EpilogSlurmctld: programs that call cm there, or, where the burst programs only
    spool (no cm on the controller host), spool hooks the agent answers (cm.elastic.spool_hooks)."""
    from cm.elastic import agent, spool_hooks

    if st.get("agent"):
        if args.dryrun:
            return {k: agent.spool(cluster) / v for k, v in spool_hooks.HOOKS.items()}
        return spool_hooks.install(ctl, agent.spool(cluster), conf.get("SlurmUser", "root"),
                                   args.virtual_partition)
    env = program_env(ctx, st.get("cloud", ""))
    return {k: _program(Path(ctx.home), cluster, v, ctl, noun="backfill", cloud_env=env)
            for k, v in spool_hooks.HOOKS.items()}


def _describe(policy: str) -> str:
    """What a job on a host does to the virtual nodes there, in words."""
    if policy == "migrate":
        return ("a job on a host moves the virtual nodes there live to a free host of the cloud, else checkpoints "
                "them (jobs suspended, VMs saved) until it ends")
    return "a job on a host checkpoints the virtual nodes there (jobs suspended, VMs saved) until it ends"


def _rewrite(ctl: Any, st: dict[str, Any], conf: slurmconf.SlurmConf, text: str) -> None:
    """Put ``text`` in slurm.conf and restart slurmctld; the old file comes back if it does not start."""
    old = "\n".join(conf.lines) + "\n"
    ctl.write_text(ctl.conf, text)
    try:
        # slurmctld 22.05 keeps running its old PrologSlurmctld after `scontrol reconfigure` (measured): restart
        ctl.restart(st.get("restart_command") or f"slurmctld -f {ctl.conf}")
    except CmError:
        ctl.write_text(ctl.conf, old)
        raise


def disable(ctx: Any, cluster_arg: str, dryrun: bool = False) -> dict[str, Any]:
    """Take the prolog/epilog hooks out of slurm.conf (the settings they replaced come back as they were)."""
    home = Path(ctx.home)
    cluster = cluster_of(ctx, cluster_arg).cluster
    st = state.load(home, cluster)
    ctl = controller(st)
    conf = read_conf(ctl)
    if not st.get("backfill") and not conf.has("backfill"):
        raise UsageError(f"backfill is not enabled for cluster '{cluster}'")
    saved = (st.get("backfill") or {}).get("saved") or {}
    if saved:
        raise Conflict(f"VMs are saved for job {', '.join(sorted(saved))}: disabling now would leave them "
                       "stopped; run disable again when that job has ended")
    text = slurmconf.without_block(conf, "backfill")
    if dryrun:
        ctx.say(text.rstrip("\n"))
        return {}
    _rewrite(ctl, st, conf, text)
    with state.changing(home, cluster) as now:
        now.pop("backfill", None)
    state.log(home, cluster, "backfill disable: prolog/epilog hooks removed, slurm.conf as before enable")
    return {"cluster": cluster, "conf": str(ctl.conf), "backfill": "disabled"}


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
    """Before a job starts: move or checkpoint the virtual nodes on its hosts.  Returns what was done."""
    from cm.names import expand

    env = environ if environ is not None else dict(os.environ)
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
    free = _free_hosts(ctx, st, ctl, hosts) if policy.get("policy") == "migrate" else None
    done = []
    for node, entry in sorted(st["nodes"].items()):
        if not entry.get("since"):
            continue
        host = _vm_host(provider, entry["vm"])
        if host not in hosts:
            continue
        moved = _migrate(provider, entry["vm"], node, host, free, done)
        if not moved:
            _checkpoint(home, cluster, ctl, provider, job, node, entry["vm"], done)
    for line in done or [f"no virtual node runs on host {', '.join(sorted(hosts))}"]:
        state.log(home, cluster, f"backfill prolog job {job} ({partition}) on {nodelist}: {line}")
    return done


def _free_hosts(ctx: Any, st: dict[str, Any], ctl: Any, needed: set[str]) -> list[str]:
    """Hosts of the cloud no starting job needs and no allocated physical node is on (by name)."""
    from cm.names import expand

    listed = list(ctx.config.cloud(st["cloud"]).get("hosts") or {})
    virtual = set(expand([st["node_list"]]))
    host_map = st["backfill"]["host_map"]
    busy = set(needed)
    for line in ctl.check(["sinfo", "-h", "-N", "-o", "%N %T"]).splitlines():
        name, _, how = line.partition(" ")
        if name not in virtual and how.strip().rstrip("*~#!%$@^-+").upper() in BUSY:
            busy.add(host_map.get(name, name))
    return [h for h in listed if h not in busy]


def _migrate(provider: Any, vm: str, node: str, host: str, free: list[str] | None, done: list[str]) -> bool:
    """Move ``vm`` live to the first free host that takes it; False when none does (then: checkpoint)."""
    for there in free or []:
        try:
            provider.migrate_vm(vm, there)
        except CmError as exc:
            done.append(f"could not move VM {vm} of {node} to free host {there}: {exc}")
            continue
        done.append(f"migrated VM {vm} of {node} from host {host} to free host {there}; its jobs run on")
        free.remove(there)  # the next VM tries the other free hosts first: spread, not piled on one
        free.append(there)
        return True
    if free is not None:
        done.append(f"no free host for VM {vm} of {node}: checkpointing it")
    return False


def _checkpoint(home: Path, cluster: str, ctl: Any, provider: Any, job: str, node: str, vm: str,
                done: list[str]) -> None:
    """Suspend the node's running jobs and save its VM until job ``job`` ends."""
    jobs = ctl.check(["squeue", "-h", "-w", node, "-t", "R", "-o", "%i"]).split()
    for low in jobs:
        ctl.scontrol("suspend", low)
        done.append(f"suspended job {low} on {node}")
    if jobs:
        ctl.delivered()  # the suspend has reached the node before its VM stops: it cannot overtake the resume
    provider.save_vm(vm)
    done.append(f"saved VM {vm} of {node}")
    with state.changing(home, cluster) as now:
        now["backfill"]["saved"].setdefault(job, []).append({"node": node, "vm": vm, "jobs": jobs})


def epilog(ctx: Any, cluster: str, environ: dict[str, str] | None = None) -> list[str]:
    """After a job ends: restore the virtual nodes its prolog saved and resume their jobs."""
    from cm import inventory

    env = environ if environ is not None else dict(os.environ)
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
    cluster = cluster_of(ctx, cluster_arg).cluster
    home = Path(ctx.home)
    st = state.load(home, cluster)
    policy = st.get("backfill")
    if not policy:
        raise UsageError(f"backfill is not enabled for cluster '{cluster}' "
                         "(cm slurm backfill enable CLUSTER --virtual-partition P)")
    how = policy.get("policy", "checkpoint")
    rows = [{"time": "", "what": f"policy {how}: for a job outside partition {policy['partition']}, "
                                 f"{_describe(how).removeprefix('a job on a host ')}"}]
    for job, items in policy["saved"].items():
        for item in items:
            rows.append({"time": "now", "what": f"VM {item['vm']} of {item['node']} saved for job {job} "
                                                f"(suspended jobs {', '.join(item['jobs']) or 'none'})"})
    for line in state.actions(home, cluster):
        stamp, _, text = line.partition(" ")
        if text.startswith("backfill"):
            rows.append({"time": stamp, "what": text})
    return rows

