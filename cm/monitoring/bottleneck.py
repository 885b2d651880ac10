"""Naming a run's bottleneck: the resource under pressure while the others idle, and whether VM or host.

A resource's pressure: CPU demand (busy + waiting for a host CPU, of the VM's
vCPUs), memory in use, disk requests in flight (1 = always one outstanding),
network rate against the busiest run learnt (on a log scale: rates span decades).  Pressures alone do not compare
across resources (under emulation every I/O also costs CPU), so each is
measured against the learnt runs: the bottleneck is the resource on which the
run stands out most (by STANDS_OUT standard deviations); on a resource where
the learnt runs all look alike, a pressure of SATURATED or more stands out.
A CPU bottleneck is the host's when the VM waited for a host CPU (STARVED) on
a host whose CPUs were busy (SATURATED); otherwise the VM wants more vCPUs.
"""

from __future__ import annotations

import math
from typing import Any

RESOURCES = ("cpu", "memory", "disk", "network")
STANDS_OUT = 0.75  # standard deviations above the learnt runs
UNIFORM = 0.05  # learnt runs closer than this on a resource tell nothing about it
SATURATED = 0.8
STARVED = 0.25  # a VM that waited this share of the CPU time it wanted was starved by its host
NET_FLOOR = 1e6  # B/s: runs that all move less than this are not network-bound however alike they are


def pressures(features: dict[str, Any], net_peak: float) -> dict[str, float]:
    return {"cpu": features["demand"], "memory": features["mem"], "disk": min(1.0, features["disk_busy"]),
            "network": min(1.0, math.log10(1 + features["net_rate"]) / max(math.log10(1 + net_peak), 1.0))}


def reference(described: list[dict[str, Any]]) -> dict[str, Any]:
    """What the learnt runs' pressures look like: the yardstick of :func:`find`."""
    net_peak = max([NET_FLOOR] + [f["net_rate"] for f in described])
    values = [pressures(f, net_peak) for f in described]
    mean = {r: sum(v[r] for v in values) / len(values) for r in RESOURCES}
    std = {r: math.sqrt(sum((v[r] - mean[r]) ** 2 for v in values) / len(values)) for r in RESOURCES}
    return {"net_peak": net_peak, "mean": mean, "std": std}


def _level(resource: str, f: dict[str, Any]) -> tuple[str, str]:
    """('vm' or 'host', why) for the bottleneck resource."""
    if resource == "cpu":
        host_cpu = f.get("host_cpu")
        # Waiting for a host CPU points at the host only while the host has none to spare: on a host
        # with idle CPUs the wait is scheduling noise (under emulation a busy vCPU always waits a little).
        if f["steal"] >= STARVED * f["demand"] and (host_cpu is None or host_cpu >= SATURATED):
            busy = "" if host_cpu is None else f"; the host's CPUs were {host_cpu:.0%} busy"
            return "host", (f"its vCPUs waited for a host CPU {f['steal']:.0%} of the time and ran "
                            f"{f['cpu']:.0%}{busy}")
        spare = "" if host_cpu is None else f" while the host's CPUs were {host_cpu:.0%} busy"
        return "vm", f"its vCPUs were busy {f['cpu']:.0%} of the time{spare}"
    if resource == "memory":
        if (f.get("host_mem") or 0) >= 0.9:
            return "host", f"the host has {f['host_mem']:.0%} of its memory in use"
        return "vm", f"the guest has {f['mem']:.0%} of its memory in use"
    if resource == "disk":
        if (f.get("host_disk_busy") or 0) >= 1.0 or (f.get("host_iowait") or 0) >= 0.2:
            return "host", (f"the host's disks had {f['host_disk_busy'] or 0:.1f} requests in flight, "
                            f"iowait {f['host_iowait'] or 0:.0%}")
        return "vm", f"{f['disk_busy']:.2f} requests in flight on the VM's disks while the host's disks are not busy"
    return "vm", f"{f['net_rate']:.0f} B/s through its NICs"


def _score(pressure: float, mean: float, std: float) -> float:
    """How far the run stands out on a resource: against the learnt runs where they vary on it; where they all
    look alike (one kind of run learnt), against saturation itself (SATURATED and above stands out)."""
    if std >= UNIFORM:
        return (pressure - mean) / std
    return (pressure - SATURATED) / UNIFORM + STANDS_OUT


def find(features: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """``bottleneck`` (a resource or none), ``level`` (vm, host) and ``why``, from the run's features."""
    pressure = pressures(features, ref["net_peak"])
    scores = {r: _score(pressure[r], ref["mean"][r], ref["std"][r]) for r in RESOURCES}
    top = max(scores, key=lambda r: scores[r])
    shown = ", ".join(f"{r} {pressure[r]:.2f}" for r in RESOURCES)
    if scores[top] < STANDS_OUT:
        return {"bottleneck": "none", "level": "", "why": "no resource stands out against the learnt runs",
                "pressure": shown}
    level, why = _level(top, features)
    return {"bottleneck": top, "level": level, "why": why, "pressure": shown}


def figures(f: dict[str, Any]) -> dict[str, Any]:
    """The run's figures as `check` shows them."""
    from cm.monitoring.dashboard import human

    def share(value: float | None) -> str:
        return "" if value is None else f"{value:.0%}"

    return {"cpu": share(f["cpu"]), "steal": share(f["steal"]), "mem": share(f["mem"]),
            "disk": human(f["disk_rate"], "B/s"), "disk_busy": round(f["disk_busy"], 2),
            "net": human(f["net_rate"], "B/s"), "host_cpu": share(f.get("host_cpu")),
            "host_iowait": share(f.get("host_iowait")), "nodes": ", ".join(f["nodes"]), "hosts": ", ".join(f["hosts"])}
