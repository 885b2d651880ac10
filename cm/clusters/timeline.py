"""Provisioning timelines: each node's phases as seconds from the launch's start, as a table,
a terminal chart, and (matplotlib, optional) a PNG comparing launches side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cm.clusters.model import PHASES
from cm.errors import UsageError

COLUMNS = ["cluster", "node", "role", "state", *PHASES]
# One character per phase interval: requested->created, created->running, running->configured, ->ready.
BAR = {"created": "-", "running": "=", "configured": "#", "ready": "*"}
COLORS = {"created": "#9ecae1", "running": "#4292c6", "configured": "#fd8d3c", "ready": "#31a354"}


def start(cluster: dict[str, Any]) -> float:
    times = [n["times"]["requested"] for n in cluster["nodes"] if "requested" in n["times"]]
    return min(times) if times else float(cluster.get("started", 0))


def rows(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per node that was requested: seconds since the launch's first request."""
    t0 = start(cluster)
    out = []
    for node in cluster["nodes"]:
        if "requested" not in node["times"]:
            continue
        row = {"cluster": cluster["name"], "node": node["name"], "role": node["role"], "state": node["state"]}
        row.update({p: round(node["times"][p] - t0, 2) if p in node["times"] else "" for p in PHASES})
        out.append(row)
    return out


def chart(cluster: dict[str, Any], width: int = 50) -> str:
    """A text Gantt chart: '-' created, '=' running, '#' configured, '*' ready (left edge: requested)."""
    table = rows(cluster)
    if not table:
        return f"{cluster['name']}: no node was requested yet"
    end = max(float(r[p]) for r in table for p in PHASES if r[p] != "") or 1.0
    scale = width / end
    label = max(len(r["node"]) for r in table)
    lines = [f"{cluster['name']}  (0 .. {end:.1f} s; from requested: - to created, = to running, # to configured, * to ready)"]
    for r in table:
        bar = [" "] * (width + 1)
        previous = float(r["requested"])
        for phase in PHASES[1:]:
            if r[phase] == "":
                break
            for i in range(int(previous * scale), max(int(float(r[phase]) * scale), int(previous * scale) + 1)):
                bar[min(i, width)] = BAR[phase]
            previous = float(r[phase])
        lines.append(f"{r['node']:<{label}} |{''.join(bar).rstrip()}")
    return "\n".join(lines)


def png(clusters: list[dict[str, Any]], path: Path) -> None:
    """Draw the launches side by side (one panel each, the same time axis) into ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UsageError("--png needs matplotlib: pip install 'cm[charts]'") from exc
    tables = [rows(c) for c in clusters]
    end = max([float(r[p]) for t in tables for r in t for p in PHASES if r[p] != ""] or [1.0])
    height = max(2.5, 0.35 * max(len(t) for t in tables) + 1.5)
    fig, axes = plt.subplots(1, len(clusters), figsize=(6 * len(clusters), height), squeeze=False, sharex=True)
    for ax, cluster, table in zip(axes[0], clusters, tables):
        for y, r in enumerate(table):
            previous = float(r["requested"])
            for phase in PHASES[1:]:
                if r[phase] == "":
                    break
                ax.broken_barh([(previous, max(float(r[phase]) - previous, end / 400))], (y - 0.4, 0.8),
                               color=COLORS[phase], label=phase if y == 0 else None)
                previous = float(r[phase])
        ax.set_yticks(range(len(table)), [r["node"] for r in table])
        ax.invert_yaxis()
        ax.set_xlim(0, end * 1.05)
        ax.set_xlabel("seconds since the first request")
        ax.set_title(f"{cluster['name']} ({cluster['recipe']}, {cluster['state']})")
    axes[0][0].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        plt.close(fig)
