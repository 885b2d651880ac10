"""End-to-end: `cm slurm -n 2` on a real libvirtd + QEMU (software emulation) that the test starts
in a network namespace it creates, from the Debian image the suite builds (cloud-init, munge,
Slurm and NFS inside), configured by nothing but the launcher's user-data.

The kvm cloud reserves every node's address ahead of boot (a DHCP host entry on the libvirt
network), so head and workers are requested together: one wave, about one VM boot in all.
`srun -N2 hostname` on the head answers from both workers; the cluster is a slurm cloud of its own,
so `cm hpc run --cloud NAME` runs a job on it; `cm cluster resize +1` gives a third worker that Slurm
takes without a restart (`srun -N3`), `resize -1` drains it over ssh and removes it; `cm cluster
delete` leaves no domain, no volume and no DHCP host entry.  Everything that reaches a guest (ssh,
and the cm commands that ssh) runs inside the namespace: the guests' network lives only there.
Run with ``python -m pytest -m e2e tests/e2e/test_slurm_cluster.py -s`` to see the timeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

guest_image = pytest.importorskip("tests.infra.guest_image", reason="e2e: the Debian guest infrastructure is missing")
libvirtd_ns = pytest.importorskip("tests.infra.libvirtd_ns", reason="e2e: the private libvirtd is missing")
debian_image = guest_image.debian_image
private_libvirtd = libvirtd_ns.private_libvirtd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, debootstrap)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "qemu-system-x86_64", "ssh", "ssh-keygen")),
                       reason="e2e: libvirtd/qemu/ssh missing: run scripts/install-system-packages.sh"),
]
pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")

LAUNCH_TIMEOUT = 3600  # seconds: TCG guests on two shared cores (measured: 11 min to the head's address under load 25)


def ok(result) -> str:
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    return result.out


def on_head(daemon, key: Path, address: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """ssh tester@head from inside the namespace, with the key cm put in the nodes' seeds."""
    return daemon.ssh(key, f"tester@{address}", command, timeout)


def test_slurm_two_workers_run_srun_then_resize_to_three_then_delete(cm_process, tmp_path, private_libvirtd,
                                                                    debian_image):
    daemon = private_libvirtd
    ok(cm_process("cloud", "add", "lab", "--kind", "kvm", *daemon.cloud_settings()))
    ok(cm_process("image", "add", "debian12", str(debian_image.directory), "--cloud", "lab", timeout=600))
    image_volumes = daemon.volumes()
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    ok(cm_process("default", f"key={key}.pub", "--cloud", "lab"))
    name = f"e2e{os.getpid() % 10000}"
    started = time.monotonic()
    try:
        launched = cm_process("slurm", "-n", "2", "--cloud", "lab", "--name", name, "--image", "debian12",
                              "--flavor", "small", "--timeout", "2400", "-f", "json", timeout=LAUNCH_TIMEOUT)
        took = time.monotonic() - started
        print(f"\n`cm slurm -n 2` to 2 idle nodes: {took:.1f} s")
        print(cm_process("cluster", "timeline", name, "--cloud", "lab").out)
        assert launched.code == 0, launched.err + "\n" + _consoles(cm_process, name)
        nodes = json.loads(launched.out)
        assert [(n["name"], n["state"]) for n in nodes] == [(f"{name}-head", "ready"), (f"{name}-worker1", "ready"),
                                                            (f"{name}-worker2", "ready")]
        head = nodes[0]["address"]
        assert dhcp_hosts(daemon) == [f"{name}-head", f"{name}-worker1", f"{name}-worker2"]
        timeline = {r["node"]: r for r in json.loads(ok(cm_process("cluster", "timeline", name, "--cloud", "lab",
                                                                   "-f", "json")))}
        # one wave: the workers were requested with the head, not after it had an address
        assert all(r["requested"] < 5 for r in timeline.values()), timeline
        answer = on_head(daemon, key, head, "srun -N2 hostname")
        assert answer.returncode == 0, answer.stderr
        assert sorted(answer.stdout.split()) == [f"{name}-worker1", f"{name}-worker2"]

        # the launched cluster is a slurm cloud of its own: a batch job from here, as a user runs one
        job = cm_in_lab(daemon, "hpc", "run", "--cloud", name, "--command", "srun hostname", "--nodes", "2",
                        "--wait", "--timeout", "300", "--output", str(tmp_path / "job"), "-f", "json")
        assert job.returncode == 0, job.stdout + job.stderr
        assert json.loads(job.stdout)["state"] == "COMPLETED"
        printed = " ".join(f.read_text() for f in (tmp_path / "job").glob("*.out"))
        assert sorted(printed.split()) == [f"{name}-worker1", f"{name}-worker2"]

        grown = cm_process("cluster", "resize", name, "+1", "--cloud", "lab", "--timeout", "2400", "-f", "json",
                           timeout=LAUNCH_TIMEOUT)
        assert grown.code == 0, grown.err + "\n" + _consoles(cm_process, name)
        assert [n["name"] for n in json.loads(grown.out)][-1] == f"{name}-worker3"
        answer = on_head(daemon, key, head, "srun -N3 hostname")
        assert answer.returncode == 0, answer.stderr
        assert sorted(answer.stdout.split()) == [f"{name}-worker1", f"{name}-worker2", f"{name}-worker3"]
        print(cm_process("cluster", "timeline", name, "--cloud", "lab").out)

        # shrink: cm drains the newest worker through ssh to the head, then deletes its VM and address
        shrunk = cm_in_lab(daemon, "cluster", "resize", name, "-1", "--cloud", "lab")
        assert shrunk.returncode == 0, shrunk.stdout + shrunk.stderr
        assert f"removed {name}-worker3 from cluster '{name}'" in shrunk.stderr
        assert f"{name}-worker3" not in daemon.domains()
        assert f"{name}-worker3" not in dhcp_hosts(daemon)
        answer = on_head(daemon, key, head, "sinfo -h -N -o %N; srun -N2 hostname")
        assert answer.returncode == 0, answer.stderr
        lines = answer.stdout.split()
        assert sorted(set(lines)) == [f"{name}-worker1", f"{name}-worker2"], lines
    finally:
        deleted = cm_process("cluster", "delete", name, "--cloud", "lab", timeout=600)
    assert deleted.code == 0, deleted.err
    assert daemon.domains() == []
    assert daemon.volumes() == image_volumes
    assert dhcp_hosts(daemon) == []
    ok(cm_process("image", "delete", "debian12", "--cloud", "lab"))


def cm_in_lab(daemon, *words: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`cm WORDS...` run inside the lab's network namespace, as a user on the guests' network would."""
    return daemon.run([sys.executable, "-m", "cm.main", *words], timeout=timeout, env=os.environ.copy())


def dhcp_hosts(daemon, network: str = "default") -> list[str]:
    """The names of the DHCP host entries (reserved addresses) on the lab's network."""
    conn = daemon.connect()
    try:
        root = ET.fromstring(conn.networkLookupByName(network).XMLDesc(0))
    finally:
        conn.close()
    return sorted(h.get("name", "") for h in root.findall("ip/dhcp/host"))


def _consoles(cm_process, name: str) -> str:
    """The last lines of each node's console, for a failure message."""
    out = []
    for node in json.loads(cm_process("cluster", "nodes", name, "--cloud", "lab", "--all", "-f", "json").out or "[]"):
        console = cm_process("vm", "console", node["name"], "--cloud", "lab")
        out.append(f"--- {node['name']} ({node['state']}: {node['reason']})\n" + "\n".join(console.out.splitlines()[-25:]))
    return "\n".join(out)
