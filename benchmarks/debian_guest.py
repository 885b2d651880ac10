"""Benchmark: a real Debian 12 guest configured by cloud-init, booted by `cm` on a private libvirtd.

Run as root: ``python benchmarks/debian_guest.py [--blame]``.  Prints, in one run:

* the private libvirtd's start (tests/infra/libvirtd_ns.py) and the guest image's cold build
  (from its build.json; the build itself runs only when the cache is empty);
* `cm image add` of the image (upload into the pool);
* the baseline: the busybox test guest (tests/e2e/guest.py), from `cm vm boot` to its
  ``cm-guest: ready`` line on `cm vm console`;
* the Debian guest, from `cm vm boot` to cloud-init's final message on `cm vm console`,
  with the ratio to the baseline and the guest's own uptime at that moment.

``--blame`` also prints `systemd-analyze blame` from inside the guest (over ssh in the namespace).
The host's load is printed too: on a shared machine every figure moves with it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.run import report  # noqa: E402
from tests.e2e import guest  # noqa: E402
from tests.infra.guest_image import cache_root, ensure_image  # noqa: E402
from tests.infra.libvirtd_ns import PrivateLibvirtd  # noqa: E402

USER_DATA = """#cloud-config
final_message: "cm-bench: final after $UPTIME s"
"""


def cm(env: dict[str, str], *words: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "cm.main", *words], env=env, capture_output=True, text=True,
                          timeout=900, cwd=HERE.parent)
    if proc.returncode != 0:
        raise SystemExit(f"cm {' '.join(words)} failed: {proc.stderr.strip()}")
    return proc.stdout


def boot_until(env: dict[str, str], name: str, image: str, pattern: str, *extra: str) -> tuple[float, re.Match]:
    """Seconds from `cm vm boot` to the pattern on `cm vm console`, and the match."""
    started = time.monotonic()
    cm(env, "vm", "boot", "--cloud", "lab", "--name", name, "--image", image, "--flavor", "small", *extra)
    while time.monotonic() - started < 1200:
        found = re.search(pattern, cm(env, "vm", "console", name, "--cloud", "lab"), re.M)
        if found:
            return time.monotonic() - started, found
        time.sleep(0.5)
    raise SystemExit(f"{name}: no /{pattern}/ on the console within 1200 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blame", action="store_true", help="print systemd-analyze blame from the guest")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cm-bench-guest-"))
    env = {**os.environ, "CM_HOME": str(work / "cm"), "HOME": str(work), "USER": "bench"}
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    cold = not any(cache_root().glob("debian12-*/build.json"))
    image = ensure_image()
    kernel, initrd = guest.build_guest(Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e")))
    print("\n== a real Debian guest on a private libvirtd (TCG)")
    report("guest image cold build (build.json" + (", this run)" if cold else ")"),
           image.build["seconds"]["total"])
    print(f"{'':<48} qcow2 {image.build['bytes']['qcow2'] >> 20} MiB, initrd {image.build['bytes']['initrd'] >> 20}"
          f" MiB, tree {image.build['bytes']['tree'] >> 20} MiB")
    with PrivateLibvirtd("bench") as daemon:
        daemon.ensure_pool()
        daemon.ensure_network()
        report("private libvirtd start (namespaces, QEMU probe)", daemon.started_seconds)
        cm(env, "cloud", "add", "lab", "--kind", "kvm", *daemon.cloud_settings())
        report("cm image add debian12 (upload)", _timed(lambda: cm(env, "image", "add", "debian12",
                                                                    str(image.directory), "--cloud", "lab")))
        cm(env, "image", "add", "busybox", f"kernel={kernel},initrd={initrd}", "--cloud", "lab")
        baseline, _ = boot_until(env, "bb", "busybox", r"^cm-guest: ready")
        cm(env, "vm", "delete", "bb", "--cloud", "lab")
        report("busybox guest: cm vm boot -> ready on console", baseline)
        (work / "user-data").write_text(USER_DATA)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")], check=True)
        seconds, final = boot_until(env, "deb", "debian12", r"cm-bench: final after ([\d.]+) s",
                                    "--user-data", str(work / "user-data"), "--key", str(work / "key.pub"))
        report("debian guest: cm vm boot -> cloud-init final", seconds, "", ("busybox boot", baseline))
        report("debian guest: its uptime at cloud-init final", float(final.group(1)))
        if args.blame:
            _blame(env, daemon, work / "key")
        cm(env, "vm", "delete", "deb", "--cloud", "lab")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


def _timed(fn) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def _blame(env: dict[str, str], daemon: PrivateLibvirtd, key: Path) -> None:
    shown = cm(env, "vm", "show", "deb", "--cloud", "lab", "--refresh", "-f", "value", "-c", "private_ips")
    address = re.search(r"[\d.]+\.\d+", shown)
    if not address:
        print("no address for the guest: no blame")
        return
    try:
        out = daemon.run(["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                          "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"bench@{address.group(0)}",
                          "systemctl --failed --no-legend; systemd-analyze; systemd-analyze blame | head -25"],
                         timeout=600)
    except subprocess.TimeoutExpired:
        print("systemd-analyze did not answer within 600 s")
        return
    print(out.stdout or out.stderr)


if __name__ == "__main__":
    main()
