"""`cm slurm burst enable|status|disable`: prepare a Slurm cluster to grow with cloud VMs, show its
cloud nodes, and return it to its static configuration.

Enable writes cm's block into slurm.conf (cloud nodes ``PARTITION[1-N]`` with State=CLOUD, their
partition, and the power-saving settings: Resume/Suspend/ResumeFail programs that call cm,
SuspendTime, timeouts, TreeWidth, NoAddrCache, SuspendExcNodes for the static nodes, ...), then
makes slurmctld read it: `scontrol reconfigure` when the node set is unchanged, else a restart
(Slurm 22.05 exits on a reconfigure that adds nodes).  A slurmctld that does not come back
gets the previous file again.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from cm.errors import NotFound, ProviderError, UsageError
from cm.elastic import slurmconf, state
from cm.elastic.power import controller
from cm.elastic.slurmctl import Controller

PROGRAMS = {"ResumeProgram": "resume", "SuspendProgram": "suspend", "ResumeFailProgram": "resume-fail"}
_PARTITION = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")


def cluster_of(ctx: Any, target: str) -> tuple[str, Path]:
    """(cluster name, slurm.conf) of CLUSTER: a slurm.conf path, or a cluster enabled before."""
    path = Path(target).expanduser()
    if path.is_file():
        return slurmconf.read(path).cluster, path.resolve()
    if "/" not in target and state.exists(Path(ctx.home), target):
        return target, Path(state.load(Path(ctx.home), target)["conf"])
    raise NotFound(f"no slurm.conf at {target} and no cluster '{target}' with bursting enabled")


def _program(home: Path, cluster: str, verb: str, conf: Path, noun: str = "burst") -> Path:
    """A wrapper slurmctld runs (with a bare environment and stdin closed): `cm slurm NOUN VERB`."""
    import cm

    where = state.directory(home, cluster)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = where / verb
    env = {"CM_HOME": str(home), "SLURM_CONF": str(conf), "PYTHONPATH": str(Path(cm.__file__).parent.parent),
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    words = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "cm.main",
             "slurm", noun, verb, cluster]
    path.write_text(f"#!/bin/sh\n# written by `cm slurm {noun} enable`: slurmctld runs it\n"
                    f"exec {shlex.join(words)} \"$@\" < /dev/null >> {shlex.quote(str(where / 'programs.log'))} 2>&1\n")
    path.chmod(0o700)
    return path


def _check(ctx: Any, args: Any, conf: slurmconf.SlurmConf, cluster: str, nodes: str) -> tuple[int, Path]:
    """Refuse bad input before anything changes; returns (vCPUs of the flavor, munge key)."""
    from cm.names import expand

    if not 1 <= args.max <= 1024:
        raise UsageError("--max must be between 1 and 1024 cloud nodes")
    if args.idle < 1 or args.resume_timeout < 10:
        raise UsageError("--idle must be at least 1 second and --resume-timeout at least 10")
    if not _PARTITION.match(args.partition):
        raise UsageError(f"bad partition name '{args.partition}': a letter, then letters, digits, '-' or '_'")
    own = [p for p in conf.partitions if p.split()[0] == args.partition]
    if own and not conf.has_block:
        raise UsageError(f"{conf.path} already has a partition '{args.partition}'; name another with --partition")
    static = set(expand(conf.nodes)) if conf.nodes else set()
    clash = sorted(static & set(expand([nodes]))) if not conf.has_block else []
    if clash:
        raise UsageError(f"{conf.path} already has nodes named {clash[0]}...; name the partition otherwise")
    key = Path(args.munge_key)
    if not os.access(key, os.R_OK):
        raise UsageError(f"cannot read the cluster's munge key {key}; give it with --munge-key PATH")
    provider = ctx.provider(args.cloud)
    provider.require("create_vm")
    flavors = {f.name: f for f in provider.list_flavors()}
    if args.flavor not in flavors:
        raise NotFound(f"unknown flavor '{args.flavor}' on cloud '{args.cloud}' (flavors: {', '.join(sorted(flavors))})")
    images = {i.name for i in provider.list_images()}
    if args.image not in images:
        raise NotFound(f"unknown image '{args.image}' on cloud '{args.cloud}' (images: {', '.join(sorted(images))})")
    return flavors[args.flavor].vcpus, key


def _settings(args: Any, conf: slurmconf.SlurmConf, programs: dict[str, Path]) -> dict[str, str]:
    wanted = {**{k: str(v) for k, v in programs.items()},
              "SuspendTime": str(args.idle), "SuspendTimeout": "60", "ResumeTimeout": str(args.resume_timeout),
              "ResumeRate": "0", "SuspendRate": "0", "TreeWidth": "65533",
              "CommunicationParameters": "NoAddrCache", "SlurmctldParameters": "idle_on_node_suspend",
              "PrivateData": "cloud"}
    if conf.nodes:
        wanted["SuspendExcNodes"] = ",".join(conf.nodes)  # static nodes are never powered down
    return slurmconf.block_settings(conf, wanted)


def enable(ctx: Any, args: Any) -> dict[str, Any]:
    """Write the cloud nodes and power settings, make slurmctld use them, and remember the cluster."""
    home = Path(ctx.home)
    cluster, path = cluster_of(ctx, args.cluster)
    conf = slurmconf.read(path)
    args.cloud = ctx.cloud_name(args)
    args.image = args.image or ctx.value("image", args.cloud)
    args.flavor = args.flavor or ctx.value("flavor", args.cloud)
    nodes = f"{args.partition}[1-{args.max}]" if args.max > 1 else f"{args.partition}1"
    vcpus, key = _check(ctx, args, conf, cluster, nodes)
    programs = {k: _program(home, cluster, verb, path) for k, verb in PROGRAMS.items()}
    settings = _settings(args, conf, programs)
    lines = [f"NodeName={nodes} CPUs={vcpus} State=CLOUD Feature=cloud,cm-burst",
             f"PartitionName={args.partition} Nodes={nodes} MaxTime=INFINITE State=UP"]
    text = slurmconf.with_block(conf, settings, lines, f"cloud {args.cloud}, up to {args.max} nodes, written by cm")
    if args.dryrun:
        ctx.say(text.rstrip("\n"))
        return {}
    old = "\n".join(conf.lines) + "\n"
    old_nodes = _block_nodes(conf)
    ctl = Controller(path, args.controller, pid_file=conf.get("SlurmctldPidFile"))
    slurmconf.write(path, text)
    try:
        _apply(ctl, args.restart_command or f"slurmctld -f {path}", old_nodes != nodes)
        ctl.scontrol("show", "partition", args.partition)
    except ProviderError as exc:
        slurmconf.write(path, old)
        raise ProviderError(f"{exc}; put the previous slurm.conf back") from None
    fresh = {"cluster": cluster, "conf": str(path), "controller": args.controller, "cloud": args.cloud,
             "image": args.image, "flavor": args.flavor, "max": args.max, "idle": args.idle,
             "partition": args.partition, "node_list": nodes, "munge_key": str(key),
             "resume_timeout": args.resume_timeout, "restart_command": args.restart_command or "",
             "nodes": state.load(home, cluster)["nodes"] if state.exists(home, cluster) else {}}
    with state.changing(home, cluster, fresh):
        pass
    state.log(home, cluster, f"enable: {nodes} on cloud {args.cloud} (image {args.image}, flavor {args.flavor}), "
                             f"idle {args.idle} s, partition {args.partition}")
    return {"cluster": cluster, "partition": args.partition, "nodes": nodes, "cloud": args.cloud,
            "image": args.image, "flavor": args.flavor, "idle": args.idle, "conf": str(path)}


def _block_nodes(conf: slurmconf.SlurmConf) -> str:
    """The node expression cm's block defined before ("" if none)."""
    inside = False
    for line in conf.lines:
        if line.strip().startswith(slurmconf.BEGIN):
            inside = True
        elif line.strip() == slurmconf.END:
            inside = False
        elif inside and line.startswith("NodeName="):
            return line.split()[0].split("=", 1)[1]
    return ""


def _apply(ctl: Controller, restart: str, nodes_changed: bool) -> None:
    """Reconfigure, or restart slurmctld when the node set changed (22.05 cannot add nodes live)."""
    if nodes_changed:
        ctl.restart(restart)
    else:
        ctl.scontrol("reconfigure")


def status(ctx: Any, cluster_arg: str) -> list[dict[str, Any]]:
    """Each cloud node: its Slurm state, VM, cloud, address and node-hours."""
    from cm.names import expand

    cluster, _ = cluster_of(ctx, cluster_arg)
    st = state.load(Path(ctx.home), cluster)
    live = controller(st).nodes(st["node_list"])
    rows = []
    for node in expand([st["node_list"]]):
        have = st["nodes"].get(node, {})
        slurm = live.get(node, {})
        rows.append({"node": node, "slurm_state": slurm.get("State", "unknown").lower(),
                     "vm": have.get("vm", "") if have.get("since") else "", "cloud": st["cloud"],
                     "address": have.get("address", ""), "node_hours": state.node_hours(have) if have else 0.0,
                     "reason": have.get("reason", "")})
    return rows


def disable(ctx: Any, cluster_arg: str, timeout: float, dryrun: bool = False) -> dict[str, Any]:
    """Drain the cloud nodes, wait for their jobs, delete their VMs, restore the static slurm.conf."""
    from cm.elastic.power import suspend

    home = Path(ctx.home)
    cluster, path = cluster_of(ctx, cluster_arg)
    st = state.load(home, cluster)
    if dryrun:
        ctx.say(slurmconf.without_block(slurmconf.read(path)).rstrip("\n"))
        return {}
    ctl = controller(st)
    ctl.scontrol("update", f"nodename={st['node_list']}", "state=drain", "reason=cm burst disable")
    state.log(home, cluster, f"disable: draining {st['node_list']}")
    deadline = time.monotonic() + timeout
    while ctl.check(["squeue", "-h", "-w", st["node_list"], "-o", "%i"]).strip():
        if time.monotonic() >= deadline:
            raise ProviderError(f"jobs still run on {st['node_list']} after {timeout:g} s; they stay drained: "
                                "wait for them or cancel them, then run disable again")
        time.sleep(1)
    up = [n for n, v in st["nodes"].items() if v.get("since")]
    failed = [f"{n}: {why}" for n, why in suspend(ctx, cluster, up) if why] if up else []
    if failed:
        raise ProviderError(f"could not delete the VMs of {'; '.join(failed)}; bursting stays enabled")
    slurmconf.write(path, slurmconf.without_block(slurmconf.read(path), "backfill"))  # its hooks serve these nodes
    slurmconf.write(path, slurmconf.without_block(slurmconf.read(path)))
    _apply(ctl, st.get("restart_command") or f"slurmctld -f {path}", True)
    (state.directory(home, cluster) / "state.json").unlink()
    state.log(home, cluster, "disable: static configuration restored")
    return {"cluster": cluster, "removed": st["node_list"], "conf": str(path), "vms_deleted": len(up)}
