"""`cm monitor tune`: the change a run's bottleneck calls for, and (``--apply``) making it on running kvm VMs.

VM-level CPU: one more vCPU (hot-add); VM-level memory: half as much again
through the balloon (up to its maximum); a host-level bottleneck: move the VM
to the least loaded other host of its cloud (the host samples over the run's
window tell which), live, through the provider's ``migrate_vm`` (kvm clouds that
list ``hosts:``).
"""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from cm.errors import CmError

COLUMNS = ["node", "bottleneck", "level", "change", "result"]
MIGRATE = "move it to a less loaded host of its cloud: cm vm migrate {node} --to HOST (live)"


def _change(verdict: dict[str, Any], node: str, figures: dict[str, Any]) -> tuple[str, tuple[str, Any] | None]:
    """(what to do, (provider verb, value) or None when cm cannot make the change)."""
    resource, level = verdict["bottleneck"], verdict["level"]
    if resource == "none":
        return "nothing to change: no bottleneck", None
    if level == "host":
        target = figures.get("target")
        if target is None:
            return f"{MIGRATE.format(node=node)}; no other host of the cloud was sampled", None
        host, cpu = target
        return (f"move it to the least loaded other host: cm vm migrate {node} --to {host} (live; "
                f"{host}'s CPUs {cpu:.0%} busy meanwhile)"), ("migrate_vm", host)
    if resource == "cpu":
        vcpus = int(figures.get("vcpus") or 1)
        return f"add a vCPU: {vcpus} -> {vcpus + 1}", ("set_vm_vcpus", vcpus + 1)
    if resource == "memory":
        mib = int(figures.get("balloon_mib") or 0)
        target = max(mib + 64, int(mib * 1.5))
        return f"balloon memory up: {mib} -> {target} MiB (up to the VM's maximum)", ("set_vm_memory", target)
    if resource == "disk":
        return "raise the disk's I/O limits (virsh blkdeviotune NAME DEV) or use a faster storage pool", None
    return "give it a faster network path (virtio with vhost-net, or a NIC of its own)", None


def least_loaded_host(store: Any, cloud: str, run: dict[str, Any]) -> tuple[str, float] | None:
    """(name, mean CPU busy) of the cloud's least busy host over the run's window, of those its VMs were not on."""
    vms = store.nodes(run["nodes"], kind="vm")
    used = {n["host"] for n in vms if n["cloud"] == cloud}
    loads = []
    for host in store.nodes(kind="host"):
        if host["cloud"] != cloud or host["name"] in used:
            continue
        count, cpu = store.summary(host["id"], run["start"], run["end"])[:2]
        if count:
            loads.append((cpu / 100, host["name"]))
    if not loads:
        return None
    cpu, name = min(loads)
    return name, cpu


def suggest(ctx: Any, args: Namespace, run: dict[str, Any], verdict: dict[str, Any],
            target: tuple[str, float] | None = None) -> list[dict[str, Any]]:
    """One row per VM of the run: the change and, while nothing is applied, 'suggested'.

    ``target``: the host a host-level bottleneck moves the VMs to (:func:`least_loaded_host`).
    """
    live: dict[str, Any] = {}
    if verdict["bottleneck"] in ("cpu", "memory") and verdict["level"] == "vm":
        cloud = ctx.cloud_name(args)
        provider = ctx.provider(cloud)
        if "vm_stats" in type(provider).verbs():
            live = {s.name: s for s in provider.vm_stats(run["nodes"])}
    rows = []
    for node in run["nodes"]:
        stats = live.get(node)
        figures = {"vcpus": stats.vcpus if stats else 1,
                   "balloon_mib": int(stats.extra.get("balloon_kib", stats.mem_total_kib)) // 1024 if stats else 0,
                   "target": target}
        text, action = _change(verdict, node, figures)
        if stats is None and action is not None and action[0] != "migrate_vm":  # a move needs no live figures
            text, action = f"{text}: not running on this cloud, cannot say", None
        rows.append({"node": node, "bottleneck": verdict["bottleneck"], "level": verdict["level"], "change": text,
                     "result": "suggested", "_action": action})
    return rows


def apply(ctx: Any, args: Namespace, rows: list[dict[str, Any]]) -> bool:
    """Make each row's change where cm can; return whether any failed."""
    provider = ctx.provider(ctx.cloud_name(args))
    failed = False
    for row in rows:
        action = row.pop("_action", None)
        if action is None:
            row["result"] = "not applied: cm cannot make this change"
            continue
        verb, value = action
        if args.dryrun:
            row["result"] = f"would call {verb}({row['node']}, {value})"
            continue
        try:
            now = getattr(provider, verb)(row["node"], value)
        except CmError as exc:
            row["result"] = f"failed: {exc}"
            failed = True
            continue
        row["result"] = _done(ctx, args, verb, now)
    return failed


def _done(ctx: Any, args: Namespace, verb: str, now: Any) -> str:
    if verb == "migrate_vm":
        from cm import inventory

        inventory.store_vm(ctx, ctx.cloud_name(args), now)  # the mirror knows where it runs now
        return f"done: {getattr(now.state, 'value', now.state)} on {now.extra.get('host') or 'its new host'}"
    return f"done: {now} vCPUs" if verb == "set_vm_vcpus" else f"done: {now} MiB"
