"""Start-up and stop times of the shared test machinery (tests/infra), median of N runs.

    .venv/bin/python benchmarks/infra_startup.py [--runs 3] [--base-port 21900]

Baseline in the same run: one ``mariadb-install-db`` (what an accounting cluster would pay
without the cached datadir template), printed as the ratio to the cached copy.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.infra.netns import Lab  # noqa: E402
from tests.infra.slurm import SlurmCluster  # noqa: E402
from tests.infra.slurmdb import mariadb_template  # noqa: E402
from tests.infra.sshd import LoginHost  # noqa: E402


def timed(start, stop) -> tuple[float, float]:
    """Seconds for ``start()`` (until ready) and for ``stop(obj)``."""
    t0 = time.perf_counter()
    obj = start()
    t1 = time.perf_counter()
    stop(obj)
    return t1 - t0, time.perf_counter() - t1


def install_db_seconds() -> float:
    tmp = Path(tempfile.mkdtemp(prefix="infra-bench-db-"))
    t0 = time.perf_counter()
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={tmp / 'd'}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db"], capture_output=True, check=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(tmp)
    return seconds


def copy_template_seconds() -> float:
    tmp = Path(tempfile.mkdtemp(prefix="infra-bench-db-"))
    template = mariadb_template(120)
    t0 = time.perf_counter()
    shutil.copytree(template, tmp / "d", symlinks=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(tmp)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=21900)
    args = parser.parse_args()
    port = args.base_port

    def lab2() -> Lab:
        lab = Lab("infra-bl").start()
        lab.add_host("a"), lab.add_host("b")
        return lab

    def with_login() -> tuple[SlurmCluster, LoginHost]:
        c = SlurmCluster("infra-bs", port, nodes=2).start()
        return c, LoginHost("infra-bsl", port + 30, env=c.client_env).start()

    cases = {
        "lab, 2 namespaced hosts": (lab2, Lab.stop),
        "fast cluster, 2 nodes": (lambda: SlurmCluster("infra-bf", port, nodes=2).start(), SlurmCluster.stop),
        "networked cluster, 2 nodes": (lambda: SlurmCluster("infra-bn", port, nodes=2, networked=True).start(),
                                       SlurmCluster.stop),
        "fast cluster + accounting": (lambda: SlurmCluster("infra-ba", port, nodes=2, accounting=True,
                                                           accounts={"acct": ["root"]}).start(), SlurmCluster.stop),
        "fast cluster + login host": (with_login, lambda pair: (pair[1].stop(), pair[0].stop())),
    }
    print(f"{'what':32} {'start s':>8} {'stop s':>8}   (median of {args.runs})")
    for name, (start, stop) in cases.items():
        runs = [timed(start, stop) for _ in range(args.runs)]
        print(f"{name:32} {statistics.median(r[0] for r in runs):8.2f} {statistics.median(r[1] for r in runs):8.2f}")
    install, copy = install_db_seconds(), copy_template_seconds()
    print(f"MariaDB datadir: install-db {install:.2f} s (baseline), cached copy {copy:.2f} s, "
          f"ratio {install / copy:.1f}x")


if __name__ == "__main__":
    main()
