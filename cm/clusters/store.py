"""Clusters in the mirror, their node VMs' tags, and their secrets (a 0600 file, never the mirror)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cm.clusters.model import now_iso
from cm.errors import NotFound

KIND = "cluster"


def get(ctx: Any, cloud: str, name: str) -> dict[str, Any] | None:
    record = ctx.mirror.get(KIND, cloud, name)
    return {k: v for k, v in record.items() if k not in ("kind", "_schema")} if record else None


def known(ctx: Any, cloud: str, name: str) -> dict[str, Any]:
    record = get(ctx, cloud, name)
    if record is None:
        raise NotFound(f"unknown cluster '{name}' on cloud '{cloud}' (see `cm cluster list`)")
    return record


def records(ctx: Any, clouds: list[str]) -> list[dict[str, Any]]:
    return [r for cloud in clouds for r in ctx.mirror.records(KIND, cloud)]


def save(ctx: Any, cloud: str, cluster: dict[str, Any], vms: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
    """Write the cluster and any node VM records in one atomic mirror write."""
    cluster["updated"] = now_iso()
    with ctx.mirror.transaction():
        for vm in vms:
            ctx.mirror.put("vm", cloud, vm)
        ctx.mirror.put(KIND, cloud, cluster)


def tagged(vm: Any, cluster: str, role: str) -> dict[str, Any]:
    """A provider's VM as a mirror record carrying its cluster and role."""
    record = vm.to_dict() if hasattr(vm, "to_dict") else dict(vm)
    return {**record, "cluster": cluster, "role": role}


def forget(ctx: Any, cloud: str, cluster: dict[str, Any]) -> None:
    """Drop the cluster, its node VMs and its group from the mirror, and its secrets from disk."""
    names = [n["name"] for n in cluster["nodes"]]
    with ctx.mirror.transaction():
        ctx.mirror.remove("vm", cloud, names)
        ctx.mirror.remove(KIND, cloud, [cluster["name"]])
        if cluster.get("group"):
            from cm.groups import keep_only

            keep_only(ctx, cloud, {r["name"] for r in ctx.mirror.records("vm", cloud)})
    known_hosts(ctx, cloud, cluster["name"]).unlink(missing_ok=True)
    path = secrets_path(ctx, cloud, cluster["name"])
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:
        pass


# -- secrets -----------------------------------------------------------------------------------
def secrets_path(ctx: Any, cloud: str, name: str) -> Path:
    return Path(ctx.home) / "clusters" / cloud / f"{name}.secrets.json"


def known_hosts(ctx: Any, cloud: str, name: str) -> Path:
    """The ssh known-hosts file of the cluster's nodes (ssh makes it on first contact)."""
    return Path(ctx.home) / "clusters" / cloud / f"{name}.known_hosts"


def secrets(ctx: Any, cloud: str, name: str, wanted: list[str]) -> dict[str, str]:
    """The cluster's secrets, generated fresh the first time (so a resumed launch reuses them)."""
    path = secrets_path(ctx, cloud, name)
    try:
        have: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        have = {}
    missing = [w for w in wanted if w not in have]
    if missing:
        import base64
        import secrets as random

        have.update({w: base64.b64encode(random.token_bytes(1024)).decode() for w in missing})
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(have))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    return {w: have[w] for w in wanted}
