"""Between providers and the mirror: fetch records from a cloud and store them.

Providers never touch the mirror; this module (used by the commands) does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cm import groups
from cm.errors import NotFound, ProviderError, UsageError

if TYPE_CHECKING:  # listing from the mirror needs no provider contract
    from cm.context import Context
    from cm.provider import VM, Provider

TAGS = ("cluster", "role")  # fields cm adds to VM records (cm.clusters.store)
# kind -> the provider verb that lists it
FETCHERS = {"vm": "list_vms", "image": "list_images", "flavor": "list_flavors", "key": "list_keys",
            "secgroup": "list_secgroups", "network": "list_networks", "ip": "list_floating_ips", "job": "list_jobs",
            "cloud_cluster": "list_clusters"}  # the cloud's own clusters; recipe clusters are kind "cluster"


def as_record(item: Any) -> dict[str, Any]:
    return item.to_dict() if hasattr(item, "to_dict") else dict(item)


def refresh(ctx: Context, cloud: str, kind: str) -> int:
    """Make the mirror's ``kind`` records of ``cloud`` what the cloud has now; return the count.

    VMs gone from the cloud also leave their groups, so `--group` keeps working.
    """
    provider = ctx.provider(cloud)
    if kind == "job":  # jobs keep what only cm knows of them (their directories), and outlive the queue
        from cm.jobs import store

        rows = store.fetch(ctx, provider)
        with ctx.mirror.transaction():
            return store.replace_queue(ctx, cloud, rows)
    records = [as_record(i) for i in getattr(provider, FETCHERS[kind])()]
    with ctx.mirror.transaction():
        if kind == "vm":  # what cm itself tagged a VM with (its cluster and role) is not the cloud's to drop
            tags = {r["name"]: {k: r[k] for k in TAGS if k in r} for r in ctx.mirror.records("vm", cloud)}
            records = [{**tags.get(r["name"], {}), **r} for r in records]
        count = ctx.mirror.replace(kind, cloud, records)
        if kind == "vm":
            groups.keep_only(ctx, cloud, {r["name"] for r in records})
    return count


def refresh_quietly(ctx: Context, cloud: str, kind: str) -> None:
    """A refresh that keeps other records current after a change (floating IPs after --public); a
    cloud that cannot list ``kind``, or fails to, leaves the mirror as it was."""
    from cm.errors import CmError

    try:
        refresh(ctx, cloud, kind)
    except CmError:
        pass


def records(ctx: Context, kind: str, cloud: str, refresh_first: bool = False) -> list[dict[str, Any]]:
    if refresh_first:
        refresh(ctx, cloud, kind)
    return ctx.mirror.records(kind, cloud)


def store_vm(ctx: Context, cloud: str, vm: VM) -> None:
    ctx.mirror.put("vm", cloud, vm.to_dict())


def known(ctx: Context, kind: str, cloud: str, name: str, label: str = "") -> dict[str, Any]:
    """The mirror's ``kind`` record called ``name`` on ``cloud``; NotFound (exit 2) says how to refresh."""
    record = ctx.mirror.get(kind, cloud, name)
    if record is None:
        raise NotFound(f"unknown {label or kind} '{name}' on cloud '{cloud}' (see `cm {kind} list --refresh`)")
    return record


def vm_record(ctx: Context, cloud: str, ref: str) -> dict[str, Any]:
    """The one mirror record a VM name or id stands for; a name several VMs share is refused."""
    from cm.names import ambiguous

    vms = ctx.mirror.records("vm", cloud)
    by_id = [r for r in vms if r.get("id") == ref]
    if by_id:
        return by_id[0]
    named = [r for r in vms if r.get("name") == ref]
    if len(named) > 1:
        raise UsageError(ambiguous(ref, cloud, [str(r.get("id", "")) for r in named]))
    if not named:
        raise NotFound(f"unknown VM '{ref}' on cloud '{cloud}' (see `cm vm list --refresh`)")
    return named[0]


def known_vms(ctx: Context, cloud: str, refs: Iterable[str]) -> list[str]:
    """What to ask the cloud for each VM named (by name or id): its name when no other VM has it, else its id.

    Every ref must be a VM the mirror knows; a name several VMs share is refused, naming their ids.
    """
    from cm.names import ambiguous, collect

    vms = ctx.mirror.records("vm", cloud)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in vms:
        by_name.setdefault(r.get("name", ""), []).append(r)
    by_id = {r["id"]: r for r in vms if r.get("id")}
    targets, missing = [], []
    for ref in refs:
        if ref in by_id:
            name = by_id[ref]["name"]
            targets.append(name if len(by_name[name]) == 1 else ref)
        elif len(by_name.get(ref, [])) > 1:
            raise UsageError(ambiguous(ref, cloud, [str(r.get("id", "")) for r in by_name[ref]]))
        elif ref in by_name:
            targets.append(ref)
        else:
            missing.append(ref)
    if missing:
        raise NotFound(f"unknown VM '{collect(missing)}' on cloud '{cloud}' (see `cm vm list --refresh`)")
    return list(dict.fromkeys(targets))


def forget_vm(ctx: Context, cloud: str, ref: str) -> None:
    """Drop a VM gone from the cloud (by name or id) from the mirror and, if no VM keeps its name, its groups."""
    with ctx.mirror.transaction():
        gone = [r for r in ctx.mirror.records("vm", cloud) if ref in (r.get("id"), r.get("name"))]
        by_id = [r for r in gone if r.get("id") == ref]
        if by_id:
            ctx.mirror.remove_ids("vm", cloud, [ref])
            gone = by_id
        else:
            ctx.mirror.remove("vm", cloud, [ref])
        for name in {r["name"] for r in gone} or {ref}:
            if not ctx.mirror.get("vm", cloud, name):
                groups.forget_vm(ctx, cloud, name)


def wait_for(provider: Provider, name: str, states: set[str], timeout: float,
             interval: float = 0.5) -> VM:
    """Poll until the VM reaches one of ``states``; an ERROR state or the timeout fails."""
    from cm.bulk import pause

    deadline = time.monotonic() + timeout
    while True:
        vm = provider.get_vm(name)
        if vm.state in states:
            return vm
        if vm.state == "error":
            raise ProviderError(f"{name} went to ERROR" + (f": {vm.fault}" if vm.fault else ""))
        if time.monotonic() >= deadline:
            raise ProviderError(f"{name} is still {vm.state} after {timeout:g} s")
        pause(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(interval * 1.5, 2.0)


def wait_gone(provider: Provider, name: str, timeout: float, interval: float = 0.25) -> VM | None:
    """Poll until the cloud no longer has the VM (None), or return it as it is at the timeout or a Ctrl-C."""
    from cm.bulk import Interrupted, pause

    deadline = time.monotonic() + timeout
    while True:
        try:
            vm = provider.get_vm(name)
        except NotFound:
            return None
        if time.monotonic() >= deadline:
            return vm
        try:
            pause(min(interval, max(0.0, deadline - time.monotonic())))
        except Interrupted:
            return vm
        interval = min(interval * 1.5, 2.0)
