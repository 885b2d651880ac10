"""Starting, stopping and inspecting the collector process of a user directory.

The collector runs detached (cm.detached: ``monitor/collector.log``, ``monitor/collector.pid``),
so it outlives the `cm monitor start` that started it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cm import detached
from cm.errors import Conflict

MODULE = "cm.monitoring.collector"


def monitor_dir(home: Path) -> Path:
    path = Path(home) / "monitor"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def running_pid(home: Path) -> int | None:
    """The pid of this user directory's collector, if one runs."""
    return detached.running_pid(monitor_dir(home), "collector", MODULE)


def settings(home: Path) -> dict[str, Any]:
    try:
        return json.loads((monitor_dir(home) / "collector.json").read_text())
    except (OSError, ValueError):
        return {}


def start(home: Path, targets: dict[str, list[str]], interval: float, retention: float,
          wait: float = 30.0) -> int:
    """Start the collector; return its pid once it runs (it writes its pid file after loading)."""
    pid = running_pid(home)
    if pid is not None:
        raise Conflict(f"the collector already runs (pid {pid}); `cm monitor stop` first")
    folder = monitor_dir(home)
    (folder / "collector.json").write_text(json.dumps({"targets": targets, "interval": interval,
                                                       "retention": retention, "started": time.time()}))
    return detached.start(folder, "collector", MODULE, [str(home)], home, wait)


def stop(home: Path, wait: float = 30.0) -> int | None:
    """Ask the collector to stop (SIGTERM: it finishes the round in flight); return its pid, None if none ran."""
    return detached.stop(monitor_dir(home), "collector", MODULE, wait)
