"""`cm vm boot --n 50` against one VM, on a slow OpenStack: create takes 1 s, ACTIVE after 2 s.

The provider is the real openstacksdk over HTTP against the project's local
OpenStack API server (tests/osapi), so the figure includes real client work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _boot(env: dict[str, str], count: int) -> float:
    start = time.perf_counter()
    from benchmarks.run import cm_command

    proc = subprocess.run([*cm_command(), "vm", "boot", "--n", str(count), "--cloud", "slow",
                           "--image", "cirros-0.6", "--flavor", "m1.tiny", "-f", "value", "-c", "state"],
                          env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    states = proc.stdout.split()
    if proc.returncode != 0 or states != ["running"] * count:
        raise SystemExit(f"boot --n {count} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return seconds


def bench_boot() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.osapi.server import start_server

    server = start_server(build_delay=2.0, create_delay=1.0)
    home = Path(tempfile.mkdtemp(prefix="cm-bench-boot-"))
    try:
        server.set_quota(instances=-1, cores=-1, ram=-1, port=-1)
        clouds = server.write_clouds_yaml(str(home / "clouds.yaml"), "slow")
        env = {**os.environ, "CM_HOME": str(home / "cm"), "OS_CLIENT_CONFIG_FILE": clouds}
        one = _boot(env, 1)
        fifty = _boot(env, 50)
        print("\n== `cm vm boot` on OpenStack where create takes 1 s and a VM runs 2 s later")
        print(f"{'boot 1 VM':<48} {one:8.3f} s")
        print(f"{'boot --n 50':<48} {fifty:8.3f} s  ({fifty / one:.2f}x one VM)  target <= 1.5x")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    bench_boot()
