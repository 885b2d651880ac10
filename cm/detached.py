"""Background processes of a user directory (the monitor's collector, the burst agent).

One runs detached (its own session, stdin from /dev/null, output appended to ``NAME.log`` in its
folder), so it outlives the cm command that started it; it writes ``NAME.pid`` itself once it
runs, and a pid is trusted only while that process still runs that module (a stale file after a
reboot or kill -9 is ignored).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cm.errors import Conflict, ProviderError


def runs(pid: int, module: str) -> bool:
    """True while process ``pid`` is alive and runs ``python -m module``."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X") and module.encode() in cmdline


def running_pid(folder: Path, name: str, module: str) -> int | None:
    """The pid in ``folder/NAME.pid`` if that process still runs ``module``."""
    try:
        pid = int((Path(folder) / f"{name}.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if runs(pid, module) else None


Staging = Callable[[], contextlib.AbstractContextManager[object]]  # entered under the lock around a start


def ensure(folder: Path, name: str, module: str, argv: list[str], home: Path,
           wait: float = 30.0, staging: Staging = contextlib.nullcontext) -> tuple[int, bool]:
    """Start ``python -m module ARGV`` detached unless it runs: (its pid, whether this call started it).

    The one place that checks "already running": under a lock, so two cm commands at once start one.
    ``staging`` is entered under that lock around the start: the files the new process reads are the
    ones this caller wrote, never those of a command that found it running."""
    import fcntl

    folder = Path(folder)
    with open(folder / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = running_pid(folder, name, module)
        if pid is not None:
            return pid, False
        with staging():
            return _spawn(folder, name, module, argv, home, wait), True


def start(folder: Path, name: str, module: str, argv: list[str], home: Path, wait: float = 30.0,
          staging: Staging = contextlib.nullcontext) -> int:
    """Start ``python -m module ARGV`` detached; return its pid once it wrote its pid file (Conflict if it runs)."""
    pid, started = ensure(folder, name, module, argv, home, wait, staging)
    if not started:
        raise Conflict(f"the {name} already runs (pid {pid})")
    return pid


def _spawn(folder: Path, name: str, module: str, argv: list[str], home: Path, wait: float) -> int:
    """Run the process and wait until it wrote its pid file."""
    (folder / f"{name}.pid").unlink(missing_ok=True)
    log_path = folder / f"{name}.log"
    log = open(log_path, "ab")
    # The child imports the very cm this process runs (a source tree or the installed one).
    source = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "CM_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", module, *argv], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True, env=env,
                            cwd=str(folder))
    log.close()
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if running_pid(folder, name, module) == proc.pid:
            return proc.pid
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise ProviderError(f"the {name} exited at once ({tail[0] if tail else proc.returncode}); see {log_path}")
        time.sleep(0.05)
    proc.terminate()
    raise ProviderError(f"the {name} did not start within {wait:g} s; see {log_path}")


def stop(folder: Path, name: str, module: str, wait: float = 30.0) -> int | None:
    """SIGTERM (it finishes the work in flight), SIGKILL after ``wait``; its pid, None if none ran."""
    pid = running_pid(folder, name, module)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not runs(pid, module):
            return pid
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return pid


def write_pid(folder: Path, name: str) -> Path:
    """Called by the detached process once it is ready: its pid file."""
    path = Path(folder) / f"{name}.pid"
    path.write_text(f"{os.getpid()}\n")
    return path


def remove_pid(path: Path) -> None:
    """Remove our own pid file (not one a newer process wrote)."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass
