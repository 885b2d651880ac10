"""What slurmctld calls: power cloud nodes up (boot their VMs), down (delete them), and clean up
nodes that never came up.  Each program gets a hostlist and runs its nodes in parallel.

Resume boots one VM per node with user-data that makes it a slurmd of the cluster, and tells
Slurm the node's address (``scontrol update nodename=X nodeaddr=IP nodehostname=VM``) the
moment the cloud reports one; Slurm then waits for the node's slurmd to register: no fixed
sleep anywhere.  A node whose VM cannot be made or gets no address is cleaned up (its VM
deleted), set DOWN with the reason, and its jobs requeued.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from cm.errors import CmError, NotFound, ProviderError
from cm.elastic import state, userdata
from cm.elastic.slurmctl import Controller, Unreachable
from cm.elastic.target import controller, read_conf
from cm.provider import VM, BootSpec, Provider

POLL = 0.2  # seconds between two looks at a booting VM's address


def vm_name(cluster: str, node: str) -> str:
    """The cloud VM of ``node``: the cluster's name in front, so two clusters never share one."""
    return f"{cluster}-{node}".replace("_", "-")


def jobs_by_node(environ: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Node -> job ids, from the JSON file slurmctld names in SLURM_RESUME_FILE (22.05+)."""
    path = (environ or os.environ).get("SLURM_RESUME_FILE", "")
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


def node_address(vm: VM, networks: list[str]) -> str:
    """Where slurmctld reaches the node: its fixed address on the first network named (a VM may sit on
    several), else its first fixed address; a public one only when it has none (a floating IP is for
    reaching the VM from outside the cloud, where the controller usually is not)."""
    by_network = vm.extra.get("addresses")
    if networks and isinstance(by_network, dict):
        return next(iter(by_network.get(networks[0], [])), "")   # not yet there: wait for it, not for another
    return next(iter([*vm.private_ips, *vm.public_ips]), "")


def _address(provider: Provider, vm: str, timeout: float, networks: list[str]) -> str:
    """Poll the cloud until the VM reports an address; an error state or the timeout fails."""
    deadline = time.monotonic() + timeout
    while True:
        found = provider.get_vm(vm)
        if str(found.state) == "error":
            raise ProviderError(f"VM {vm} went to ERROR" + (f": {found.fault}" if found.fault else ""))
        if str(found.state) in ("stopped", "deleted"):
            raise ProviderError(f"VM {vm} stopped while booting")
        address = node_address(found, networks)
        if address:
            return address
        if time.monotonic() >= deadline:
            raise ProviderError(f"VM {vm} had no address after {timeout:g} s")
        time.sleep(POLL)


def _delete(provider: Provider, vm: str) -> None:
    try:
        provider.delete_vm(vm)
    except NotFound:
        pass


def resume(ctx: Any, cluster: str, nodes: list[str],
           jobs: dict[str, list[str]] | None = None) -> list[tuple[str, str]]:
    """Boot the nodes' VMs in parallel; returns (node, "" or why it failed) for each.

    ``jobs`` (node -> job ids to requeue if it fails) defaults to SLURM_RESUME_FILE's."""
    from cm import bulk

    home = Path(ctx.home)
    st = state.load(home, cluster)
    ctl = controller(st)
    conf = read_conf(ctl)
    provider = ctx.provider(st["cloud"])
    key = Path(st["munge_key"]).read_bytes()
    jobs = jobs_by_node() if jobs is None else jobs

    def boot(node: str) -> str:
        vm = vm_name(cluster, node)
        with state.changing(home, cluster) as now:
            now["nodes"][node] = {**now["nodes"].get(node, {}), "vm": vm, "cloud": st["cloud"], "address": "",
                                  "state": "booting", "reason": "", "since": time.time(), "booted": 0.0}
        state.log(home, cluster, f"resume {node}: booting VM {vm} on cloud {st['cloud']}")
        try:
            _delete(provider, vm)  # a VM left from an earlier life of this node would hold the name
            provider.create_vm(BootSpec(name=vm, image=st["image"], flavor=st["flavor"],
                                        user_data=userdata.script(conf, node, key),
                                        networks=st.get("networks", []), secgroups=st.get("secgroups", [])))
            address = _address(provider, vm, float(st["resume_timeout"]), st.get("networks", []))
            ctl.scontrol("update", f"nodename={node}", f"nodeaddr={address}", f"nodehostname={vm}")
        except Unreachable:
            _delete(provider, vm)   # Slurm cannot be told of it: no VM without a node (the agent tries again)
            state.log(home, cluster, f"resume {node}: controller unreachable; deleted VM {vm}")
            raise
        except CmError as exc:
            _fail(ctx, cluster, node, vm, provider, ctl, f"boot failed: {exc}", jobs.get(node, []))
            raise
        with state.changing(home, cluster) as now:
            now["nodes"][node].update(address=address, state="booted", booted=time.time())
        state.log(home, cluster, f"resume {node}: VM {vm} at {address}; told Slurm nodeaddr={address}")
        return address

    outcomes = bulk.run_each(nodes, boot, "resume")
    return [(o.name, "" if o.ok else o.message) for o in outcomes]


def _fail(ctx: Any, cluster: str, node: str, vm: str, provider: Provider, ctl: Controller, reason: str,
          jobs: list[str]) -> None:
    """Leave nothing of a node that did not come up: its VM deleted, the node DOWN, its jobs requeued."""
    home = Path(ctx.home)
    try:
        _delete(provider, vm)
        left = ""
    except CmError as exc:
        left = f"; its VM {vm} could not be deleted: {exc}"
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


def suspend(ctx: Any, cluster: str, nodes: list[str], failed: bool = False) -> list[tuple[str, str]]:
    """Delete the nodes' VMs (SuspendProgram), or clean up nodes that never registered (ResumeFailProgram)."""
    from cm import bulk

    home = Path(ctx.home)
    st = state.load(home, cluster)
    provider = ctx.provider(st["cloud"])
    ctl = controller(st)

    def remove(node: str) -> None:
        vm = vm_name(cluster, node)
        if failed:
            # a node whose boot failed stays "powering up" in Slurm until ResumeTimeout: keep that reason
            before = st["nodes"].get(node, {})
            why = before.get("reason") if before.get("state") == "failed" and before.get("reason") else \
                "slurmd did not register before ResumeTimeout"
            _fail(ctx, cluster, node, vm, provider, ctl, why, [])
            return
        _delete(provider, vm)
        _stopped(home, cluster, node, "gone")
        state.log(home, cluster, f"suspend {node}: idle; deleted VM {vm}")

    outcomes = bulk.run_each(nodes, remove, "suspend")
    return [(o.name, "" if o.ok else o.message) for o in outcomes]
