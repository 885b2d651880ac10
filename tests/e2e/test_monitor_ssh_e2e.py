"""End-to-end: `cm monitor` reading a VM over ssh, for a cloud whose hypervisor cm cannot reach (OpenStack).

The OpenStack cloud is the project's local API server (loopback); the VM it
boots gets an address on its private network.  A network namespace the test
makes stands for that VM: it holds the address, a real sshd, and known work (a
busy CPU loop, direct disk writes, and a stream of about 10 MB/s sent to it from
a second namespace).  cm runs the collector inside that second namespace, as a
user on the VM's network would: it logs into the VM every second over one kept
ssh connection and reads its /proc counters.  The samples must show the work,
and `cm monitor show` draws them.  Nothing is sent outside the namespaces.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (network namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("sshd", "ssh", "socat", "nsenter")),
                       reason="e2e: sshd, ssh, socat or nsenter missing"),
]
pytest.importorskip("openstack")

PORT = 2222  # sshd in the VM's namespace: a fresh namespace has every port free
WORK = 25.0  # seconds the known work runs
SEND = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], 5001), timeout=10)
chunk, end = bytes(1 << 20), time.time() + float(sys.argv[2])
while time.time() < end:  # about 10 MB/s, for a bounded time
    sock.sendall(chunk)
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """The cloud with one VM, its namespace with sshd, the client namespace; everything stopped after."""
    from tests.infra.netns import Lab
    from tests.infra.sshd import LoginHost
    from tests.openstack_fixtures import IMAGE, write_clouds
    from tests.osapi import start_server

    tmp = tmp_path_factory.mktemp("monssh")
    home = tmp / "home"
    home.mkdir()
    server = start_server()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OS_")}, "CM_HOME": str(home),
           "HOME": str(home), "OS_CLIENT_CONFIG_FILE": str(write_clouds(server, tmp / "clouds.yaml"))}

    def cm(*words: str, netns: str = "") -> subprocess.CompletedProcess:
        inside = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
        done = subprocess.run([*inside, sys.executable, "-m", "cm.main", *words], capture_output=True, text=True,
                              env=env, timeout=300, cwd=tmp)
        assert done.returncode == 0, f"cm {' '.join(words)}: {done.stderr}"
        return done

    key = tmp / "id_ed25519"  # a copy of the key sshd authorizes (its own lives in sshd's temp dir)
    lab = login = None
    try:
        cm("default", "cloud=fake")  # writes cm.yaml
        config = yaml.safe_load((home / "cm.yaml").read_text())
        config.setdefault("clouds", {})["os"] = {  # the clouds.yaml cloud, and how cm logs into its VMs
            "kind": "openstack", "cloud": "fake",
            "ssh_options": ["-p", str(PORT), "-i", str(key), "-o", f"UserKnownHostsFile={tmp / 'known'}"]}
        (home / "cm.yaml").write_text(yaml.safe_dump(config))
        cm("default", "cloud=os")
        for setting in (f"image={IMAGE}", "flavor=m1.tiny", "login=root"):
            cm("default", setting, "--cloud", "os")
        cm("vm", "boot", "--name", "mon-guest")
        vm = json.loads(cm("vm", "show", "mon-guest", "--refresh", "-f", "json").stdout)
        vm = vm[0] if isinstance(vm, list) else vm
        address = [*vm.get("public_ips", []), *vm.get("private_ips", [])][0]
        lab = Lab("monssh", subnet=ipaddress.ip_network(f"{address}/24", strict=False))  # the VM's network
        lab.start()
        guest = lab.add_host("guest", addr=address)
        client = lab.add_host("client", addr=str(lab.subnet.network_address + 250))
        login = LoginHost("monssh-g", port=PORT, host=guest).start()
        shutil.copy(login.key, key)
        key.chmod(0o600)
        yield {"cm": cm, "guest": guest, "client": client, "tmp": tmp, "address": address}
    finally:
        if login is not None:
            login.stop()
        if lab is not None:
            lab.stop()
        server.stop()


@pytest.fixture(scope="module")
def sampled(setup):
    """Samples of the VM: idle first, then while the known work runs; the collector stopped after."""
    cm, guest, client, tmp = setup["cm"], setup["guest"], setup["client"], setup["tmp"]
    started = cm("monitor", "start", "mon-guest", "--interval", "1s", netns=client.ns)
    assert "collector started" in started.stdout
    work: list[subprocess.Popen] = []
    try:
        time.sleep(8)
        work_started = time.time()
        work.append(guest.popen(["socat", "-u", "TCP-LISTEN:5001,reuseaddr", "OPEN:/dev/null"]))
        time.sleep(0.5)
        work.append(guest.popen(["timeout", str(WORK), "sh", "-c", "while :; do :; done"]))
        work.append(guest.popen(["timeout", str(WORK), "sh", "-c",
                                 f"while :; do dd if=/dev/zero of={tmp / 'disk.img'} bs=1M count=32 oflag=direct "
                                 "2>/dev/null; done"]))
        work.append(client.popen([sys.executable, "-c", SEND, setup["address"], str(WORK)]))
        time.sleep(WORK + 2)
        out = cm("monitor", "export", "mon-guest", "--since", "5m").stdout
    finally:
        for proc in work:
            proc.kill()
            proc.wait()
        (tmp / "disk.img").unlink(missing_ok=True)
        cm("monitor", "stop")
    rows = [r for r in csv.DictReader(io.StringIO(out)) if r["node"] == "mon-guest"]
    return {"rows": rows, "work": (work_started + 3, work_started + WORK - 1)}


def mean(rows: list[dict], column: str) -> float:
    return sum(float(r[column]) for r in rows) / len(rows)


def test_the_samples_read_over_ssh_show_the_known_work(sampled):
    rows = sampled["rows"]
    start, end = sampled["work"]
    before = [r for r in rows if int(r["t"]) / 1000 < start - 3]
    during = [r for r in rows if start <= int(r["t"]) / 1000 <= end]
    assert len(before) >= 3 and len(during) >= 10, (len(before), len(during))
    assert {r["kind"] for r in rows} == {"vm"}  # the hypervisor is out of sight
    assert int(during[-1]["ncpu"]) == os.cpu_count()  # the "VM" is this machine, seen through its sshd
    # a stream of about 10 MB/s into the VM's own network namespace; before it, only ssh's few KB/s
    assert mean(during, "net_rx") >= 4e6, [r["net_rx"] for r in during]
    assert mean(before, "net_rx") < 2e5, [r["net_rx"] for r in before]
    assert mean(during, "cpu") >= 400  # a busy loop keeps one of the two CPUs busy (per mille of all)
    assert mean(during, "disk_wr") >= 1e6  # 32 MiB direct writes in a loop
    total = int(Path("/proc/meminfo").read_text().split()[1])
    assert all(int(r["mem_total"]) == total and 0 < int(r["mem_used"]) < total for r in during)


def test_monitor_show_draws_the_ssh_samples(setup, sampled, tmp_path):
    png = tmp_path / "dash.png"
    out = setup["cm"]("monitor", "show", "mon-guest", "--since", "5m", "--png", str(png), "-f", "json").stdout
    rows = {r["node"]: r for r in json.loads(out)}
    assert rows["mon-guest"]["samples"] >= 20, rows
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png.read_bytes()[16:24]) == (1200, 900)
    table = setup["cm"]("monitor", "show", "mon-guest", "--since", "5m").stdout
    assert "mon-guest" in table and any(bar in table for bar in "▂▃▄▅▆▇█")
