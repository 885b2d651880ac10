"""Process helpers for the test machinery: poll for a real signal, kill exactly what we started.

``wait_for(what, check, timeout)`` polls ``check()`` until truthy (TimeoutError names ``what``).
``kill_tree(proc)`` ends a Popen started with ``start_new_session=True``: its process group and
every descendant (sshd and slurmd children that called setsid), TERM then KILL.
``reap_stale(prefix, kind)`` kills what a crashed run with the same prefix left (processes naming
``/tmp/PREFIX-KIND-*``) and removes those dirs; the fixtures call it before they start.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def wait_for(what: str, check, timeout: float = 60.0, interval: float = 0.2):
    """Poll ``check()`` until it returns something truthy; raise naming ``what`` at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (read from /proc), children before grandchildren."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_pids(pids: list[int], sig: int) -> None:
    """Send ``sig`` to each pid that still exists."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_tree(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """TERM then KILL ``proc``'s process group and all its descendants; reap ``proc``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        tree = descendants(proc.pid)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        signal_pids(tree, sig)
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # stragglers of the group after the leader died
    except ProcessLookupError:
        pass


def kill_naming(marker: str) -> None:
    """Kill every process (but this one and its parent) naming ``marker`` in argv or environment."""
    mine = {os.getpid(), os.getppid()}
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) in mine:
            continue
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in text:
            found.append(int(proc.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signal_pids(found, sig)
        deadline = time.monotonic() + 5
        while any(Path(f"/proc/{pid}").exists() for pid in found) and time.monotonic() < deadline:
            time.sleep(0.05)


def reap_stale(prefix: str, kind: str) -> None:
    """Kill processes and remove temp dirs a crashed run with the same prefix left behind.

    Such processes name ``TMP/PREFIX-KIND-*`` in their command line or environment (SLURM_CONF).
    """
    marker = f"{tempfile.gettempdir()}/{prefix}-{kind}-"
    kill_naming(marker)
    for path in glob.glob(glob.escape(marker) + "*"):
        shutil.rmtree(path, ignore_errors=True)
