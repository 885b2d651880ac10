"""End-to-end: `cm slurm -n 2` on a real libvirtd + QEMU (software emulation) that the test starts
in a network namespace it creates, from the Debian image the suite builds (cloud-init, munge,
Slurm and NFS inside), configured by nothing but the launcher's user-data.

`srun -N2 hostname` on the head answers from both workers; `cm cluster resize +1` gives a third
worker that Slurm takes without a restart (`srun -N3`); `cm cluster delete` leaves no domain and
no volume.  ssh to the head runs inside the namespace (the guests' network lives only there).
Run with ``python -m pytest -m e2e tests/e2e/test_slurm_cluster.py -s`` to see the timeline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
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
        answer = on_head(daemon, key, head, "srun -N2 hostname")
        assert answer.returncode == 0, answer.stderr
        assert sorted(answer.stdout.split()) == [f"{name}-worker1", f"{name}-worker2"]

        grown = cm_process("cluster", "resize", name, "+1", "--cloud", "lab", "--timeout", "2400", "-f", "json",
                           timeout=LAUNCH_TIMEOUT)
        assert grown.code == 0, grown.err + "\n" + _consoles(cm_process, name)
        assert [n["name"] for n in json.loads(grown.out)][-1] == f"{name}-worker3"
        answer = on_head(daemon, key, head, "srun -N3 hostname")
        assert answer.returncode == 0, answer.stderr
        assert sorted(answer.stdout.split()) == [f"{name}-worker1", f"{name}-worker2", f"{name}-worker3"]
        print(cm_process("cluster", "timeline", name, "--cloud", "lab").out)
    finally:
        deleted = cm_process("cluster", "delete", name, "--cloud", "lab", timeout=600)
    assert deleted.code == 0, deleted.err
    assert daemon.domains() == []
    assert daemon.volumes() == image_volumes
    ok(cm_process("image", "delete", "debian12", "--cloud", "lab"))


def _consoles(cm_process, name: str) -> str:
    """The last lines of each node's console, for a failure message."""
    out = []
    for node in json.loads(cm_process("cluster", "nodes", name, "--cloud", "lab", "--all", "-f", "json").out or "[]"):
        console = cm_process("vm", "console", node["name"], "--cloud", "lab")
        out.append(f"--- {node['name']} ({node['state']}: {node['reason']})\n" + "\n".join(console.out.splitlines()[-25:]))
    return "\n".join(out)
