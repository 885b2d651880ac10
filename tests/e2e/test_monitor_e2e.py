"""End-to-end: `cm monitor` on real QEMU guests (TCG) running known workloads, on a private libvirtd.

Five small guests (256 MiB, 1 vCPU) run at once: a CPU-bound one, a
disk-bound one, a memory-bound one, and two that stream over a network inside
the namespace of the private libvirtd (the test made it).  cm samples them
every second; each workload is cut into three 10-s runs, profiles are learnt
from the twelve runs, and each run's check names its bottleneck.  Then the
disk guest's disk is throttled with libvirt's I/O tuning, and a run of it is
flagged against its profile.  Every cm command runs as its own process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest

from tests.e2e import workloads

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, libvirtd)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64", "dpkg-deb")),
                       reason="e2e: libvirtd/qemu missing: run scripts/install-system-packages.sh"),
]
libvirt = pytest.importorskip("libvirt")
pytest.importorskip("sklearn")
libvirtd_ns = pytest.importorskip("tests.infra.libvirtd_ns", reason="e2e: the private libvirtd (helper guest's) is missing")

WINDOW = 10.0  # seconds per run
REPEATS = 3
SUBNET = "192.168.150"  # the private libvirtd's network, inside its namespace
GUESTS = {  # name: (workload, address, peer)
    "mon-cpu": ("cpu", "", ""),
    "mon-disk": ("disk", "", ""),
    "mon-mem": ("mem", "", ""),
    "mon-send": ("send", f"{SUBNET}.201/24", f"{SUBNET}.202"),
    "mon-recv": ("recv", f"{SUBNET}.202/24", ""),
}
RUNS = {"cpu": ["mon-cpu"], "disk": ["mon-disk"], "mem": ["mon-mem"], "net": ["mon-send", "mon-recv"]}
EXPECTED = {"cpu": "cpu", "disk": "disk", "mem": "memory", "net": "network"}


def cm_ok(cm_process, *words: str) -> str:
    result = cm_process(*words, timeout=300)
    assert result.code == 0, f"cm {' '.join(words)}: {result.err}"
    return result.out


def _domain(lab: dict, name: str):
    """A guest's domain over a fresh connection: libvirtd drops a client connection that sat idle
    through its keepalive window (a client without an event loop never answers the pings)."""
    return lab["daemon"].connect().lookupByName(name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """The private libvirtd with the five guests running their workloads; stopped (nothing left) after."""
    cache = Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e"))
    kernel, initrd = workloads.build(cache)
    daemon = libvirtd_ns.PrivateLibvirtd("monitor")
    daemon.start()
    try:
        daemon.ensure_pool()
        network = daemon.ensure_network()
        conn = daemon.connect()
        for name, (work, ip, peer) in GUESTS.items():
            disk = workloads.data_disk(daemon.pool_dir / f"{name}.img")
            dom = conn.defineXML(workloads.domain_xml(name, kernel, initrd, work, disk,
                                                      f"/var/log/libvirt/qemu/{name}-console.log",
                                                      network=network if ip else "", ip=ip, peer=peer))
            dom.create()
        for name in GUESTS:
            workloads.wait_started(daemon.console_dir / f"{name}-console.log")
        yield {"daemon": daemon, "conn": conn}
        conn.close()
    finally:
        daemon.stop()
        assert daemon.leftovers() == []


@pytest.fixture(scope="module")
def monitored(lab, tmp_path_factory: pytest.TempPathFactory):
    """cm's user directory after collecting the runs: twelve normal ones and one with its disk throttled."""
    import subprocess
    import sys

    home = tmp_path_factory.mktemp("cmhome")
    env = {**os.environ, "CM_HOME": str(home), "HOME": str(home)}

    def cm(*words: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "cm.main", *words], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, f"cm {' '.join(words)}: {done.stderr}"
        return done

    cm("cloud", "add", "lab", "--kind", "kvm", *lab["daemon"].cloud_settings())
    cm("default", "cloud=lab")
    cm("refresh", "vm")
    started = cm("monitor", "start", ",".join(GUESTS), "--interval", "1s")
    assert "collector started" in started.stdout
    time.sleep(3)  # two samples before the first window: rates need a previous reading
    windows = []
    for _ in range(REPEATS):
        begin = time.time()
        time.sleep(WINDOW)
        windows.append((begin, time.time()))
    dom = _domain(lab, "mon-disk")
    dom.setBlockIoTune("vda", {"total_bytes_sec": 256 * 1024}, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    time.sleep(2)
    throttled = (time.time(), time.time() + WINDOW)
    time.sleep(WINDOW + 1.5)
    now = time.time()
    for kind, nodes in RUNS.items():
        for i, (begin, end) in enumerate(windows, 1):
            cm("monitor", "run", "add", f"{kind}-{i}", ",".join(nodes), "--since", f"{now - begin:.1f}s",
               "--until", f"{now - end:.1f}s", "--label", kind)
    cm("monitor", "run", "add", "disk-throttled", "mon-disk", "--since", f"{now - throttled[0]:.1f}s",
       "--until", f"{now - throttled[1]:.1f}s", "--label", "disk")
    yield {"home": home, "env": env, "cm": cm}
    cm("monitor", "stop")


def test_the_samples_show_each_workload(monitored):
    out = monitored["cm"]("monitor", "export", "--format", "csv").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    by_node: dict[str, list[dict]] = {}
    for row in rows:
        by_node.setdefault(row["node"], []).append(row)
    assert set(GUESTS) <= set(by_node), by_node.keys()
    assert any(r["kind"] == "host" for r in rows), "the physical host is sampled too"

    def mean(node: str, *columns: str) -> float:
        return sum(sum(float(r[c]) for c in columns) for r in by_node[node]) / len(by_node[node])

    # The CPU guest always wants its vCPU: busy + waiting for a host CPU is (nearly) all the time.
    assert mean("mon-cpu", "cpu", "steal") >= 850
    assert max(GUESTS, key=lambda n: mean(n, "disk_rd", "disk_wr")) == "mon-disk"
    assert max(GUESTS, key=lambda n: mean(n, "mem_used") / mean(n, "mem_total")) == "mon-mem"
    assert mean("mon-mem", "mem_used") / mean("mon-mem", "mem_total") > 0.7  # the balloon reports the guest's view
    net = {n: mean(n, "net_rx", "net_tx") for n in GUESTS}
    assert sorted(net, key=net.get)[-2:] in (["mon-send", "mon-recv"], ["mon-recv", "mon-send"]), net


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_the_dashboard_in_the_terminal_and_as_a_png(monitored, tmp_path):
    png = tmp_path / "dash.png"
    out = monitored["cm"]("monitor", "show", "--since", "2m", "--png", str(png), "-f", "json").stdout
    rows = {r["node"]: r for r in json.loads(out)}
    assert set(GUESTS) <= set(rows) and "all" in rows
    assert any(r["kind"] == "host" for r in rows.values())
    assert all(r["samples"] >= 20 for n, r in rows.items() if n in GUESTS)
    assert png_size(png) == (1200, 900)
    from PIL import Image  # matplotlib's own dependency

    image = Image.open(png).convert("RGB")
    colours = image.getcolors(1 << 20)
    assert len(colours) > 50, "lines of several colours, not an empty canvas"
    table = monitored["cm"]("monitor", "show", "mon-cpu,mon-mem", "--since", "2m").stdout
    assert "mon-cpu" in table and "mon-mem" in table and "mon-disk" not in table
    assert any(bar in table for bar in "▂▃▄▅▆▇█")


def test_profiles_separate_the_kinds_and_check_names_each_bottleneck(monitored):
    normal = [f"{kind}-{i}" for kind in RUNS for i in range(1, REPEATS + 1)]
    learnt = json.loads(monitored["cm"]("monitor", "profile", "learn", *normal, "-f", "json").stdout)
    groups = [set(p["runs"].split(", ")) for p in learnt]
    kinds = [{run.rsplit("-", 1)[0] for run in g} for g in groups]
    assert all(len(k) == 1 for k in kinds), f"a profile mixes kinds: {learnt}"
    assert len(groups) == len(RUNS), f"one profile per kind: {learnt}"
    for run in normal:
        verdict = json.loads(monitored["cm"]("monitor", "check", run, "-f", "json").stdout)
        kind = run.rsplit("-", 1)[0]
        assert verdict["bottleneck"] == EXPECTED[kind], verdict
        assert verdict["deviates"] is False, verdict
        assert verdict["profile"].startswith(EXPECTED[kind]), verdict


def test_a_throttled_disk_is_flagged_against_its_profile(monitored):
    verdict = json.loads(monitored["cm"]("monitor", "check", "disk-throttled", "-f", "json").stdout)
    assert verdict["deviates"] is True, verdict
    assert verdict["profile"] == "disk-bound", verdict
    assert verdict["bottleneck"] == "disk" and verdict["level"] == "vm", verdict


def test_tune_balloons_memory_up_on_the_running_guest(monitored, lab):
    dom = _domain(lab, "mon-mem")
    before = dom.info()[2] // 1024
    out = json.loads(monitored["cm"]("monitor", "tune", "mem-1", "--apply", "-f", "json").stdout)
    assert out[0]["bottleneck"] == "memory" and out[0]["result"].startswith("done"), out
    deadline = time.monotonic() + 30
    while dom.info()[2] // 1024 <= before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert dom.info()[2] // 1024 > before


def test_tune_of_the_cpu_run_matches_where_the_bottleneck_is(monitored, lab):
    verdict = json.loads(monitored["cm"]("monitor", "check", "cpu-1", "-f", "json").stdout)
    out = json.loads(monitored["cm"]("monitor", "tune", "cpu-1", "--apply", "-f", "json").stdout)
    if verdict["level"] == "host":  # starved by a busy host: more vCPUs would not help
        assert "vm migrate" in out[0]["change"] and out[0]["result"].startswith("not applied")
    else:
        dom = _domain(lab, "mon-cpu")
        assert out[0]["result"] == "done: 2 vCPUs" and dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2


def test_vcpu_hot_add_through_the_contract_and_the_samples_follow(monitored, lab):
    from cm_plugins.kvm.provider import KvmProvider

    provider = KvmProvider("lab", {"uri": lab["daemon"].uri, "pool": "default", "network": "default"})
    provider.state_dir = monitored["home"]
    try:
        assert provider.set_vm_vcpus("mon-cpu", 2) == 2
        from cm.errors import Conflict

        with pytest.raises(Conflict, match="at most 2 vCPUs"):
            provider.set_vm_vcpus("mon-cpu", 3)
        deadline = time.monotonic() + 60
        while provider.vm_stats(["mon-cpu"])[0].vcpus != 2:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    finally:
        provider.close()
    deadline = time.monotonic() + 60  # rounds take seconds on a busy host
    while True:
        out = monitored["cm"]("monitor", "export", "mon-cpu", "--since", "20s").stdout
        rows = [r for r in csv.DictReader(io.StringIO(out)) if r["node"] == "mon-cpu"]
        if rows and rows[-1]["ncpu"] == "2":
            break
        assert time.monotonic() < deadline, rows[-3:]
        time.sleep(1)
    assert len(rows[-1]["vcpu"].split(";")) == 2


def test_the_kernels_counters_equal_libvirts(monitored, lab):
    """On this machine the counters come from /proc and the cgroup: each lies between libvirt's read just
    before and just after (counters only grow), for every guest, CPU, vCPU, NIC and disk alike.  The busy
    raw disk's bytes come from QEMU's I/O threads between libvirt's reads (every 5 s): read bytes lie
    between libvirt's too, less what a libvirt read racing the I/O leaves unpinned; written bytes within
    0.5%; its time in flight, carried at the last rate, grows about as libvirt's does."""
    from cm_plugins.kvm.provider import KvmProvider
    from cm_plugins.kvm.stats import BUSY_EVERY, STATS, from_record

    conn = lab["daemon"].connect()

    def libvirts() -> dict:
        return {d.name(): from_record(d.name(), r, 0, "") for d, r in conn.getAllDomainStats(STATS)}

    provider = KvmProvider("lab", {"uri": lab["daemon"].uri, "pool": "default", "network": "default"})
    provider.state_dir = monitored["home"]
    busy = "mon-disk"
    busy_dom = _domain(lab, busy)
    busy_uuid = busy_dom.UUIDString()
    busy_dom.setBlockIoTune("vda", {"total_bytes_sec": 0}, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # full speed again
    try:
        first = None
        for round_ in range(int(BUSY_EVERY) * 2 + 2):  # libvirt is asked for the busy disk twice in between
            before = libvirts()
            direct = {s.name: s for s in provider.vm_stats(list(GUESTS))}
            after = libvirts()
            first = first or (before[busy], direct[busy])
            assert set(direct) == set(GUESTS)
            readers = provider.__dict__["_local_domains"]
            carry = next(reader.carries[key] for reader in readers.values() for key in reader.carries
                         if key[0] == busy_uuid)
            for name, got in direct.items():
                lo, hi = before[name], after[name]
                fields = ["cpu_ns", "steal_ns", "net_rx_bytes", "net_tx_bytes"]
                if name != busy:
                    fields += ["disk_rd_bytes", "disk_wr_bytes", "disk_time_ns"]
                for field in fields:
                    assert getattr(lo, field) <= getattr(got, field) <= getattr(hi, field), (name, field)
                assert len(lo.vcpu_ns) == len(got.vcpu_ns) == len(hi.vcpu_ns), name
                assert all(a <= b <= c for a, b, c in zip(lo.vcpu_ns, got.vcpu_ns, hi.vcpu_ns)), name
                if round_ == 0:  # later rounds carry the balloon's figures for a few seconds
                    assert got.mem_total_kib in (lo.mem_total_kib, hi.mem_total_kib), name
            lo, got, hi = before[busy], direct[busy], after[busy]
            unpinned = carry.read_offset.high - carry.read_offset.low
            assert lo.disk_rd_bytes - unpinned <= got.disk_rd_bytes <= hi.disk_rd_bytes, (round_, unpinned)
            written = hi.disk_wr_bytes - first[0].disk_wr_bytes
            assert lo.disk_wr_bytes - written // 200 <= got.disk_wr_bytes <= hi.disk_wr_bytes + written // 200
            time.sleep(1)
        assert written > 0 and got.disk_rd_bytes > first[1].disk_rd_bytes, "the disk guest did I/O"
        carried, libvirts_own = got.disk_time_ns - first[1].disk_time_ns, hi.disk_time_ns - first[0].disk_time_ns
        assert 0.5 <= carried / libvirts_own <= 2, (carried, libvirts_own)
        qemus = [q for reader in readers.values() for q in reader.qemus.values()]
        assert len(qemus) == len(GUESTS) and all(q is not None for q in qemus), "every guest was read from /proc"
        assert sum(bool(q.taps) for q in qemus) == 2 and all(q.file_disks and q.raw_disks for q in qemus)
    finally:
        provider.close()
        conn.close()
