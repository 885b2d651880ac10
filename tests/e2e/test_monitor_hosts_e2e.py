"""End-to-end: VM or host as a CPU bottleneck, and `cm monitor tune --apply` moving a starved VM live.

Two private libvirtds (one cloud listing both as ``hosts:``, shared storage).  A
CPU-bound guest (one busy vCPU, TCG) runs alone on h1: the host has CPUs to
spare, so `check` names the VM (it wants more vCPUs).  Then three more busy
guests start on h1: four busy vCPUs on this machine's two cores, so the guest
waits for a host CPU, and `check` names the host.  `tune --apply` picks the
cloud's other host from the host samples and migrates the guest there live; it
then runs on h2 and the collector keeps sampling it there.  Every cm command
runs as its own process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e import workloads

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, libvirtd)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64", "dnsmasq",
                                                         "dpkg-deb")),
                       reason="e2e: libvirtd/qemu missing: run scripts/install-system-packages.sh"),
]
pytest.importorskip("libvirt")
pytest.importorskip("sklearn")

WINDOW = 10.0  # seconds per run
LOADERS = ("mh-load1", "mh-load2", "mh-load3")


def define(daemon, name: str, kernel: Path, initrd: Path) -> None:
    """A one-vCPU busy guest on ``daemon``, its disk in the shared pool directory."""
    disk = workloads.data_disk(daemon.pool_dir / f"{name}.img", 8)
    conn = daemon.connect()
    try:
        conn.defineXML(workloads.domain_xml(name, kernel, initrd, "cpu", disk,
                                            f"/var/log/libvirt/qemu/{name}-console.log", memory_mib=128,
                                            max_memory_mib=128, max_vcpus=1)).create()
    finally:
        conn.close()


def running(daemon) -> list[str]:
    conn = daemon.connect()
    try:
        return sorted(d.name() for d in conn.listAllDomains() if d.isActive())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    """Both hosts, the cloud in a fresh cm home, the collector sampling the CPU guest; all stopped after."""
    import subprocess
    import sys

    from tests.e2e.elastic_lab import two_hosts

    cache = Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e"))
    kernel, initrd = workloads.build(cache)
    home = tmp_path_factory.mktemp("cmhome")
    env = {**os.environ, "CM_HOME": str(home), "HOME": str(home)}

    def cm(*words: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "cm.main", *words], capture_output=True, text=True,
                              env=env, timeout=300)
        assert not check or done.returncode == 0, f"cm {' '.join(words)}: {done.stderr}"
        return done

    with two_hosts("monh") as (one, two):
        cm("cloud", "add", "two", "--kind", "kvm", *one.cloud_settings())
        added = home / "clouds.d" / "two.yaml"  # nested settings: edited in the file, as a user does
        config = yaml.safe_load(added.read_text())
        config.update({"migrate_storage": "shared", "hosts": {"h1": {"uri": one.uri, "tunnelled": True},
                                                              "h2": {"uri": two.uri, "tunnelled": True}}})
        added.write_text(yaml.safe_dump(config))
        cm("default", "cloud=two")
        define(one, "mh-cpu", kernel, initrd)
        workloads.wait_started(one.console_dir / "mh-cpu-console.log")
        cm("refresh", "vm")
        cm("monitor", "start", "mh-cpu", "--interval", "1s")
        try:
            yield {"cm": cm, "h1": one, "h2": two, "kernel": kernel, "initrd": initrd}
        finally:
            cm("monitor", "stop", check=False)


def record_run(cm, name: str) -> None:
    """The next WINDOW seconds of mh-cpu as run ``name``."""
    begin = time.time()
    time.sleep(WINDOW)
    now = time.time()
    cm("monitor", "run", "add", name, "mh-cpu", "--since", f"{now - begin:.1f}s", "--label", "cpu")


@pytest.fixture(scope="module")
def verdicts(lab):
    """check of mh-cpu alone on h1, then crowded by three more busy guests."""
    cm = lab["cm"]
    time.sleep(3)  # two readings before the first window: rates need a previous one
    record_run(cm, "alone")
    for name in LOADERS:
        define(lab["h1"], name, lab["kernel"], lab["initrd"])
    for name in LOADERS:
        workloads.wait_started(lab["h1"].console_dir / f"{name}-console.log")
    time.sleep(2)
    record_run(cm, "crowded")
    cm("monitor", "profile", "learn", "alone", "crowded")
    return {run: json.loads(cm("monitor", "check", run, "-f", "json").stdout) for run in ("alone", "crowded")}


def percent(text: str) -> float:
    return float(text.rstrip("%")) / 100


def test_a_cpu_bound_guest_on_a_host_with_cpus_to_spare_is_a_vm_bottleneck(verdicts):
    alone = verdicts["alone"]
    assert alone["bottleneck"] == "cpu", alone
    assert percent(alone["cpu"]) + percent(alone["steal"]) >= 0.75, alone  # it (nearly) always wants its vCPU
    if percent(alone["host_cpu"]) < 0.8:  # this machine had a core to spare, as it has when the test runs alone
        assert alone["level"] == "vm", alone
        assert f"while the host's CPUs were {alone['host_cpu']} busy" in alone["why"]
    else:  # other work filled this machine: a host verdict must then say the host was busy
        assert alone["level"] == "vm" or f"the host's CPUs were {alone['host_cpu']} busy" in alone["why"], alone


def test_crowded_by_other_guests_it_is_a_host_bottleneck(verdicts):
    crowded = verdicts["crowded"]
    assert (crowded["bottleneck"], crowded["level"]) == ("cpu", "host"), crowded
    assert percent(crowded["host_cpu"]) >= 0.8 and percent(crowded["steal"]) >= 0.25, crowded
    assert "waited for a host CPU" in crowded["why"]


def test_tune_apply_migrates_it_live_to_the_other_host(lab, verdicts):
    cm = lab["cm"]
    suggested = json.loads(cm("monitor", "tune", "crowded", "-f", "json").stdout)
    assert suggested[0]["change"].startswith("move it to the least loaded other host: cm vm migrate mh-cpu --to h2 "), \
        suggested
    moved_at = time.time()
    rows = json.loads(cm("monitor", "tune", "crowded", "--apply", "-f", "json").stdout)
    assert rows[0]["result"] == "done: running on h2", rows
    where = {"h1": running(lab["h1"]), "h2": running(lab["h2"])}
    assert "mh-cpu" in where["h2"] and "mh-cpu" not in where["h1"], where
    shown = cm("vm", "show", "mh-cpu", "-f", "yaml").stdout
    assert "host: h2" in shown, shown
    deadline = time.monotonic() + 60  # the collector finds it on h2 and keeps sampling it
    while True:
        out = cm("monitor", "export", "mh-cpu", "--since", "30s").stdout
        after = [r for r in csv.DictReader(io.StringIO(out)) if r["node"] == "mh-cpu"
                 and int(r["t"]) / 1000 > moved_at + 3]
        if len(after) >= 2:
            break
        assert time.monotonic() < deadline, out[-500:]
        time.sleep(1)
    assert all(int(r["cpu"]) > 0 for r in after), after  # the guest runs there (its vCPU time grows)
