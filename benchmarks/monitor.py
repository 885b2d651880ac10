"""Benchmarks of `cm monitor` (run on demand: `python benchmarks/monitor.py [--real]`).

1. Collector overhead, 20 VMs sampled every second: the collector process's CPU
   time (user + system, from /proc) over a measured span, as a share of one core.
   On libvirt's test hypervisor by default (in-process driver: its cost lands in
   the collector), against a baseline in the same run: the same collector
   sampling one VM (its fixed cost per tick), and with ``--against TREE`` the
   collector of another source tree (e.g. a checkout of main) on the same 20 VMs,
   the two measured alternately.  With ``--real N``, on N real idle TCG guests of a
   private libvirtd (needs root): the collector's CPU and libvirtd's (it answers the
   stats calls) and their sum, for the kernel's counters (``stats: auto``) against
   the libvirt-only path (``stats: libvirt``) as baseline, measured alternately.
   With ``--busy-disk`` every guest instead runs a light, steady disk load (the
   ``drip`` workload: 64 KiB written, flushed and read back each second).
2. Storage per VM-hour: an hour of 1-s samples of 20 VMs (plus their host)
   written round by round as the collector does, file size per VM-hour.
3. `cm monitor show` of a 20-node cluster over one hour of samples (synthesized),
   one-shot wall time against `cm monitor status` on the same store (the
   baseline: start-up plus opening the store), and with ``--png``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from cm.monitoring.sample import Sample  # noqa: E402
from cm.monitoring.store import Store, path_in  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def env_for(home: Path, root: Path = ROOT) -> dict[str, str]:
    return {**os.environ, "CM_HOME": str(home), "PYTHONPATH": str(root)}


def cm(home: Path, *words: str, check: bool = True, root: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "cm.main", *words], env=env_for(home, root), capture_output=True,
                          text=True, cwd=tempfile.gettempdir())
    if check and done.returncode != 0:
        raise SystemExit(f"cm {' '.join(words)} failed: {done.stderr}")
    return done


def cpu_seconds(pid: int) -> float:
    """User + system time of the process and of the children it waited for (ssh, when guests are read over ssh)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS


def collector_share(home: Path, targets: str, span: float, cloud: str = "local",
                    others: list[int] = (), root: Path = ROOT) -> tuple[float, list[float], int]:
    """(collector CPU share of one core, each other pid's share, samples stored) over ``span`` seconds."""
    for leftover in (home / "monitor").glob("samples.db*"):  # each measurement counts its own samples
        leftover.unlink()
    cm(home, "monitor", "start", targets, "--interval", "1s", "--cloud", cloud, root=root)
    pid = int((home / "monitor" / "collector.pid").read_text())
    time.sleep(3)  # past start-up (imports, first connection)
    before, others_before, t0 = cpu_seconds(pid), [cpu_seconds(p) for p in others], time.monotonic()
    time.sleep(span)
    after, others_after, t1 = cpu_seconds(pid), [cpu_seconds(p) for p in others], time.monotonic()
    cm(home, "monitor", "stop", root=root)
    store = Store(path_in(home))
    stored = store.count()
    store.close()
    return (after - before) / (t1 - t0), [(a - b) / (t1 - t0) for a, b in zip(others_after, others_before)], stored


def test_hypervisor_home(vms: int) -> Path:
    home = Path(tempfile.mkdtemp(prefix="cm-bench-mon-"))
    cm(home, "default", "cloud=local")
    config = (home / "cm.yaml").read_text().replace("uri: auto", "uri: test:///default")
    (home / "cm.yaml").write_text(config)
    image = home / "img.qcow2"
    import struct

    header = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, 1 << 30)
    image.write_bytes(header + bytes(512 - len(header)))
    cm(home, "image", "add", "cirros", str(image))
    cm(home, "vm", "boot", "--name", f"node[01-{vms:02d}]")
    return home


def bench_overhead_test_hypervisor(vms: int, span: float, rounds: int, against: Path | None) -> None:
    home = test_hypervisor_home(vms)
    names = f"node[01-{vms:02d}]"
    trees = {"this tree": ROOT, **({f"{against}": against} if against else {})}
    shares: dict[str, list[float]] = {label: [] for label in trees}
    base: list[float] = []
    try:
        for _ in range(rounds):  # alternately, so load from elsewhere falls on both alike
            base.append(collector_share(home, "node01", span)[0])
            for label, root in trees.items():
                share, _, stored = collector_share(home, names, span, root=root)
                shares[label].append(share)
        one = statistics.median(base)
        for label, values in shares.items():
            share = statistics.median(values)
            print(f"collector ({label}), {vms} VMs every 1 s, libvirt test hypervisor: {share:.2%} of one core "
                  f"(target <= 2%; median of {rounds} x {span:.0f} s: {', '.join(f'{v:.2%}' for v in values)}); "
                  f"baseline 1 VM {one:.2%}, ratio {share / one:.1f}x, {(share - one) / (vms - 1):.3%} per more VM")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def bench_overhead_real(vms: int, span: float, runs: int, work: str = "idle") -> None:
    """Collector + libvirtd on ``vms`` real guests running ``work``: the kernel's counters (``stats: auto``)
    against the libvirt-only path (``stats: libvirt``, the baseline), measured alternately in the same run."""
    from tests.e2e import workloads
    from tests.infra.libvirtd_ns import PrivateLibvirtd

    kernel, initrd = workloads.build(Path.home() / ".cache" / "cm-e2e")
    home = Path(tempfile.mkdtemp(prefix="cm-bench-mon-"))
    with PrivateLibvirtd("monbench") as daemon:
        daemon.ensure_pool()
        conn = daemon.connect()
        for i in range(1, vms + 1):
            name = f"g{i:02d}"
            disk = workloads.data_disk(daemon.pool_dir / f"{name}.img", 8)
            conn.defineXML(workloads.domain_xml(name, kernel, initrd, work, disk,
                                                f"/var/log/libvirt/qemu/{name}-console.log", memory_mib=128,
                                                max_memory_mib=128)).create()
        for i in range(1, vms + 1):
            workloads.wait_started(daemon.console_dir / f"g{i:02d}-console.log", timeout=600)
        cm(home, "cloud", "add", "lab", "--kind", "kvm", *daemon.cloud_settings())
        cm(home, "cloud", "add", "lablv", "--kind", "kvm", *daemon.cloud_settings(), "stats=libvirt")
        cm(home, "refresh", "vm", "--cloud", "lab")
        cm(home, "refresh", "vm", "--cloud", "lablv")
        names = f"g[01-{vms:02d}]"
        figures: dict[str, list[tuple[float, float, float]]] = {"libvirt only (baseline)": [], "kernel counters": []}
        for _ in range(runs):  # alternately, so load from elsewhere falls on both alike
            for label, cloud in (("libvirt only (baseline)", "lablv"), ("kernel counters", "lab")):
                share, (daemon_share,), stored = collector_share(home, names, span, cloud, [daemon.libvirtd.pid])
                figures[label].append((share, daemon_share, os.getloadavg()[0]))
                print(f"  {label}: collector {share:.2%} + libvirtd {daemon_share:.2%} = "
                      f"{share + daemon_share:.2%} of one core; {stored} samples in {span:.0f} s; "
                      f"load average {os.getloadavg()[0]:.2f}", flush=True)
        total = {}
        for label, values in figures.items():
            collector = statistics.median(v[0] for v in values)
            libvirtd = statistics.median(v[1] for v in values)
            total[label] = statistics.median(v[0] + v[1] for v in values)
            load = statistics.median(v[2] for v in values)
            print(f"{label}, {vms} real TCG guests ({work}) every 1 s: collector {collector:.2%} + libvirtd "
                  f"{libvirtd:.2%}, sum {total[label]:.2%} of one core (target <= 2% for 20; medians of {runs} "
                  f"x {span:.0f} s; load average {load:.2f})")
        base, now = total["libvirt only (baseline)"], total["kernel counters"]
        print(f"kernel counters / libvirt only: {now / base:.2f}x of the baseline's collector + libvirtd")
        conn.close()
    shutil.rmtree(home, ignore_errors=True)


def synthesize(home: Path, vms: int, seconds: int) -> Path:
    """An hour of 1-s samples of ``vms`` VMs and their host, stored round by round like the collector."""
    store = Store(path_in(home))
    rnd = random.Random(1)
    nodes = [store.node_id(f"node{i:02d}", "vm", "local", host="hv1") for i in range(1, vms + 1)]
    host = store.node_id("hv1", "host")
    start = int((time.time() - seconds) * 1000)
    for s in range(seconds):
        t = start + s * 1000
        rows = [(n, Sample(t, 2, rnd.randint(0, 1000), bytes([rnd.randint(0, 100), rnd.randint(0, 100)]),
                           rnd.randint(0, 50), 0, rnd.randint(200_000, 900_000), 1_000_000,
                           rnd.randint(0, 50_000_000), rnd.randint(0, 50_000_000), rnd.randint(0, 2000),
                           rnd.randint(0, 10_000_000), rnd.randint(0, 10_000_000))) for n in nodes]
        rows.append((host, Sample(t, 2, rnd.randint(0, 1000), b"\x10\x20", 0, 10, 8_000_000, 16_000_000,
                                  rnd.randint(0, 9 ** 8), rnd.randint(0, 9 ** 8), 300, 1000, 1000)))
        store.add(rows)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path_in(home)


def bench_storage_and_show(vms: int, runs: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="cm-bench-mon-"))
    try:
        begun = time.perf_counter()
        db = synthesize(home, vms, 3600)
        took = time.perf_counter() - begun
        size = db.stat().st_size
        print(f"storage: {size / (vms + 1) / 1024:.0f} KiB per VM-hour of 1-s samples ({size / 2**20:.1f} MiB for "
              f"{vms} VMs + host, one hour; written round by round in {took:.1f} s = {took / 3600 * 1000:.2f} ms "
              "per round)")
        names = f"node[01-{vms:02d}]"

        def wall(*words: str) -> float:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                cm(home, *words)
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

        baseline = wall("monitor", "status")
        show = wall("monitor", "show", names, "--since", "1h")
        png = wall("monitor", "show", names, "--since", "1h", "--png", str(home / "d.png"))
        print(f"`cm monitor show {names} --since 1h` ({vms * 3600} samples + host): {show:.2f} s (target <= 1 s); "
              f"baseline `cm monitor status` {baseline:.2f} s, ratio {show / baseline:.1f}x; with --png {png:.2f} s")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=int, default=0, metavar="N",
                        help="also measure N real TCG guests (idle unless --busy-disk)")
    parser.add_argument("--busy-disk", action="store_true",
                        help="with --real: the guests run a light, steady disk load instead of idling")
    parser.add_argument("--span", type=float, default=20.0, help="seconds the collector is measured")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--against", type=Path, metavar="TREE",
                        help="also measure the collector of this source tree (e.g. a checkout of main)")
    parser.add_argument("--overhead-only", action="store_true", help="skip the storage and show benchmarks")
    parser.add_argument("--real-only", action="store_true", help="with --real: skip the test hypervisor's figures")
    args = parser.parse_args()
    if not (args.real and args.real_only):
        bench_overhead_test_hypervisor(20, args.span, args.runs, args.against)
    if args.real:
        bench_overhead_real(args.real, args.span, args.runs, "drip" if args.busy_disk else "idle")
    if not args.overhead_only:
        bench_storage_and_show(20, args.runs)


if __name__ == "__main__":
    main()
