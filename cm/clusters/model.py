"""The cluster record: what the mirror keeps of a cluster (kind "cluster", per cloud).

A record is a plain dict, so it goes into the mirror as it is::

    {"name": "c1", "cloud": "fake", "recipe": "slurm", "params": {...},
     "counts": {"head": 1, "worker": 2}, "flavors": {"head": "m1.small", ...}, "images": {...},
     "group": "c1", "state": "ready", "reason": "", "simulated": false,
     "started": 1764565200.1, "updated": "2026-12-01T05:00:03Z", "pid": 1234,
     "outputs": {"login": "172.24.4.5", "first_command": "srun -N2 hostname", ...},
     "made": {"secgroups": ["c1"], "ips": ["172.24.4.5"]},
     "next_index": {"worker": 3},
     "nodes": [{"name": "c1-head", "role": "head", "state": "ready", "reason": "",
                "address": "10.0.0.4", "public": "172.24.4.5", "attempt": 0, "replaces": "",
                "times": {"requested": 1764565200.2, "created": ..., "running": ...,
                          "configured": ..., "ready": ...}}, ...]}

Node VMs are ordinary VM records tagged with ``cluster`` and ``role``.  Secrets
(the munge key) are never in the record: they live in a 0600 file per cluster.
"""

from __future__ import annotations

import time
from typing import Any

STATES = ("launching", "ready", "degraded", "failed", "deleting")
PHASES = ("requested", "created", "running", "configured", "ready")
# A node's state is the last phase it reached, or one of these.
NODE_PLANNED, NODE_FAILED, NODE_DELETED = "planned", "failed", "deleted"
LIVE = ("requested", "created", "running", "configured", "ready")


def new_cluster(name: str, recipe: str, params: dict[str, Any], counts: dict[str, int], flavors: dict[str, str],
                images: dict[str, str], group: str) -> dict[str, Any]:
    return {"name": name, "recipe": recipe, "params": params, "counts": counts, "flavors": flavors,
            "images": images, "group": group, "state": "launching", "reason": "", "simulated": False,
            "started": time.time(), "updated": now_iso(), "pid": 0, "outputs": {}, "made": {"secgroups": [],
                                                                                               "ips": []},
            "next_index": {}, "nodes": []}


def new_node(name: str, role: str, attempt: int = 0, replaces: str = "") -> dict[str, Any]:
    return {"name": name, "role": role, "state": NODE_PLANNED, "reason": "", "address": "", "public": "",
            "attempt": attempt, "replaces": replaces, "times": {}}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node_name(cluster: str, role: str, index: int, single: bool) -> str:
    """``c1-head`` for a role of one node, else ``c1-worker3``."""
    return f"{cluster}-{role}" if single else f"{cluster}-{role}{index}"


def plan_nodes(cluster: dict[str, Any], role: str, count: int, single: bool) -> list[dict[str, Any]]:
    """Add ``count`` new nodes of ``role`` (numbered on from the last one ever made) and return them."""
    start = int(cluster["next_index"].get(role, 1))
    nodes = [new_node(node_name(cluster["name"], role, i, single), role) for i in range(start, start + count)]
    cluster["next_index"][role] = start + count
    cluster["nodes"].extend(nodes)
    return nodes


def mark(node: dict[str, Any], phase: str, at: float | None = None) -> bool:
    """Record that ``node`` reached ``phase`` (once; earlier phases it skipped get the same time)."""
    if phase in node["times"] or node["state"] in (NODE_FAILED, NODE_DELETED):
        return False
    at = time.time() if at is None else at
    for earlier in PHASES[:PHASES.index(phase) + 1]:
        node["times"].setdefault(earlier, at)
    node["state"] = phase
    return True


def fail(node: dict[str, Any], reason: str) -> None:
    node["state"], node["reason"] = NODE_FAILED, reason
    node["times"].setdefault("failed", time.time())


def live_nodes(cluster: dict[str, Any], role: str | None = None) -> list[dict[str, Any]]:
    """The nodes that exist or are meant to (not failed, not deleted)."""
    return [n for n in cluster["nodes"] if n["state"] not in (NODE_FAILED, NODE_DELETED)
            and (role is None or n["role"] == role)]


def settle_state(cluster: dict[str, Any]) -> str:
    """The cluster's state from its nodes': ready, degraded (naming the node and why), failed, launching."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for node in cluster["nodes"]:
        if node["state"] != NODE_DELETED:
            by_role.setdefault(node["role"], []).append(node)
    failed_roles = [r for r, count in cluster["counts"].items()
                    if count and not any(n["state"] != NODE_FAILED for n in by_role.get(r, []))]
    lost = [n for n in cluster["nodes"] if n["state"] == NODE_FAILED and not n.get("replaced_by")]
    if failed_roles:
        node = next((n for n in lost if n["role"] == failed_roles[0]), None)
        why = f": {node['name']} {node['reason']}" if node else ""
        cluster["state"], cluster["reason"] = "failed", f"every {failed_roles[0]} node failed{why}"
    elif any(n["state"] != "ready" for n in live_nodes(cluster)):
        cluster["state"], cluster["reason"] = "launching", ""
    elif lost:
        cluster["state"] = "degraded"
        cluster["reason"] = "; ".join(f"{n['name']} failed: {n['reason']}" for n in lost)
    else:
        cluster["state"], cluster["reason"] = "ready", ""
    return cluster["state"]


def head(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """The login node: the first live node of the first role (the head), if any."""
    nodes = live_nodes(cluster)
    return nodes[0] if nodes else None
