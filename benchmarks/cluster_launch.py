"""Launcher overhead beyond VM boot: `cm slurm -n 10` and `-n 100` against one `cm vm boot`,
on the project's OpenStack test server where a VM is ACTIVE 2 s after its create and its
console then shows cloud-init's final_message (the recipe's readiness marker).

The provider is the real openstacksdk over HTTP; the figure includes every list,
console read and mirror write cm makes.  Targets: overhead <= 5 s (-n 10), <= 10 s (-n 100).
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
BUILD = 2.0


def _run(env: dict[str, str], *words: str) -> float:
    from benchmarks.run import cm_command

    start = time.perf_counter()
    proc = subprocess.run([*cm_command(), *words], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"`cm {' '.join(words)}` failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return seconds


def bench_cluster_launch() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.osapi.server import start_server

    server = start_server(build_delay=BUILD)
    home = Path(tempfile.mkdtemp(prefix="cm-bench-clusters-"))
    try:
        server.set_quota(instances=-1, cores=-1, ram=-1, port=-1, floatingip=-1)
        clouds = server.write_clouds_yaml(str(home / "clouds.yaml"), "bench")
        env = {**os.environ, "CM_HOME": str(home / "cm"), "OS_CLIENT_CONFIG_FILE": clouds, "HOME": str(home)}
        (home / ".ssh").mkdir()
        (home / ".ssh" / "id_ed25519.pub").write_text(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq4bJ0fM4+1HVEyG0k8gq3s3Lh0fNhQw2tCkX1J2rRa bench@cm\n")
        common = ["--cloud", "bench", "--image", "cirros-0.6.2-x86_64-disk", "--flavor", "m1.tiny"]
        _run(env, "vm", "boot", "--name", "warm", *common)  # first use uploads the key: not part of either figure
        _run(env, "vm", "delete", "warm", "--cloud", "bench")
        one = _run(env, "vm", "boot", "--name", "one", *common)
        print(f"\n== cluster launch overhead beyond VM boot (OpenStack test server, VMs ACTIVE {BUILD:g} s after create)")
        print(f"{'cm vm boot (1 VM, the baseline)':<44} {one:8.2f} s")
        for n, target in ((10, 5.0), (100, 10.0)):
            took = _run(env, "slurm", "-n", str(n), "--name", f"b{n}", *common)
            overhead = took - one
            print(f"{f'cm slurm -n {n} (head + {n} workers, ready)':<44} {took:8.2f} s  ({took / one:.2f}x one VM)  "
                  f"overhead {overhead:.2f} s, target <= {target:g} s  {'ok' if overhead <= target else 'MISSED'}")
            _run(env, "cluster", "delete", f"b{n}", "--cloud", "bench")
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    bench_cluster_launch()
