"""cm's benchmarks: run on demand (`make bench` or `python benchmarks/run.py`), not in the tests.

Each figure is printed with its target and, where the issue asks, a ratio
against a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from cm.mirror import Mirror  # noqa: E402


def vm_record(i: int) -> dict:
    return {"name": f"bench-{i:05d}", "id": f"id-{i}", "state": "running", "image": "ubuntu-22.04",
            "flavor": "m1.small", "key": "id_ed25519", "public_ips": [], "private_ips": [f"10.0.{i // 250}.{i % 250}"],
            "created": "2026-11-21T00:00:00Z", "fault": "", "extra": {}}


def make_home(vms: int) -> Path:
    home = Path(tempfile.mkdtemp(prefix="cm-bench-"))
    Mirror(home / "mirror.json").replace("vm", "local", [vm_record(i) for i in range(vms)])
    return home


def cm_command() -> list[str]:
    """The `cm` a user runs: the installed script beside this python, else the module.

    Runs start in a scratch directory, so the source tree (whose modules may have
    no compiled bytecode) is not what gets imported.
    """
    installed = Path(sys.executable).parent / "cm"
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "cm.main"]


def median_time(command: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                       cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(label: str, seconds: float, target: str = "", baseline: tuple[str, float] | None = None) -> None:
    ratio = f"  ({seconds / baseline[1]:.2f}x {baseline[0]})" if baseline else ""
    goal = f"  target {target}" if target else ""
    print(f"{label:<48} {seconds:8.3f} s{ratio}{goal}")


def bench_one_shot_list(runs: int) -> None:
    home = make_home(1000)
    env = {**os.environ, "CM_HOME": str(home)}
    cm = cm_command()
    bare = median_time([sys.executable, "-c", "pass"], env, runs)
    listing = median_time([*cm, "vm", "list"], env, runs)
    as_json = median_time([*cm, "vm", "list", "-f", "json"], env, runs)
    print(f"\n== one-shot `cm vm list`, 1,000-VM mirror, median of {runs} runs")
    report("python -c pass", bare)
    report("cm vm list (table)", listing, "<= 0.15 s", ("python -c pass", bare))
    report("cm vm list -f json", as_json, "<= 0.15 s", ("python -c pass", bare))
    print(f"{'  cm vm list minus interpreter start-up':<48} {listing - bare:8.3f} s")
    beside = Path(sys.executable).parent / "openstack"  # in the same virtual environment
    openstack = str(beside) if beside.exists() else shutil.which("openstack")
    if openstack:
        report("openstack --version", median_time([openstack, "--version"], env, runs), "",
               ("python -c pass", bare))
        ours = listing
        theirs = median_time([openstack, "--version"], env, runs)
        print(f"{'  cm vm list vs openstack --version':<48} {ours / theirs:8.2f} x")
    else:
        print("openstack (python-openstackclient) not installed: `pip install python-openstackclient` to compare")
    shutil.rmtree(home)


def bench_big_mirror(runs: int) -> None:
    home = make_home(0)
    mirror = Mirror(home / "mirror.json")
    records = [vm_record(i) for i in range(10_000)]
    ingest = statistics.median(timed(lambda: mirror.replace("vm", "local", records)) for _ in range(runs))
    env = {**os.environ, "CM_HOME": str(home)}
    cm = cm_command()
    bare = median_time([sys.executable, "-c", "pass"], env, runs)
    listing = median_time([*cm, "vm", "list", "-f", "json"], env, runs)
    table = median_time([*cm, "vm", "list"], env, runs)
    print(f"\n== 10,000-VM mirror, median of {runs} runs")
    report("refresh ingest of 10,000 VMs (mirror.replace)", ingest, "<= 1 s")
    report("cm vm list -f json (one-shot)", listing, "<= 0.3 s", ("python -c pass", bare))
    report("cm vm list (table, one-shot)", table, "<= 0.3 s", ("python -c pass", bare))
    shutil.rmtree(home)


def bench_script(runs: int) -> None:
    home = make_home(1000)
    env = {**os.environ, "CM_HOME": str(home)}
    script = home / "bench.cm"
    lines = []
    for i in range(1000):
        lines.append(["var i=%d" % i, "vm list bench-0000[1-9] -f json", "default format=json",
                      "var list", "vm show bench-00042 -f json"][i % 5])
    script.write_text("\n".join(lines) + "\n")
    cm = cm_command()
    bare = median_time([sys.executable, "-c", "pass"], env, runs)
    seconds = median_time([*cm, str(script)], env, max(3, runs // 2))
    print("\n== a 1,000-line script of mirror-only commands (var, default, vm list/show)")
    report("cm bench.cm", seconds, "<= 2 s", ("python -c pass", bare))
    shutil.rmtree(home)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7, help="runs per timing (median is reported)")
    parser.add_argument("--only", choices=["list", "mirror", "script", "boot", "clusters"], action="append")
    args = parser.parse_args()
    chosen = args.only or ["list", "mirror", "script", "boot", "clusters"]
    if "list" in chosen:
        bench_one_shot_list(args.runs)
    if "mirror" in chosen:
        bench_big_mirror(args.runs)
    if "script" in chosen:
        bench_script(args.runs)
    if "boot" in chosen:
        from benchmarks.boot import bench_boot

        bench_boot()
    if "clusters" in chosen:
        from benchmarks.cluster_launch import bench_cluster_launch

        bench_cluster_launch()


if __name__ == "__main__":
    main()
