"""A run described by its resource-usage features: what its VMs used, and what their hosts did meanwhile.

The VM features (:data:`VECTOR`) are what profiles are learnt from; the
host's are kept beside them to tell a host bottleneck from a VM one.
"""

from __future__ import annotations

import math
from typing import Any

from cm.errors import NotFound

# Clustering features: CPU busy, CPU demand (busy + waiting for a host CPU), memory used,
# disk rate (log10 B/s), disk requests in flight, network rate (log10 B/s).
VECTOR = ("cpu", "demand", "mem", "disk_log", "disk_busy", "net_log")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _node_features(samples: list[Any]) -> dict[str, float]:
    cpu = [s.cpu / 1000 for s in samples]
    steal = [s.steal / 1000 for s in samples]
    return {"cpu": _mean(cpu), "cpu_peak": max(cpu, default=0.0), "steal": _mean(steal),
            "demand": min(1.0, _mean(cpu) + _mean(steal)),
            "mem": _mean([s.mem_used / s.mem_total for s in samples if s.mem_total]),
            "mem_peak": max([s.mem_used / s.mem_total for s in samples if s.mem_total], default=0.0),
            "disk_rate": _mean([s.disk_rd + s.disk_wr for s in samples]),
            "disk_busy": _mean([s.disk_busy / 1000 for s in samples]),
            "net_rate": _mean([s.net_rx + s.net_tx for s in samples]),
            "iowait": _mean([s.iowait / 1000 for s in samples]), "vcpus": samples[-1].ncpu,
            "mem_total_kib": samples[-1].mem_total}


def of_run(store: Any, run: dict[str, Any]) -> dict[str, Any]:
    """The run's features: the mean over its VMs of each node's means, and its hosts' figures."""
    nodes = [n for n in store.nodes(run["nodes"], kind="vm")]
    per_node: dict[str, dict[str, float]] = {}
    for node in nodes:
        samples = store.samples(node["id"], run["start"], run["end"])
        if samples:
            per_node[node["name"]] = _node_features(samples)
    if not per_node:
        raise NotFound(f"run '{run['name']}' has no samples of its nodes ({', '.join(run['nodes'])}) in its time window")
    keys = next(iter(per_node.values())).keys()
    features: dict[str, Any] = {k: _mean([f[k] for f in per_node.values()]) for k in keys}
    features["cpu_peak"] = max(f["cpu_peak"] for f in per_node.values())
    features["disk_log"] = math.log10(1 + features["disk_rate"])
    features["net_log"] = math.log10(1 + features["net_rate"])
    hosts = {n["host"] for n in nodes if n["host"] and n["name"] in per_node}
    host_features = [_node_features(s) for s in (store.samples(h["id"], run["start"], run["end"])
                                                 for h in store.nodes(hosts, kind="host")) if s]
    for key in ("cpu", "iowait", "mem", "disk_busy"):
        features[f"host_{key}"] = _mean([h[key] for h in host_features]) if host_features else None
    features["nodes"] = per_node
    features["hosts"] = sorted(hosts)
    return features


def vector(features: dict[str, Any]) -> list[float]:
    return [float(features[k]) for k in VECTOR]
