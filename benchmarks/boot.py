"""`cm vm boot --n 50` and `--n 200` against one VM (same run), on a slow OpenStack: create takes 1 s,
ACTIVE after 2 s; and `--n 200` while the cloud answers the first 200 creates with HTTP 429.

The provider is the real openstacksdk over HTTP against the project's local
OpenStack API server (tests/osapi), so the figure includes real client work.
"""

from __future__ import annotations

import os
import shutil
import statistics
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
                           "--image", "cirros-0.6", "--flavor", "m1.tiny", "-f", "value", "-c", "state", "-c", "result"],
                          env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    states = proc.stdout.split()
    if proc.returncode != 0 or states != ["running", "booted"] * count:
        raise SystemExit(f"boot --n {count} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}\n"
                         f"{proc.stdout[-1500:]}")
    return seconds


def _fresh(server: object, env: dict[str, str]) -> dict[str, str]:
    """An empty cloud with no quota (a /24 network holds 253 VMs: each boot starts afresh)."""
    server.reset()  # type: ignore[attr-defined]
    server.set_quota(instances=-1, cores=-1, ram=-1, port=-1)  # type: ignore[attr-defined]
    return env


def _throttled(server: object, env: dict[str, str], count: int) -> float:
    """`vm boot --n COUNT` while the cloud refuses the first creates with HTTP 429 (cm slows down, boots all)."""
    server.inject_fault("POST", r"/servers$", status=429, count=count)  # type: ignore[attr-defined]
    try:
        return _boot(env, count)
    finally:
        server.clear_faults()  # type: ignore[attr-defined]


def bench_boot(counts: tuple[int, ...] = (50, 200)) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.osapi.server import start_server

    server = start_server(build_delay=2.0, create_delay=1.0)
    home = Path(tempfile.mkdtemp(prefix="cm-bench-boot-"))
    try:
        clouds = server.write_clouds_yaml(str(home / "clouds.yaml"), "slow")
        env = {**os.environ, "CM_HOME": str(home / "cm"), "OS_CLIENT_CONFIG_FILE": clouds}
        one = statistics.median(_boot(_fresh(server, env), 1) for _ in range(3))
        many = {count: _boot(_fresh(server, env), count) for count in counts}
        throttled = _throttled(server, _fresh(server, env), max(counts))
        print("\n== `cm vm boot` on OpenStack where create takes 1 s and a VM runs 2 s later")
        print(f"{'boot 1 VM (median of 3)':<48} {one:8.3f} s")
        for count, seconds in many.items():
            target = "target <= 1.3x" if count == 200 else "target <= 1.5x"
            print(f"{f'boot --n {count}':<48} {seconds:8.3f} s  ({seconds / one:.2f}x one VM)  {target}")
        label = f"boot --n {max(counts)}, first {max(counts)} creates get 429"
        print(f"{label:<48} {throttled:8.3f} s  ({throttled / one:.2f}x one VM)  all booted")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    bench_boot()
