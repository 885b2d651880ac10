"""Benchmarks of `cm hpc` and `cm singularity` (run on demand: `python benchmarks/hpc.py`).

queue: three private Slurm clusters (tests/infra/slurm.py, loopback) each behind a real sshd
login host (tests/infra/sshd.py), 1,000 held jobs each.  One-shot `cm hpc queue --refresh`
against one system, against all three (`--cloud all`, target <= 1.5x one), offline from the
mirror, and the bare `ssh login squeue --format` it wraps, alone and three at once: the bare-ssh
ratio is the floor on this machine, where the three login hosts share the cores with cm (and
`squeue --json`, for comparison).  Ratios are taken within each round, with the load average.
The login hosts' sessions skip this machine's ~/.bashrc (root's here runs `pyenv init`: 0.16 s of
CPU per read, twice per ssh command) unless `--with-rc`: a real login node starts its shells on
its own CPUs, not on the 2 cores cm is measured on.

build: `cm singularity build --from ROOT` of a 50 MB root of real files against `mksquashfs`
alone on the same root (target <= 1.2x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.run import cm_command, report  # noqa: E402

JOBS = 1000
BASE_PORT = 23300  # this benchmark's ports: 23300-23399


def timings(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, list[float]]:
    """Wall times of each command, run round-robin so every one sees the same machine load
    (this machine is shared: alone-in-a-row timings drift with whatever else runs)."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            start = time.perf_counter()
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           cwd=tempfile.gettempdir())
            times[name].append(time.perf_counter() - start)
    return times


def interleaved(commands: dict[str, list[str]], env: dict[str, str], runs: int) -> dict[str, float]:
    """Median wall time of each command, run round-robin (see timings)."""
    return {name: statistics.median(values) for name, values in timings(commands, env, runs).items()}


def round_ratio(times: dict[str, list[float]], top: str, bottom: str) -> float:
    """The median over rounds of top/bottom measured in the same round (same load on both)."""
    return statistics.median(a / b for a, b in zip(times[top], times[bottom]))


def load() -> str:
    """The machine's 1-minute load average and core count, printed with every figure."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _systems(count: int, stack, base_port: int, with_rc: bool = False):
    from tests.infra.slurm import SlurmCluster
    from tests.infra.sshd import LoginHost

    systems = []
    for i in range(count):
        slurm = stack.enter_context(SlurmCluster(f"hpc-bench{i}", base_port + 20 * i, nodes=1))
        login = stack.enter_context(LoginHost(f"hpc-benchl{i}", base_port + 20 * i + 10, env=slurm.client_env,
                                                 mask=[] if with_rc else [Path.home() / ".bashrc"]))
        held = slurm.run(["sh", "-c", f"for i in $(seq {JOBS}); do sbatch --hold --parsable -J b$i --wrap true "
                                      ">/dev/null || exit 1; done"], timeout=900)
        if held.returncode:
            raise RuntimeError(f"submitting {JOBS} jobs failed: {held.stderr.strip()}")
        systems.append((slurm, login))
    return systems


def bench_queue(runs: int, base_port: int = BASE_PORT, with_rc: bool = False) -> None:
    from contextlib import ExitStack

    home = Path(tempfile.mkdtemp(prefix="cm-bench-hpc-"))
    env = {**os.environ, "CM_HOME": str(home)}
    cm = cm_command()
    with ExitStack() as stack:
        started = time.perf_counter()
        systems = _systems(3, stack, base_port, with_rc)
        print(f"\n== `cm hpc queue`, {JOBS:,} jobs per system, 3 systems over ssh "
              f"(set up in {time.perf_counter() - started:.0f} s), median of {runs} runs; {load()}; "
              f"login shells {'read' if with_rc else 'skip'} ~/.bashrc")
        for i, (_, login) in enumerate(systems):
            subprocess.run([*cm, "cloud", "add", f"sys{i}", "--kind", "slurm", f"host={login.alias}",
                            f"ssh_config={login.ssh_config}"], env=env, check=True, capture_output=True)
        subprocess.run([*cm, "default", "cloud=sys0"], env=env, check=True, capture_output=True)
        _, login = systems[0]
        import shlex

        from cm_plugins.slurm.parse import QUEUE_FORMAT

        squeue = f"squeue --noheader --format={shlex.quote(QUEUE_FORMAT)}"  # what cm runs there
        ssh = ["ssh", "-F", str(login.ssh_config), login.alias]
        every_raw = " ".join(f"ssh -F {l.ssh_config} {l.alias} {shlex.quote(squeue)} >/dev/null &" for _, l in systems)
        times = timings({"raw": [*ssh, squeue], "raw_json": [*ssh, "squeue --json"],
                         "raw_all": ["sh", "-c", every_raw + " wait"],
                         "one": [*cm, "hpc", "queue", "--refresh"],
                         "every": [*cm, "hpc", "queue", "--refresh", "--cloud", "all"],
                         "offline": [*cm, "hpc", "queue"], "offline_all": [*cm, "hpc", "queue", "--cloud", "all"]},
                        env, runs)
        t = {name: statistics.median(values) for name, values in times.items()}
        count = subprocess.run([*cm, "hpc", "queue", "--cloud", "all", "-f", "value", "-c", "id"], env=env,
                               capture_output=True, text=True).stdout.count("\n")
        report("ssh login squeue --json (1 system)", t["raw_json"])
        report("ssh login squeue --format (1 system)", t["raw"])
        report("3 x ssh+squeue --format at once (shell &)", t["raw_all"], "", ("one ssh+squeue", t["raw"]))
        report("cm hpc queue --refresh (1 system)", t["one"], "", ("ssh+squeue", t["raw"]))
        report("cm hpc queue --refresh --cloud all (3)", t["every"], "<= 1.5x one system", ("one system", t["one"]))
        report("cm hpc queue (offline, mirror, 1,000 jobs)", t["offline"])
        report(f"cm hpc queue --cloud all (offline, {count:,} jobs)", t["offline_all"])
        # Ratios taken within each round (both sides under the same load), then the median of the rounds.
        cm_ratio, ssh_ratio = round_ratio(times, "every", "one"), round_ratio(times, "raw_all", "raw")
        print(f"ratio 3 systems / 1, per round:  cm {cm_ratio:.2f}x (target <= 1.5x)   bare ssh {ssh_ratio:.2f}x   "
              f"cm beyond bare ssh {cm_ratio / ssh_ratio:.2f}x   cm --cloud all - 3 bare ssh at once "
              f"{t['every'] - t['raw_all']:+.2f} s, cm one - 1 bare ssh {t['one'] - t['raw']:+.2f} s; {load()}")
    shutil.rmtree(home, ignore_errors=True)


def make_root(path: Path, size: int = 50 << 20) -> int:
    """A root of real files (shared libraries and data from /usr) adding up to ``size`` bytes."""
    total = 0
    for source in sorted(Path("/usr/lib/x86_64-linux-gnu").rglob("*")) + sorted(Path("/usr/share").rglob("*")):
        if total >= size:
            break
        if source.is_symlink() or not source.is_file() or total + source.stat().st_size > size:
            continue
        target = path / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        total += target.stat().st_size
    return total


def bench_build(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="cm-bench-sif-"))
    home = work / "home"
    home.mkdir()
    env = {**os.environ, "CM_HOME": str(home)}
    size = make_root(work / "root")
    t = interleaved({"squash": ["mksquashfs", str(work / "root"), str(work / "alone.sqfs"), "-all-root", "-noappend",
                                "-quiet", "-no-progress"],
                     "build": [*cm_command(), "singularity", "build", "big", "--from", str(work / "root"), "--force"]},
                    env, runs)
    squash, build = t["squash"], t["build"]
    print(f"\n== `cm singularity build` of a {size / 1e6:.0f} MB root, median of {runs} runs")
    report("mksquashfs alone", squash)
    report("cm singularity build --from ROOT", build, "<= 1.2x mksquashfs", ("mksquashfs", squash))
    shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=["queue", "build"], action="append")
    parser.add_argument("--base-port", type=int, default=BASE_PORT,
                        help=f"the first of the 100 loopback ports it uses (default {BASE_PORT})")
    parser.add_argument("--with-rc", action="store_true",
                        help="the login hosts' sessions read this machine's ~/.bashrc (skipped by default)")
    args = parser.parse_args()
    wanted = args.only or ["build", "queue"]
    if "build" in wanted:
        bench_build(args.runs)
    if "queue" in wanted:
        bench_queue(args.runs, args.base_port, args.with_rc)


if __name__ == "__main__":
    main()
