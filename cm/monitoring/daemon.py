"""Starting, stopping and inspecting the collector process of a user directory.

The collector runs detached (its own session, stdin from /dev/null, output to
``monitor/collector.log``), so it outlives the `cm monitor start` that started
it; ``monitor/collector.pid`` names it, and a pid is trusted only while that
process still runs the collector (a stale file after a reboot or kill -9 is ignored).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cm.errors import Conflict, ProviderError

MODULE = "cm.monitoring.collector"


def monitor_dir(home: Path) -> Path:
    path = Path(home) / "monitor"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _is_collector(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and MODULE.encode() in cmdline


def running_pid(home: Path) -> int | None:
    """The pid of this user directory's collector, if one runs."""
    try:
        pid = int((monitor_dir(home) / "collector.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _is_collector(pid) else None


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
    (folder / "collector.pid").unlink(missing_ok=True)
    (folder / "collector.json").write_text(json.dumps({"targets": targets, "interval": interval,
                                                       "retention": retention, "started": time.time()}))
    log = open(folder / "collector.log", "ab")
    # The collector imports the very cm this process runs (a source tree or the installed one).
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "CM_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", MODULE, str(home)], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, env=env,
                            cwd=str(folder))
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if running_pid(home) == proc.pid:
            return proc.pid
        if proc.poll() is not None:
            tail = (folder / "collector.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise ProviderError(f"the collector exited at once ({tail[0] if tail else proc.returncode}); "
                                f"see {folder / 'collector.log'}")
        time.sleep(0.05)
    proc.terminate()
    raise ProviderError(f"the collector did not start within {wait:g} s; see {folder / 'collector.log'}")


def stop(home: Path, wait: float = 30.0) -> int | None:
    """Ask the collector to stop (SIGTERM: it finishes the round in flight); return its pid, None if none ran."""
    pid = running_pid(home)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not _is_collector(pid):
            return pid
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # stuck in a cloud call: at most the round in flight is lost
    return pid
