"""Which VMs a monitor command means: a cluster's nodes, hostlists of VM names, or every VM of the cloud."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from cm.errors import NotFound
from cm.names import expand

GONE = ("failed", "deleted")


def cluster_nodes(ctx: Any, cloud: str, name: str) -> list[str] | None:
    """The live nodes of cluster ``name`` (the mirror's ``cluster`` records), or None if no such cluster."""
    record = ctx.mirror.get("cluster", cloud, name)
    if not record:
        return None
    return [n["name"] for n in record.get("nodes", []) if n.get("state") not in GONE]


def resolve(ctx: Any, args: Namespace) -> tuple[str, list[str]]:
    """(cloud, VM names) for the command's TARGETS (a cluster, or NAMES), or every VM the mirror has."""
    from cm import inventory

    cloud = ctx.cloud_name(args)
    words = list(getattr(args, "targets", None) or [])
    if len(words) == 1:
        nodes = cluster_nodes(ctx, cloud, words[0])
        if nodes is not None:
            return cloud, nodes
    if words:
        return cloud, inventory.known_vms(ctx, cloud, expand(words))
    names = sorted(r["name"] for r in ctx.mirror.records("vm", cloud))
    if not names:
        raise NotFound(f"cloud '{cloud}' has no VMs to monitor (see `cm vm list --refresh`)")
    return cloud, names


def stored_names(ctx: Any, args: Namespace) -> list[str]:
    """Node names to look up in the store: a cluster's nodes, hostlists, or [] for all."""
    words = list(getattr(args, "targets", None) or [])
    if len(words) == 1:
        try:
            cloud = ctx.cloud_name(args)
        except Exception:  # no cloud configured: names are plain names
            cloud = ""
        nodes = cluster_nodes(ctx, cloud, words[0]) if cloud else None
        if nodes is not None:
            return nodes
    return expand(words) if words else []
