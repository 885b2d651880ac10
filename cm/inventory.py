"""Between providers and the mirror: fetch records from a cloud and store them.

Providers never touch the mirror; this module (used by the commands) does.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cm.errors import NotFound, ProviderError

if TYPE_CHECKING:  # listing from the mirror needs no provider contract
    from cm.provider import VM, Provider

# kind -> the provider verb that lists it
TAGS = ("cluster", "role")  # fields cm adds to VM records (cm.clusters.store)
FETCHERS = {"vm": "list_vms", "image": "list_images", "flavor": "list_flavors", "key": "list_keys",
            "secgroup": "list_secgroups", "network": "list_networks", "ip": "list_floating_ips"}


def as_record(item: Any) -> dict[str, Any]:
    return item.to_dict() if hasattr(item, "to_dict") else dict(item)


def refresh(ctx: Any, cloud: str, kind: str) -> int:
    """Make the mirror's ``kind`` records of ``cloud`` what the cloud has now; return the count.

    VMs gone from the cloud also leave their groups, so `--group` keeps working.
    """
    records = [as_record(i) for i in getattr(ctx.provider(cloud), FETCHERS[kind])()]
    with ctx.mirror.transaction():
        if kind == "vm":  # what cm itself tagged a VM with (its cluster and role) is not the cloud's to drop
            tags = {r["name"]: {k: r[k] for k in TAGS if k in r} for r in ctx.mirror.records("vm", cloud)}
            records = [{**tags.get(r["name"], {}), **r} for r in records]
        count = ctx.mirror.replace(kind, cloud, records)
        if kind == "vm":
            from cm.commands.group import keep_only

            keep_only(ctx, cloud, {r["name"] for r in records})
    return count


def records(ctx: Any, kind: str, cloud: str, refresh_first: bool = False) -> list[dict[str, Any]]:
    if refresh_first:
        refresh(ctx, cloud, kind)
    return ctx.mirror.records(kind, cloud)


def store_vm(ctx: Any, cloud: str, vm: VM) -> None:
    ctx.mirror.put("vm", cloud, vm.to_dict())


def known(ctx: Any, kind: str, cloud: str, name: str, label: str = "") -> dict[str, Any]:
    """The mirror's ``kind`` record called ``name`` on ``cloud``; NotFound (exit 2) says how to refresh."""
    record = ctx.mirror.get(kind, cloud, name)
    if record is None:
        raise NotFound(f"unknown {label or kind} '{name}' on cloud '{cloud}' (see `cm {kind} list --refresh`)")
    return record


def known_vms(ctx: Any, cloud: str, names: Iterable[str]) -> list[str]:
    """The names, all of which must be VMs the mirror knows on ``cloud``."""
    names = list(names)
    have = {r["name"] for r in ctx.mirror.records("vm", cloud)}
    missing = [n for n in names if n not in have]
    if missing:
        from cm.names import collect

        raise NotFound(f"unknown VM '{collect(missing)}' on cloud '{cloud}' (see `cm vm list --refresh`)")
    return names


def wait_for(provider: Provider, name: str, states: set[str], timeout: float,
             interval: float = 0.5) -> VM:
    """Poll until the VM reaches one of ``states``; an ERROR state or the timeout fails."""
    deadline = time.monotonic() + timeout
    while True:
        vm = provider.get_vm(name)
        if vm.state in states:
            return vm
        if vm.state == "error":
            raise ProviderError(f"{name} went to ERROR" + (f": {vm.fault}" if vm.fault else ""))
        if time.monotonic() >= deadline:
            raise ProviderError(f"{name} is still {vm.state} after {timeout:g} s")
        from cm.bulk import CANCELLED

        if CANCELLED.wait(min(interval, max(0.0, deadline - time.monotonic()))):
            raise ProviderError(f"stopped waiting for {name}: interrupted")
        interval = min(interval * 1.5, 2.0)
