"""Clusters cm launched with its Slurm recipe, seen as slurm clouds (the register_clouds hook).

A cluster record in the mirror (kind ``cluster``, written by :mod:`cm.clusters`)
whose recipe is ``slurm`` and whose state is ``ready`` (or ``degraded``: it still
runs jobs) becomes a cloud of kind slurm named after the cluster, its login host
the address in ``outputs.login`` (else the head node's public, then private,
address), its user and key from ``outputs``/``params`` when the recipe set them.

This runs on every command that looks up a cloud, so it must cost nothing:
the clouds found are kept in a small JSON file next to the mirror and recomputed
only when the mirror file changed.
"""

from __future__ import annotations

import json
from typing import Any

USABLE = ("ready", "degraded")


def cloud_of(cluster: dict[str, Any]) -> dict[str, Any] | None:
    """The slurm cloud settings of one cluster record, or None when it is no usable Slurm cluster."""
    if cluster.get("recipe") != "slurm" or cluster.get("state") not in USABLE:
        return None
    outputs, params = cluster.get("outputs") or {}, cluster.get("params") or {}
    nodes = [n for n in cluster.get("nodes") or [] if n.get("state") == "ready"]
    head = nodes[0] if nodes else {}
    host = outputs.get("login") or head.get("public") or head.get("address")
    if not host:
        return None
    conf: dict[str, Any] = {"kind": "slurm", "host": host, "cluster": cluster.get("name", ""),
                            "cluster_cloud": cluster.get("cloud", "")}
    for key in ("user", "port", "jump", "ssh_config", "known_hosts"):
        if outputs.get(key) or params.get(key):
            conf[key] = outputs.get(key) or params.get(key)
    key = str(outputs.get("key") or params.get("key") or "")
    if key:
        conf["key"] = key[:-4] if key.endswith(".pub") else key  # ssh wants the private half
    return conf


def clouds_from_mirror(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every usable Slurm cluster of a mirror file's data, by cluster name."""
    found: dict[str, dict[str, Any]] = {}
    for record in (data.get("cluster") or {}).values():
        conf = cloud_of(record)
        if conf:
            found.setdefault(str(record["name"]), conf)
    return found


def launched_clusters() -> dict[str, dict[str, Any]]:
    """The hook's source: slurm clouds for the clusters in this user's mirror."""
    from cm.config import home, write_private

    directory = home()
    mirror = directory / "mirror.json"
    try:
        stat = mirror.stat()
    except FileNotFoundError:
        return {}
    key = [stat.st_ino, stat.st_mtime_ns, stat.st_size]
    cache = directory / ".cache" / "slurm-clusters.json"
    try:
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return _tagged(saved["clouds"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        raw = mirror.read_bytes()
        # A mirror of thousands of jobs takes 50-100 ms to parse; one with no Slurm cluster need not be.
        maybe = b'"recipe":"slurm"' in raw or b'"recipe": "slurm"' in raw
        found = clouds_from_mirror(json.loads(raw)) if maybe else {}
    except (OSError, ValueError, AttributeError):
        return {}  # an unreadable mirror is the mirror's own business to report
    try:
        cache.parent.mkdir(mode=0o700, exist_ok=True)
        write_private(cache, json.dumps({"key": key, "clouds": found}))
    except OSError:
        pass
    return _tagged(found)


def _tagged(clouds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Say where these clouds come from (`cm cloud list` shows it)."""
    return {name: {**conf, "source": "cluster"} for name, conf in clouds.items()}
