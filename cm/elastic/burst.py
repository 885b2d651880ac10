"""`cm slurm burst enable|status|disable`: prepare a Slurm cluster to grow with cloud VMs, show its
cloud nodes, and return it to its static configuration.

On a controller host that cannot run this cm (its home), the programs only spool their requests
and an agent on this machine handles them (cm.elastic.agent).

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

from cm.errors import ProviderError, UsageError
from cm.elastic import agent, slurmconf, state
from cm.elastic.nodesource import Prepared, kind_for
from cm.elastic.slurmctl import Controller
from cm.elastic.target import Target, cluster_of, controller, munge_key, read_conf

PROGRAMS = {"ResumeProgram": "resume", "SuspendProgram": "suspend", "ResumeFailProgram": "resume-fail"}
_PARTITION = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,30}$")


def program_env(ctx: Any, cloud: str) -> dict[str, str]:
    """What cm needs to find ``cloud`` again when slurmctld runs it with a bare environment: HOME, and the
    file the cloud's settings came from when not cm.yaml (a clouds.yaml found now through
    $OS_CLIENT_CONFIG_FILE, the working directory or HOME, none of which slurmctld passes on)."""
    env = {"HOME": str(Path.home())}
    source = (ctx.config.clouds().get(cloud) or {}).get("file")
    if source:
        env["OS_CLIENT_CONFIG_FILE"] = str(Path(source).resolve())
    return env


def _program(home: Path, cluster: str, verb: str, ctl: Controller, noun: str = "burst",
             cloud_env: dict[str, str] | None = None) -> Path:
    """A wrapper slurmctld runs (with a bare environment and stdin closed): `cm slurm NOUN VERB`.

    It is written where slurmctld runs: on a remote controller host it calls cm there, with
    this cm's home (a home shared with that host, as login and controller hosts often share)."""
    import cm

    where = state.directory(home, cluster)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = where / verb
    env = {**(cloud_env or {}), "CM_HOME": str(home), "SLURM_CONF": str(ctl.conf),
           "PYTHONPATH": str(Path(cm.__file__).parent.parent),
           "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    words = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "cm.main",
             "slurm", noun, verb, cluster]
    ctl.write_text(path, f"#!/bin/sh\n# written by `cm slurm {noun} enable`: slurmctld runs it\n"
                         f"exec {shlex.join(words)} \"$@\" < /dev/null >> {shlex.quote(str(where / 'programs.log'))} "
                         "2>&1\n", mode=0o700)
    return path


def _check(ctx: Any, args: Any, conf: slurmconf.SlurmConf, target: Target, nodes: str) -> tuple[Prepared, bytes]:
    """Refuse bad input before anything changes; returns (what the node source prepared, the munge key)."""
    from cm.names import expand

    if not 1 <= args.max <= 1024:
        raise UsageError("--max must be between 1 and 1024 cloud nodes")
    if args.idle < 1 or args.resume_timeout < 10 or not 5 <= args.suspend_timeout <= 3600:
        raise UsageError("--idle must be at least 1 second, --resume-timeout at least 10 and --suspend-timeout "
                         "between 5 and 3600")
    if not _PARTITION.match(args.partition):
        raise UsageError(f"bad partition name '{args.partition}': a letter, then letters, digits, '-' or '_'")
    own = [p for p in conf.partitions if p.split()[0] == args.partition]
    if own and not conf.has_block:
        raise UsageError(f"{conf.path} already has a partition '{args.partition}'; name another with --partition")
    static = set(expand(conf.nodes)) if conf.nodes else set()
    clash = sorted(static & set(expand([nodes]))) if not conf.has_block else []
    if clash:
        raise UsageError(f"{conf.path} already has nodes named {clash[0]}...; name the partition otherwise")
    key = munge_key(target, args.munge_key)
    return kind_for(ctx, args.cloud).prepare(ctx, args), key


def _settings(args: Any, conf: slurmconf.SlurmConf, programs: dict[str, Path],
              extra: dict[str, str]) -> dict[str, str]:
    wanted = {**{k: str(v) for k, v in programs.items()},
              "SuspendTime": str(args.idle), "SuspendTimeout": str(args.suspend_timeout), "ResumeTimeout": str(args.resume_timeout),
              "ResumeRate": "0", "SuspendRate": "0", "TreeWidth": "65533",
              "CommunicationParameters": "NoAddrCache", "SlurmctldParameters": "idle_on_node_suspend",
              "PrivateData": "cloud", **extra}
    if conf.nodes:
        wanted["SuspendExcNodes"] = ",".join(conf.nodes)  # static nodes are never powered down
    return slurmconf.block_settings(conf, wanted)


def enable(ctx: Any, args: Any) -> dict[str, Any]:
    """Write the cloud nodes and power settings, make slurmctld use them, and remember the cluster."""
    home = Path(ctx.home)
    target = cluster_of(ctx, args.cluster, args.controller)
    cluster, ctl = target.cluster, target.ctl
    conf = target.conf()
    args.cloud = ctx.cloud_name(args)
    nodes = f"{args.partition}[1-{args.max}]" if args.max > 1 else f"{args.partition}1"
    prepared, key = _check(ctx, args, conf, target, nodes)
    spooled = not ctl.local and not agent.cm_runs_there(ctl, home)
    cloud_env = program_env(ctx, args.cloud)
    programs = {k: agent.spool(cluster) / verb for k, verb in PROGRAMS.items()} if spooled else \
        {k: _program(home, cluster, verb, ctl, cloud_env=cloud_env) for k, verb in PROGRAMS.items()}
    settings = _settings(args, conf, programs, prepared.settings)
    lines = [f"NodeName={nodes} CPUs={prepared.vcpus} State=CLOUD Feature=cloud,cm-burst",
             f"PartitionName={args.partition} Nodes={nodes} MaxTime=INFINITE State=UP"]
    text = slurmconf.with_block(conf, settings, lines, f"cloud {args.cloud}, up to {args.max} nodes, written by cm")
    if args.dryrun:
        ctx.say(text.rstrip("\n"))
        return {}
    old = "\n".join(conf.lines) + "\n"
    old_nodes = _block_nodes(conf)
    if spooled:
        agent.install(ctl, cluster, conf.get("SlurmUser", "root"), PROGRAMS)
    restart = target.restart_command(args.restart_command)
    ctl.write_text(ctl.conf, text)
    try:
        _apply(ctl, restart, old_nodes != nodes)
        ctl.scontrol("show", "partition", args.partition)
    except ProviderError as exc:
        ctl.write_text(ctl.conf, old)
        if spooled and not conf.has_block:
            agent.uninstall(ctl, cluster)
        raise ProviderError(f"{exc}; put the previous slurm.conf back") from None
    fresh = {"cluster": cluster, **target.saved(), "cloud": args.cloud, **prepared.fields, "max": args.max, "idle": args.idle,
             "partition": args.partition, "node_list": nodes, "munge_key": _keep_key(home, cluster, target, key, args.munge_key),
             "resume_timeout": args.resume_timeout, "restart_command": restart, "agent": spooled,
             "nodes": state.load(home, cluster)["nodes"] if state.exists(home, cluster) else {}}
    with state.changing(home, cluster, fresh):
        pass
    shown = {k: ",".join(v) if isinstance(v, list) else v for k, v in prepared.fields.items()}
    backing = ", ".join(f"{k} {v}" for k, v in shown.items() if v != "")
    state.log(home, cluster, f"enable: {nodes} on cloud {args.cloud} ({backing}), "
                             f"idle {args.idle} s, partition {args.partition}")
    pid, _ = _agent_for(home, cluster, spooled)
    return {"cluster": cluster, "partition": args.partition, "nodes": nodes, "cloud": args.cloud,
            **shown, "idle": args.idle, "conf": str(ctl.conf), "controller": ctl.host, "agent": pid or ""}


def _agent_for(home: Path, cluster: str, spooled: bool, verb: str = "enable") -> tuple[int | None, bool]:
    """Start the agent of a cluster whose programs spool their requests unless it runs (stop it when they
    no longer spool): (its pid, whether this call started it)."""
    if not spooled:
        if agent.stop(home, cluster):
            state.log(home, cluster, f"{verb}: programs call cm on the controller host; agent stopped")
        return None, False
    try:
        pid, started = agent.start(home, cluster)
    except ProviderError as exc:
        raise ProviderError(f"{exc}; bursting is enabled but nothing handles its requests: "
                            f"start the agent with `cm slurm burst agent {cluster}`") from None
    if started:
        state.log(home, cluster, f"{verb}: agent {pid} handles the requests spooled in {agent.spool(cluster)} "
                                 f"on {state.load(home, cluster)['controller']}")
    return pid, started


def start_agent(ctx: Any, cluster_arg: str) -> dict[str, Any]:
    """Start the agent of a cluster whose programs spool their requests, unless it runs."""
    home = Path(ctx.home)
    cluster = cluster_of(ctx, cluster_arg).cluster
    st = state.load(home, cluster)
    if not st.get("agent"):
        raise UsageError(f"cluster '{cluster}' needs no agent: its programs call cm on {st['controller']}")
    pid, started = _agent_for(home, cluster, True, "agent")
    return {"cluster": cluster, "agent": pid, "started": started, "log": str(agent.log_path(home, cluster))}


def agent_state(home: Path, st: dict[str, Any]) -> str:
    """What `status` shows of the agent: running (pid N), stopped, or - (the programs call cm)."""
    if not st.get("agent"):
        return "-"
    pid = agent.running_pid(home, st["cluster"])
    return f"running (pid {pid})" if pid else "stopped"


def _keep_key(home: Path, cluster: str, target: Target, key: bytes, given: str) -> str:
    """Where resume finds the munge key: the local file named, else cm's own 0600 copy."""
    if target.ctl.local and target.munge_key is None:
        return str(Path(given or "/etc/munge/munge.key").resolve())
    path = state.directory(home, cluster) / "munge.key"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(key)
    path.chmod(0o600)
    return str(path)


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
    """Each cloud node: its Slurm state, VM (or compute node and computeset), cloud, address and node-hours."""
    from cm.elastic.nodesource import source_for
    from cm.names import expand

    cluster = cluster_of(ctx, cluster_arg).cluster
    st = state.load(Path(ctx.home), cluster)
    source, ctl = source_for(ctx, st), controller(st)
    live = ctl.nodes(st["node_list"])
    rows, helper = [], agent_state(Path(ctx.home), st)
    for node in expand([st["node_list"]]):
        have = st["nodes"].get(node, {})
        slurm = live.get(node, {})
        learnt = slurm.get("NodeAddr", "") if have.get("since") and slurm.get("NodeAddr") != node else ""
        rows.append({"node": node, "slurm_state": slurm.get("State", "unknown").lower(), **source.row(have),
                     "cloud": st["cloud"], "address": have.get("address") or learnt,
                     "node_hours": state.node_hours(have) if have else 0.0,
                     "reason": have.get("reason", ""), "agent": helper})
    return rows


def _static(ctl: Controller) -> str:
    """slurm.conf without cm's blocks (backfill's too: its hooks serve these nodes), from one read."""
    return slurmconf.without_block(read_conf(ctl), "backfill", "burst")


def disable(ctx: Any, cluster_arg: str, timeout: float, dryrun: bool = False) -> dict[str, Any]:
    """Drain the cloud nodes, wait for their jobs, delete their VMs (and seeds), restore the static slurm.conf."""
    from cm.elastic.nodesource import source_for
    from cm.elastic.power import suspend
    from cm.names import expand

    home = Path(ctx.home)
    cluster = cluster_of(ctx, cluster_arg).cluster
    st = state.load(home, cluster)
    ctl = controller(st)
    if dryrun:
        ctx.say(_static(ctl).rstrip("\n"))
        return {}
    ctl.scontrol("update", f"nodename={st['node_list']}", "state=drain", "reason=cm burst disable")
    state.log(home, cluster, f"disable: draining {st['node_list']}")
    deadline = time.monotonic() + timeout
    while ctl.check(["squeue", "-h", "-w", st["node_list"], "-o", "%i"]).strip():
        if time.monotonic() >= deadline:
            raise ProviderError(f"jobs still run on {st['node_list']} after {timeout:g} s; they stay drained: "
                                "wait for them or cancel them, then run disable again")
        time.sleep(1)
    if st.get("agent") and agent.stop(home, cluster):
        state.log(home, cluster, "disable: agent stopped")
    source = source_for(ctx, st)
    nodes = state.load(home, cluster)["nodes"]   # as they are after the wait
    up = [n for n, v in nodes.items() if source.may_hold(v)]   # failed ones too: their stop may have failed
    failed = [f"{o.name}: {o.message}" for o in suspend(ctx, cluster, up) if not o.ok] if up else []
    if failed:
        raise ProviderError(f"could not delete the VMs of {'; '.join(failed)}; bursting stays enabled")
    for done in source.forget(cluster, expand([st["node_list"]])):  # seeds a killed cm left
        state.log(home, cluster, f"disable: {done}")
    ctl.write_text(ctl.conf, _static(ctl))   # read now: the file as it is after the wait
    _apply(ctl, st.get("restart_command") or f"slurmctld -f {ctl.conf}", True)
    if st.get("agent"):
        agent.uninstall(ctl, cluster)
    (state.directory(home, cluster) / "state.json").unlink()
    state.log(home, cluster, "disable: static configuration restored")
    return {"cluster": cluster, "removed": st["node_list"], "conf": str(ctl.conf), "vms_deleted": len(up)}

