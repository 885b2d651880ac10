"""Process helpers for the test machinery: poll for a real signal, kill exactly what we started.

``wait_for(what, check, timeout)`` polls ``check()`` until truthy (TimeoutError names ``what``).
``kill_tree(proc)`` ends a Popen started with ``start_new_session=True``: its process group and
every descendant (sshd and slurmd children that called setsid), TERM then KILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
