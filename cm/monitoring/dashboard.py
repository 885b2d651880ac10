"""The dashboard of `cm monitor show`: per node and per cluster CPU, memory, disk and network over time.

In the terminal, one row per node (and one for all of them) with a sparkline
per resource and its mean and peak; as a PNG (matplotlib, an optional extra,
imported only for ``--png``), four stacked panels sharing the time axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm.errors import UsageError
from cm.monitoring.sample import Sample

BARS = " ▁▂▃▄▅▆▇█"
WIDTH = 20  # sparkline cells
METRICS = ("cpu", "mem", "disk", "net")
UNITS = {"cpu": "%", "mem": "%", "disk": "B/s", "net": "B/s"}
TITLES = {"cpu": "CPU busy (% of its CPUs)", "mem": "memory used (%)", "disk": "disk read+write (bytes/s)",
          "net": "network in+out (bytes/s)"}


def values(sample: Sample) -> tuple[float, float, float, float]:
    """(cpu %, memory %, disk B/s, net B/s) of one sample."""
    mem = 100.0 * sample.mem_used / sample.mem_total if sample.mem_total else 0.0
    return sample.cpu / 10.0, mem, float(sample.disk_rd + sample.disk_wr), float(sample.net_rx + sample.net_tx)


@dataclass
class Series:
    """One node's (or the cluster's) samples over the window, binned for the terminal."""

    name: str
    kind: str
    times: list[float] = field(default_factory=list)  # epoch seconds
    data: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})

    def add(self, sample: Sample) -> None:
        self.times.append(sample.t / 1000.0)
        for metric, value in zip(METRICS, values(sample)):
            self.data[metric].append(value)

    def summary(self, metric: str) -> tuple[float, float]:
        column = self.data[metric]
        return (sum(column) / len(column), max(column)) if column else (0.0, 0.0)


def binned(series: Series, metric: str, start: float, end: float, width: int = WIDTH) -> list[float | None]:
    """Mean of each of ``width`` equal time slices (None where a slice has no sample)."""
    sums, counts = [0.0] * width, [0] * width
    span = max(end - start, 1e-9)
    for t, v in zip(series.times, series.data[metric]):
        i = min(width - 1, max(0, int((t - start) * width / span)))
        sums[i] += v
        counts[i] += 1
    return [s / c if c else None for s, c in zip(sums, counts)]


def sparkline(points: list[float | None], top: float) -> str:
    top = top or 1.0
    return "".join(" " if p is None else BARS[min(8, max(1, round(p / top * 8)) if p > 0 else 0)] for p in points)


def cluster_series(nodes: list[Series], start: float, end: float, width: int) -> Series:
    """All VMs together: mean CPU and memory, summed disk and network, per time slice."""
    total = Series("all", "cluster")
    vms = [n for n in nodes if n.kind == "vm"] or nodes
    step = (end - start) / width
    columns = {m: [binned(n, m, start, end, width) for n in vms] for m in METRICS}
    for i in range(width):
        present = {m: [c[i] for c in columns[m] if c[i] is not None] for m in METRICS}
        if not present["cpu"]:
            continue
        total.times.append(start + (i + 0.5) * step)
        for m in METRICS:
            vals = present[m]
            total.data[m].append(sum(vals) / len(vals) if m in ("cpu", "mem") else sum(vals))
    return total


def human(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.0f}%"
    for prefix in ("", "K", "M", "G"):
        if abs(value) < 1000 or prefix == "G":
            return f"{value:.0f}{prefix}" if not prefix else f"{value:.1f}{prefix}"
        value /= 1000.0
    return f"{value:.1f}G{unit}"


def rows(nodes: list[Series], start: float, end: float, width: int = WIDTH) -> list[dict[str, Any]]:
    """Table rows: a sparkline and mean/peak per resource, per node and for all nodes together."""
    everything = [*nodes, cluster_series(nodes, start, end, width)] if len(nodes) > 1 else nodes
    tops = {m: max([max(n.data[m], default=0.0) for n in everything] + [0.0]) for m in METRICS}
    tops["cpu"] = tops["mem"] = 100.0
    table = []
    for node in everything:
        row: dict[str, Any] = {"node": node.name, "kind": node.kind, "samples": len(node.times)}
        for metric in METRICS:
            mean, peak = node.summary(metric)
            row[metric] = sparkline(binned(node, metric, start, end, width), tops[metric])
            row[f"{metric} mean/peak"] = f"{human(mean, UNITS[metric])}/{human(peak, UNITS[metric])}"
        table.append(row)
    return table


COLUMNS = ["node", "kind", "samples"] + [c for m in METRICS for c in (m, f"{m} mean/peak")]


def png(nodes: list[Series], start: float, end: float, path: Path, title: str, size: tuple[int, int] = (1200, 900)) -> None:
    """Four panels (CPU, memory, disk, network) with a line per node and the cluster's in black."""
    plt = pyplot()
    dpi = 100
    fig, axes = plt.subplots(len(METRICS), 1, figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, sharex=True)
    total = cluster_series(nodes, start, end, max(10, min(200, int(end - start)))) if len(nodes) > 1 else None
    for ax, metric in zip(axes, METRICS):
        for node in nodes:
            ax.plot([t - start for t in node.times], node.data[metric], linewidth=1,
                    label=f"{node.name}{' (host)' if node.kind == 'host' else ''}")
        if total is not None and total.times:
            label = "all VMs (mean)" if metric in ("cpu", "mem") else "all VMs (sum)"
            ax.plot([t - start for t in total.times], total.data[metric], color="black", linewidth=2, label=label)
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
