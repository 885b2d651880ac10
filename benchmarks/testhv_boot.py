"""`cm vm boot --n N` on the default local cloud: libvirt's test hypervisor, the fallback cm uses
where no libvirt daemon runs.  Targets: 1,000 VMs in at most 10 s, 10,000 in at most 10x that.

Each boot is the installed `cm` in its own process and a fresh CM_HOME, as a user
runs it; the figures are wall time and the process's peak memory, with ratios
against `--n 50` measured in the same run.  A last boot adds 50 VMs to the
10,000 already there: it costs one read and one write of their state more than 50
into an empty cloud, not a cost per VM (which was quadratic before).  Where a
libvirt daemon answers on this machine, the boots run in a private mount
namespace that hides its socket, so cm falls back as it would without one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.run import cm_command  # noqa: E402

SOCKET_DIR = Path("/run/libvirt")


def _hide_daemon(command: list[str]) -> list[str]:
    """``command`` where no system libvirtd can be reached (a private mount namespace, as root)."""
    if not (SOCKET_DIR / "libvirt-sock").exists():
        return command
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise SystemExit("a libvirt daemon runs here and cannot be hidden (needs root and unshare): "
                         "cm would use it instead of the test hypervisor")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs none {SOCKET_DIR} && exec "$@"', "sh", *command]


def run_cm(home: Path, *words: str) -> tuple[float, float, str]:
    """(seconds, peak MiB, stdout) of one `cm WORDS` process."""
    env = {**os.environ, "CM_HOME": str(home / "cm"), "HOME": str(home)}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(_hide_daemon([*cm_command(), *words]), env=env, stdout=out, stderr=err, cwd=home)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory, not all children's
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"cm {' '.join(words)} failed ({proc.returncode}): {err.read().strip()[-600:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def boot(home: Path, count: int) -> tuple[float, float]:
    """Boot ``count`` VMs and check that a separate `vm list --refresh` sees them all running."""
    seconds, peak, out = run_cm(home, "vm", "boot", "--n", str(count), "-f", "value", "-c", "state")
    if out.split() != ["running"] * count:
        raise SystemExit(f"boot --n {count}: not all running: {out[:300]}")
    return seconds, peak


def listed(home: Path) -> int:
    _, _, out = run_cm(home, "vm", "list", "--refresh", "-f", "value", "-c", "state")
    return out.split().count("running")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,1000,10000", help="comma-separated VM counts (first: baseline)")
    sizes = [int(n) for n in parser.parse_args().sizes.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="cm-bench-testhv-"))
    results: dict[int, tuple[float, float]] = {}
    try:
        for count in sizes:
            home = scratch / f"n{count}"
            home.mkdir()
            results[count] = boot(home, count)
            if listed(home) != count:
                raise SystemExit(f"after boot --n {count}, a new process lists a different number of VMs")
        largest = scratch / f"n{sizes[-1]}"
        more, _ = boot(largest, sizes[0])
        if listed(largest) != sizes[-1] + sizes[0]:
            raise SystemExit("the VMs of two boots are not all listed")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base_n, (base_s, _) = sizes[0], results[sizes[0]]
    print("\n== `cm vm boot --n N` on the default cloud (libvirt's test hypervisor), one process each")
    print(f"{'VMs':>6} {'seconds':>9} {'per VM (ms)':>12} {'x n=' + str(base_n) + ' per VM':>14} {'peak MiB':>9}")
    for count, (seconds, peak) in results.items():
        per_vm = seconds / count
        print(f"{count:>6} {seconds:9.2f} {per_vm * 1000:12.2f} {per_vm / (base_s / base_n):14.2f} {peak:9.0f}")
    if 1000 in results:
        print(f"boot --n 1000: {results[1000][0]:.2f} s (target <= 10 s)")
    if 1000 in results and 10000 in results:
        print(f"boot --n 10000 / boot --n 1000: {results[10000][0] / results[1000][0]:.2f}x (target <= 10x)")
    print(f"boot --n {base_n} onto {sizes[-1]} VMs: {more:.2f} s (on an empty cloud: {base_s:.2f} s; the difference "
          f"is reading the {sizes[-1]} VMs' state once and writing it back once, not a cost per VM)")


if __name__ == "__main__":
    main()
