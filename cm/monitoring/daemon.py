"""Starting, stopping and inspecting the collector process of a user directory.

The collector runs detached (cm.detached: ``monitor/collector.log``, ``monitor/collector.pid``),
so it outlives the `cm monitor start` that started it.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cm import detached
from cm.errors import Conflict

MODULE = "cm.monitoring.collector"
STAGED = "collector.next.json"  # settings of a collector being started


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
    """Start the collector; return its pid once it runs (it writes its pid file after loading).

    Its settings are staged beside ``collector.json``, which the new collector takes over as it
    starts: a collector that already runs (detached.start refuses then) keeps its own.
    """
    folder = monitor_dir(home)
    staged = {"targets": targets, "interval": interval, "retention": retention, "started": time.time()}
    try:
        return detached.start(folder, "collector", MODULE, [str(home)], home, wait,
                              staging=lambda: _staged(folder / STAGED, staged))
    except Conflict as exc:
        raise Conflict(f"{exc}; `cm monitor stop` first") from None


@contextlib.contextmanager
def _staged(path: Path, settings: dict[str, Any]) -> Iterator[None]:
    """The settings staged for the collector being started (under detached's lock: no other start's)."""
    path.write_text(json.dumps(settings))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # taken over by a collector that started


def take_settings(folder: Path) -> dict[str, Any]:
    """The settings `start` staged, now this collector's (``collector.json``), else the ones it has."""
    settings = Path(folder) / "collector.json"
    with contextlib.suppress(FileNotFoundError):
        (Path(folder) / STAGED).replace(settings)
    return json.loads(settings.read_text())


def stop(home: Path, wait: float = 30.0) -> int | None:
    """Ask the collector to stop (SIGTERM: it finishes the round in flight); return its pid, None if none ran."""
    return detached.stop(monitor_dir(home), "collector", MODULE, wait)
