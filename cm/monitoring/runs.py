"""Runs: a time window on a set of nodes, or a Slurm job (its nodes and times from sacct, live figures from sstat).

A job's run is joined to the samples of the nodes it ran on between its start
and end; Slurm's own accounting (CPU time, peak RSS, disk bytes) is kept beside it.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from typing import Any

from cm.errors import NotFound, ProviderError, UsageError

COLUMNS = ["name", "source", "label", "nodes", "start", "end", "seconds", "metrics"]
SACCT_FIELDS = ("JobID", "JobName", "NodeList", "Start", "End", "State", "AllocCPUS", "TotalCPU", "MaxRSS",
                "MaxDiskRead", "MaxDiskWrite")
SSTAT_FIELDS = ("JobID", "AveCPU", "MaxRSS", "MaxDiskRead", "MaxDiskWrite")


def _slurm(argv: list[str]) -> list[dict[str, str]]:
    """Rows of a Slurm client's parsable (-P) output, by the fields asked with -o."""
    fields = argv[argv.index("-o") + 1].split(",")
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ProviderError(f"{argv[0]} not found: Slurm's client tools are needed for --job") from None
    if done.returncode != 0:
        raise ProviderError(f"{argv[0]} failed: {(done.stderr.strip().splitlines() or ['exit %d' % done.returncode])[-1]}")
    return [dict(zip(fields, line.split("|"))) for line in done.stdout.splitlines() if line.strip()]


def _epoch_ms(text: str) -> int | None:
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None  # Unknown, None: the job has not started or not ended


def from_slurm(job: str, name: str | None = None) -> dict[str, Any]:
    """The run of Slurm job ``job``: nodes, start and end from sacct; sstat's figures while it runs."""
    import hostlist

    if not job.replace("_", "").isdigit():
        raise UsageError(f"bad Slurm job id '{job}'")
    rows = _slurm(["sacct", "-j", job, "-n", "-P", "-o", ",".join(SACCT_FIELDS)])
    main = next((r for r in rows if r["JobID"] == job), None)
    if main is None:
        raise NotFound(f"Slurm knows no job {job} (sacct)")
    start = _epoch_ms(main["Start"])
    if start is None:
        raise UsageError(f"job {job} has not started yet ({main['State']})")
    end = _epoch_ms(main["End"]) or int(time.time() * 1000)
    steps = [r for r in rows if r["JobID"] != job]
    metrics = {"state": main["State"], "alloc_cpus": main["AllocCPUS"], "total_cpu": main["TotalCPU"],
               "max_rss": max((r["MaxRSS"] for r in steps if r["MaxRSS"]), default="", key=_bytes),
               "max_disk_read": max((r["MaxDiskRead"] for r in steps if r["MaxDiskRead"]), default="", key=_bytes),
               "max_disk_write": max((r["MaxDiskWrite"] for r in steps if r["MaxDiskWrite"]), default="", key=_bytes)}
    if main["State"].startswith("RUNNING"):
        live = _slurm(["sstat", "-j", job, "-a", "-n", "-P", "-o", ",".join(SSTAT_FIELDS)])
        if live:
            metrics.update({"ave_cpu": live[-1]["AveCPU"], "max_rss": live[-1]["MaxRSS"] or metrics["max_rss"]})
    nodes = hostlist.expand_hostlist(main["NodeList"]) if main["NodeList"] not in ("", "None assigned") else []
    return {"name": name or f"job-{job}", "nodes": nodes, "start": start, "end": end, "source": f"slurm:{job}",
            "metrics": metrics}


def _bytes(text: str) -> float:
    """Slurm's sizes (1234K, 5.5M, 2G) as bytes, for picking the largest."""
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        return float(text[:-1]) * scale[text[-1]] if text and text[-1] in scale else float(text or 0)
    except ValueError:
        return 0.0


def display(run: dict[str, Any]) -> dict[str, Any]:
    """A run as `run list` shows it."""
    import hostlist

    fmt = "%Y-%m-%d %H:%M:%S"
    return {"name": run["name"], "source": run.get("source", "window"), "label": run.get("label", ""),
            "nodes": hostlist.collect_hostlist(run["nodes"]),
            "start": time.strftime(fmt, time.localtime(run["start"] / 1000)),
            "end": time.strftime(fmt, time.localtime(run["end"] / 1000)),
            "seconds": round((run["end"] - run["start"]) / 1000), "metrics": run.get("metrics", {})}
