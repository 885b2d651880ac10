"""What cm keeps of an elastic cluster: its settings and each cloud node's VM, in
``CM_HOME/elastic/CLUSTER/state.json`` (0600, written atomically under a lock: slurmctld may run
several resume and suspend programs at once), and a log of every action (``actions.log``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cm.errors import NotFound


def directory(home: Path, cluster: str) -> Path:
    return Path(home) / "elastic" / cluster


def exists(home: Path, cluster: str) -> bool:
    return (directory(home, cluster) / "state.json").exists()


def load(home: Path, cluster: str) -> dict[str, Any]:
    """The cluster's state; NotFound when bursting was never enabled for it."""
    try:
        return json.loads((directory(home, cluster) / "state.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"bursting is not enabled for cluster '{cluster}' "
                       "(cm slurm burst enable SLURM_CONF --cloud CLOUD --max N)") from None


@contextmanager
def changing(home: Path, cluster: str, fresh: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The state, locked against other cm processes, written back when the block ends without error."""
    from filelock import FileLock

    from cm.config import write_private

    where = directory(home, cluster)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    with FileLock(str(where / ".lock")):
        state = fresh if fresh is not None else load(home, cluster)
        yield state
        write_private(where / "state.json", json.dumps(state, indent=1, sort_keys=True) + "\n")


def log(home: Path, cluster: str, text: str) -> None:
    """One line in the cluster's action log (never a secret: callers pass names and reasons)."""
    where = directory(home, cluster)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(where / "actions.log", "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {text}\n")


def actions(home: Path, cluster: str) -> list[str]:
    try:
        return (directory(home, cluster) / "actions.log").read_text().splitlines()
    except FileNotFoundError:
        return []


def node_hours(node: dict[str, Any], now: float | None = None) -> float:
    """Hours the node's VMs have existed: finished ones plus the one up now."""
    now = time.time() if now is None else now
    running = now - node["since"] if node.get("since") else 0.0
    return round(node.get("hours", 0.0) + running / 3600, 4)
