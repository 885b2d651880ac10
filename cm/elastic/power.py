"""What slurmctld calls: power cloud nodes up, down, and clean up nodes that never came up.
Each program gets a hostlist and runs its nodes in parallel.

Resume starts each node's machine through the cluster's node source (cm.elastic.nodesource: a VM
on a cloud, or a compute node of a Comet virtual cluster in a computeset) with user-data that makes
it a slurmd of the cluster, and tells Slurm the node's address (``scontrol update nodename=X
nodeaddr=IP nodehostname=H``) the moment the source knows one (a Comet node's is learnt by Slurm
from its registration); Slurm then waits for the node's slurmd to register: no fixed sleep
anywhere.  A node whose machine cannot be started is cleaned up (nothing left running), set DOWN
with the reason, and its jobs requeued.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cm.errors import CmError
from cm.elastic import state, userdata
from cm.elastic.nodesource import ComputesetSource, Started, VmSource, source_for
from cm.elastic.slurmctl import Controller, Unreachable
from cm.elastic.target import controller, read_conf

if TYPE_CHECKING:
    from cm.bulk import Outcomes

Source = VmSource | ComputesetSource


def jobs_by_node(environ: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Node -> job ids, from the JSON file slurmctld names in SLURM_RESUME_FILE (22.05+)."""
    path = (environ if environ is not None else os.environ).get("SLURM_RESUME_FILE", "")
    try:
        return jobs_from(Path(path).read_text()) if path else {}
    except OSError:
        return {}


def jobs_from(text: str) -> dict[str, list[str]]:
    """Node -> job ids, from the JSON text of a SLURM_RESUME_FILE (nothing when it is not JSON)."""
    from cm.names import expand

    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return {}
    found: dict[str, list[str]] = {}
    for job in (data.get("jobs") or []) if isinstance(data, dict) else []:
        for node in expand([job.get("nodes", "")]) if job.get("nodes") else []:
            found.setdefault(node, []).append(str(job.get("job_id")))
    return found


def _tell(ctl: Controller, node: str, up: Started, source: Source, cluster: str, home: Path) -> None:
    """Give Slurm the node's address; if the controller cannot be reached, stop the machine again:
    no machine without its node (the agent tries the request again)."""
    try:
        ctl.scontrol("update", f"nodename={node}", f"nodeaddr={up.address}", f"nodehostname={up.hostname}")
    except Unreachable:
        done = source.stop(cluster, node, up.entry)
        state.log(home, cluster, f"resume {node}: controller unreachable; {done}")
        raise


def resume(ctx: Any, cluster: str, nodes: list[str], jobs: dict[str, list[str]] | None = None) -> Outcomes:
    """Start the nodes' machines in parallel; one outcome per node (its message says why one failed).

    ``jobs`` (node -> job ids to requeue if it fails) defaults to SLURM_RESUME_FILE's."""
    from cm import bulk

    home = Path(ctx.home)
    st = state.load(home, cluster)
    ctl = controller(st)
    conf = read_conf(ctl)
    source = source_for(ctx, st)
    key = Path(st["munge_key"]).read_bytes()
    jobs = jobs_by_node() if jobs is None else jobs
    _look_for_ended(ctx, cluster, source, ctl)

    def boot(node: str) -> str:
        with state.changing(home, cluster) as now:
            now["nodes"][node] = {**now["nodes"].get(node, {}), "cloud": st["cloud"], "address": "",
                                  "state": "booting", "reason": "", "since": time.time(), "booted": 0.0}
        state.log(home, cluster, f"resume {node}: {source.describe(cluster, node)}")
        try:
            up = source.start(cluster, node, userdata.script(conf, node, key), float(st["resume_timeout"]))
            if up.address:
                _tell(ctl, node, up, source, cluster, home)
        except Unreachable:
            raise   # nothing to tell Slurm over a dead ssh: the agent tries the request again
        except CmError as exc:
            _fail(ctx, cluster, node, source, ctl, f"boot failed: {exc}", jobs.get(node, []))
            raise
        with state.changing(home, cluster) as now:
            now["nodes"][node].update(up.entry, address=up.address, state="booted", booted=time.time())
        told = f"; told Slurm nodeaddr={up.address}" if up.address else "; Slurm learns its address when it registers"
        state.log(home, cluster, f"resume {node}: {up.what} at {up.address or '?'}{told}")
        return up.address

    return bulk.run_each(nodes, boot, "resume")


def _fail(ctx: Any, cluster: str, node: str, source: Source, ctl: Controller, reason: str,
          jobs: list[str]) -> None:
    """Leave nothing of a node that did not come up: its machine stopped, the node DOWN, its jobs requeued."""
    home = Path(ctx.home)
    entry = state.load(home, cluster)["nodes"].get(node, {})
    try:
        source.stop(cluster, node, entry)
        left = ""
    except CmError as exc:
        left = f"; its machine could not be stopped: {exc}"
    short = reason.replace('"', "'")[:200]
    ctl.run(["scontrol", "update", f"nodename={node}", "state=down", f"reason=cm: {short}"])
    for job in jobs:
        ctl.run(["scontrol", "requeue", job])
    _stopped(home, cluster, node, "failed", reason + left)
    state.log(home, cluster, f"fail {node}: {reason}{left}; node set DOWN"
              + (f", requeued job {', '.join(jobs)}" if jobs else ""))


def _stopped(home: Path, cluster: str, node: str, how: str, reason: str = "") -> None:
    """Book the node's VM time and mark it gone (or failed)."""
    with state.changing(home, cluster) as now:
        entry = now["nodes"].setdefault(node, {})
        entry["hours"] = state.node_hours(entry)
        entry.update(since=0.0, state=how, reason=reason, address="")


def suspend(ctx: Any, cluster: str, nodes: list[str], failed: bool = False) -> Outcomes:
    """Stop the nodes' machines (SuspendProgram), or clean up nodes that never registered (ResumeFailProgram)."""
    from cm import bulk

    home = Path(ctx.home)
    st = state.load(home, cluster)
    source = source_for(ctx, st)
    ctl = controller(st)
    _look_for_ended(ctx, cluster, source, ctl)

    def remove(node: str) -> None:
        before = state.load(home, cluster)["nodes"].get(node, {})
        if failed:
            # a node whose boot failed stays "powering up" in Slurm until ResumeTimeout: keep that reason
            why = before.get("reason") if before.get("state") == "failed" and before.get("reason") else \
                "slurmd did not register before ResumeTimeout"
            _fail(ctx, cluster, node, source, ctl, why, [])
            return
        done = source.stop(cluster, node, before)
        if before.get("state") == "failed":  # powered down by ended(): keep why it failed
            state.log(home, cluster, f"suspend {node}: powered down after it failed; {done}")
            return
        _stopped(home, cluster, node, "gone")
        state.log(home, cluster, f"suspend {node}: idle; {done}")

    return bulk.run_each(nodes, remove, "suspend")


def _look_for_ended(ctx: Any, cluster: str, source: Source, ctl: Controller) -> None:
    """ended() on the way: a cloud that does not answer now must not stop the nodes asked for."""
    try:
        ended(ctx, cluster, source, ctl)
    except CmError as exc:
        state.log(Path(ctx.home), cluster, f"could not look for ended machines: {exc}")


def ended(ctx: Any, cluster: str, source: Source, ctl: Controller, only: str = "") -> list[str]:
    """Nodes (or node ``only``) whose machine ended under them (a computeset failed or reached its
    walltime): DOWN with the reason, their jobs requeued, what is left stopped; returns their names.

    Slurm still counts such a node powered up, so it is then powered down (which keeps the reason):
    the next job that needs it starts a fresh machine rather than waiting on a silent one.  Several
    processes may see the same end (its watcher, a resume, a suspend): only the one that claims the
    node acts."""
    home = Path(ctx.home)
    nodes = state.load(home, cluster)["nodes"]
    seen = {only: nodes.get(only, {})} if only else nodes
    gone = {node: why for node, why in source.ended(seen).items()
            if _mark_ended(home, cluster, node, seen[node].get("computeset"), "booted", "ending")}
    for at, (node, why) in enumerate(gone.items()):
        try:
            jobs = ctl.check(["squeue", "-h", "-w", node, "-o", "%i"]).split()
        except CmError:  # slurmctld did not answer: give the claims back, the next look tries again
            for left in list(gone)[at:]:
                _mark_ended(home, cluster, left, seen[left].get("computeset"), "ending", "booted")
            raise
        _fail(ctx, cluster, node, source, ctl, why, jobs)
        ctl.run(["scontrol", "update", f"nodename={node}", "state=power_down"])
    return sorted(gone)


def _mark_ended(home: Path, cluster: str, node: str, computeset: Any, before: str, after: str) -> bool:
    """Move the node from state ``before`` to ``after`` if it still holds ``computeset``; whether it did.
    Checked and marked under the state's lock: of several processes that saw its computeset end
    (its watcher, a resume, a suspend), one claims the node and acts."""
    with state.changing(home, cluster) as now:
        entry = now["nodes"].get(node, {})
        if entry.get("state") != before or entry.get("computeset") != computeset:
            return False
        entry["state"] = after
    return True
