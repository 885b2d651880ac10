"""The dashboard of `cm monitor show`: per node and per cluster CPU, memory, disk and network over time.

In the terminal, one row per node (and one for all VMs together) with a
sparkline per resource and its mean and peak; as a PNG (matplotlib, an optional
extra, imported only for ``--png``), four stacked panels sharing the time axis.
SQLite does the averaging per time slice, so an hour of 20 nodes is a few
hundred rows to Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm.errors import UsageError

BARS = " ▁▂▃▄▅▆▇█"
WIDTH = 20  # sparkline cells
PNG_BINS = 600  # time slices drawn per node (half the PNG's width)
METRICS = ("cpu", "mem", "disk", "net")
UNITS = {"cpu": "%", "mem": "%", "disk": "B/s", "net": "B/s"}
TITLES = {"cpu": "CPU busy (% of its CPUs)", "mem": "memory used (%)", "disk": "disk read+write (bytes/s)",
          "net": "network in+out (bytes/s)"}
COLUMNS = ["node", "kind", "samples"] + [c for m in METRICS for c in (m, f"{m} mean/peak")]


@dataclass
class Series:
    """One node's (or all VMs') samples over a window: mean and peak, and the mean of each time slice."""

    name: str
    kind: str
    start: float  # epoch seconds
    end: float
    count: int = 0
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> (mean, peak)
    bins: dict[str, list[float | None]] = field(default_factory=dict)  # metric -> per slice

    def times(self) -> list[float]:
        """Seconds from the window's start to the middle of each slice."""
        width = len(self.bins["cpu"])
        step = (self.end - self.start) / width
        return [(i + 0.5) * step for i in range(width)]


def load(store: Any, node: dict[str, Any], start: float, end: float, width: int) -> Series | None:
    """A node's series over [start, end] in ``width`` slices (None if it has no sample there)."""
    since, until = int(start * 1000), int(end * 1000)
    summary = store.summary(node["id"], since, until)
    if not summary[0]:
        return None
    series = Series(node["name"], node["kind"], start, end, count=summary[0])
    series.stats = {m: (summary[1 + 2 * i] or 0.0, summary[2 + 2 * i] or 0.0) for i, m in enumerate(METRICS)}
    series.bins = {m: [None] * width for m in METRICS}
    for row in store.binned(node["id"], since, until, width):
        for i, metric in enumerate(METRICS):
            series.bins[metric][int(row[0])] = row[1 + i]
    return series


def all_vms(nodes: list[Series]) -> Series:
    """All VMs together: mean CPU and memory, summed disk and network, per slice."""
    vms = [n for n in nodes if n.kind == "vm"] or nodes
    total = Series("all", "cluster", vms[0].start, vms[0].end, count=sum(n.count for n in vms))
    width = len(vms[0].bins["cpu"])
    for metric in METRICS:
        column: list[float | None] = []
        for i in range(width):
            present = [v for v in (n.bins[metric][i] for n in vms) if v is not None]
            column.append(None if not present else
                          sum(present) / len(present) if metric in ("cpu", "mem") else sum(present))
        total.bins[metric] = column
        means = [n.stats[metric][0] for n in vms]
        mean = sum(means) / len(means) if metric in ("cpu", "mem") else sum(means)
        total.stats[metric] = (mean, max((v for v in column if v is not None), default=0.0))
    return total


def sparkline(points: list[float | None], top: float) -> str:
    top = top or 1.0
    return "".join(" " if p is None else BARS[min(8, max(1, round(p / top * 8))) if p > 0 else 0] for p in points)


def human(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0f}%"
    for prefix in ("", "K", "M"):
        if abs(value) < 1000:
            return f"{value:.0f}" if not prefix else f"{value:.1f}{prefix}"
        value /= 1000.0
    return f"{value:.1f}G"


def rows(nodes: list[Series]) -> list[dict[str, Any]]:
    """Table rows: a sparkline and mean/peak per resource, per node and for all VMs together."""
    everything = [*nodes, all_vms(nodes)] if len(nodes) > 1 else nodes
    tops = {m: max([max((v for v in n.bins[m] if v is not None), default=0.0) for n in everything] + [0.0])
            for m in METRICS}
    tops["cpu"] = tops["mem"] = 100.0
    table = []
    for node in everything:
        row: dict[str, Any] = {"node": node.name, "kind": node.kind, "samples": node.count}
        for metric in METRICS:
            mean, peak = node.stats[metric]
            row[metric] = sparkline(node.bins[metric], tops[metric])
            row[f"{metric} mean/peak"] = f"{human(mean, UNITS[metric])}/{human(peak, UNITS[metric])}"
        table.append(row)
    return table


def png(nodes: list[Series], path: Path, title: str, size: tuple[int, int] = (1200, 900)) -> None:
    """Four panels (CPU, memory, disk, network) with a line per node and all VMs' in black."""
    plt = pyplot()
    dpi = 100
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, sharex=True)
    total = all_vms(nodes) if len(nodes) > 1 else None
    for ax, metric in zip(axes, METRICS):
        for node in [*nodes, *([total] if total else [])]:
            points = [(t, v) for t, v in zip(node.times(), node.bins[metric]) if v is not None]
            style = {"color": "black", "linewidth": 2} if node is total else {"linewidth": 1}
            label = (("all VMs (mean)" if metric in ("cpu", "mem") else "all VMs (sum)") if node is total
                     else f"{node.name}{' (host)' if node.kind == 'host' else ''}")
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label, **style)
        ax.set_ylabel(UNITS[metric])
        ax.set_title(TITLES[metric], fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        if metric in ("cpu", "mem"):
            ax.set_ylim(0, 105)
    axes[-1].set_xlabel("seconds since the start of the window")
    axes[0].legend(fontsize=7, ncol=4, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), or a clear error without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--png needs matplotlib: pip install 'cm[monitor]'") from None
    return plt
