"""The elastic Slurm lab: a private libvirtd (its own network namespace, a NAT network with DHCP)
and a private Slurm cluster whose slurmctld, munged and one static node run inside that same
namespace, listening on the network's gateway address, so VMs booted by cm reach the controller
and the controller reaches their slurmd.  Nothing is sent outside namespaces the test made.

``lab`` (module fixture) yields an :class:`ElasticLab`: ``slurm`` (a started
``tests.infra.slurm.SlurmCluster``), ``libvirtd`` (a ``PrivateLibvirtd``), ``kernel``/``initrd``
of the slurmd guest, ``cm(*words)`` running cm inside the namespace (as slurmctld's programs run),
``domains()`` the VMs libvirt has.  With ``second_host=True`` a second libvirtd (``second``,
host ``h2`` of the cloud) shares the namespace, the storage directory and the bridge, so a VM
migrates between the two keeping its address.  ``launched_cluster`` records the lab's Slurm as
a cluster cm launched, whose head is a real sshd (``tests.infra.sshd.LoginHost``) in the namespace.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.infra.libvirtd_ns import DEFAULT_SUBNET, PrivateLibvirtd
from tests.infra.slurm import SlurmCluster

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = str(next(ipaddress.ip_network(DEFAULT_SUBNET).hosts()))
CLOUD = "burst"


def lab_marks(*tools: str) -> list:
    """The pytest marks of a test module on the lab: e2e, root, and the daemons (plus ``tools``) installed."""
    import shutil

    import pytest

    needed = ("libvirtd", "qemu-system-x86_64", "slurmctld", "slurmd", "munged", "dnsmasq", *tools)
    return [pytest.mark.e2e,
            pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, libvirtd)"),
            pytest.mark.skipif(not all(shutil.which(t) for t in needed), reason="e2e: run scripts/install-system-packages.sh")]


class NsHost:
    """A place for SlurmCluster's daemons and clients: the private libvirtd's network namespace."""

    def __init__(self, netns: str, addr: str) -> None:
        self.ns, self.addr, self.name = netns, addr, socket.gethostname()

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.ns}", *argv]

    def run(self, argv: list[str], timeout: float = 60, check: bool = False, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        return subprocess.run(self.wrap(argv), text=True, timeout=timeout, check=check, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.wrap(argv), start_new_session=True, **kw)


class NsSlurm(SlurmCluster):
    """A SlurmCluster inside ``host``'s namespace; slurmctld answers at the gateway address."""

    def __init__(self, prefix: str, base_port: int, host: NsHost, **options) -> None:
        super().__init__(prefix, base_port, nodes=1, **options)
        self.ns_host = host

    def start(self) -> "NsSlurm":
        self.hosts.update(head=self.ns_host, n1=self.ns_host)
        return super().start()

    def write_slurm_conf(self) -> None:
        super().write_slurm_conf()
        lines = [f"SlurmctldHost={socket.gethostname()}({self.ns_host.addr})" if line.startswith("SlurmctldHost=")
                 else line for line in self.conf.read_text().splitlines()]
        self.conf.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        self.hosts.clear()   # the namespace belongs to the libvirtd: not ours to delete
        super().stop()


@dataclass
class ElasticLab:
    libvirtd: PrivateLibvirtd
    slurm: NsSlurm
    kernel: Path
    initrd: Path
    cm_home: Path
    second: PrivateLibvirtd | None = None
    login: object | None = None   # a tests.infra.sshd.LoginHost: the head of the cluster as cm launched it

    def env(self) -> dict[str, str]:
        return {**os.environ, "CM_HOME": str(self.cm_home), "SLURM_CONF": str(self.slurm.conf),
                "PYTHONPATH": str(ROOT)}

    def cm(self, *words: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`cm WORDS` as a process inside the namespace (where scontrol reaches slurmctld)."""
        return subprocess.run(self.slurm.ns_host.wrap([sys.executable, "-m", "cm.main", *words]), text=True,
                              capture_output=True, timeout=timeout, env=self.env(), cwd=self.slurm.tmp,
                              stdin=subprocess.DEVNULL)

    def domains(self) -> list[str]:
        """The VMs of both hosts."""
        return sorted(self.libvirtd.domains() + (self.second.domains() if self.second else []))

    def volumes(self) -> list[str]:
        return self.libvirtd.volumes()


def write_cloud(cm_home: Path, daemon: PrivateLibvirtd, second: PrivateLibvirtd | None = None) -> None:
    """cm.yaml with the kvm cloud ``burst`` on the private libvirtd (and host ``h2`` on ``second``),
    and a small flavor for nodes."""
    path = cm_home / "cm.yaml"
    config = yaml.safe_load(path.read_text()) if path.exists() else \
        yaml.safe_load((ROOT / "defaults" / "cm.yaml").read_text())
    settings = dict(word.split("=", 1) for word in daemon.cloud_settings())
    config.setdefault("clouds", {})[CLOUD] = {
        "kind": "kvm", **settings, "cmdline": "console=ttyS0 panic=-1 quiet",
        "hosts": {"n1": settings["uri"]},   # the static node n1 and the VMs share this machine
        "flavors": {"node": {"vcpus": 1, "ram": 256, "disk": 1}, "big": {"vcpus": 1, "ram": 1024, "disk": 1}}}
    if second:
        config["clouds"][CLOUD].update(migrate_storage="shared", hosts={"n1": {"uri": daemon.uri, "tunnelled": True},
                                                                         "h2": {"uri": second.uri, "tunnelled": True}})
    config["clouds"]["local"]["uri"] = "test:///default"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def guest_files() -> tuple[Path, Path]:
    """(kernel, initrd) of the slurmd guest, cached in $CM_E2E_CACHE (default ~/.cache/cm-e2e)."""
    from tests.e2e.slurm_guest import build_slurm_guest

    return build_slurm_guest(Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e")))


@contextmanager
def running_lab(label: str, prefix: str, port: int, cm_home: Path, second_host: bool = False) -> Iterator[ElasticLab]:
    """A started lab: private libvirtd with pool and network, the cloud in cm.yaml, Slurm, the guest image."""
    from contextlib import nullcontext

    from tests.infra.libvirtd_ns import private_libvirtd_running

    kernel, initrd = guest_files()
    with private_libvirtd_running(label) as daemon:
        daemon.ensure_pool()
        daemon.ensure_network()
        with (PrivateLibvirtd(f"{label}2", netns=daemon.netns) if second_host else nullcontext()) as second:
            if second:
                _share_storage_and_bridge(daemon, second)
            write_cloud(cm_home, daemon, second)
            with NsSlurm(prefix, port, NsHost(daemon.netns, GATEWAY)) as slurm:
                lab = ElasticLab(daemon, slurm, kernel, initrd, cm_home, second)
                added = lab.cm("image", "add", "slurmd", f"kernel={kernel},initrd={initrd}", "--cloud", CLOUD)
                if added.returncode != 0:
                    raise RuntimeError(f"cm image add failed: {added.stderr}")
                yield lab


def _share_storage_and_bridge(one: PrivateLibvirtd, two: PrivateLibvirtd) -> None:
    """``two``'s pool 'default' is ``one``'s directory; its network 'default' is ``one``'s bridge."""
    _share_pool(one, two)
    two.ensure_network(bridge=one.bridge())


def _share_pool(one: PrivateLibvirtd, two: PrivateLibvirtd) -> None:
    """``two``'s pool 'default' is ``one``'s directory (shared storage)."""
    conn = two.connect()
    try:
        conn.storagePoolDefineXML(f"<pool type='dir'><name>default</name><target><path>{one.pool_dir}"
                                  "</path></target></pool>", 0).create(0)
    finally:
        conn.close()


def ok(proc: subprocess.CompletedProcess) -> str:
    """The stdout of a command that must have succeeded (else its exit code, stdout and stderr)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


JOB_TIMEOUT = 300   # submission to output under TCG on 2 busy cores


def burst_status(lab: ElasticLab) -> dict[str, dict]:
    """`cm slurm burst status` of the lab's cluster: node -> its row."""
    rows = json.loads(ok(lab.cm("slurm", "burst", "status", str(lab.slurm.conf), "-f", "json")))
    return {r["node"]: r for r in rows}


def job_in_guest(lab: ElasticLab, node: str, hostname: str = "") -> tuple[str, str, float]:
    """srun on cloud node ``node`` (powered down: cm boots it); asserts the job answered from inside the node's
    VM (whose hostname is ``hostname``, by default the VM cm names) at the address `burst status` shows;
    returns (its output, that address, seconds from srun to output)."""
    vm = hostname or f"{lab.slurm.cluster_name}-{node}".replace("_", "-")
    started = time.monotonic()
    job = lab.slurm.run(["srun", "-p", "cloud", "-N1", "-w", node, "sh", "-c", "hostname; ip -4 -o addr"],
                        timeout=JOB_TIMEOUT)
    took = time.monotonic() - started
    assert job.returncode == 0, job.stderr + lab.slurm.log("slurmctld")[-2000:]
    assert job.stdout.split()[0] == vm, job.stdout   # answered from inside the guest
    address = burst_status(lab)[node]["address"]
    assert address and address in job.stdout, (address, job.stdout)
    return job.stdout, address, took


@contextmanager
def lab_with_head(label: str, prefix: str, port: int, ssh_port: int, cm_home: Path, name: str,
                  hide: tuple[Path, ...] = (), second_host: bool = False) -> Iterator[ElasticLab]:
    """A started lab whose Slurm is cluster ``name`` cm launched, its head a real sshd (``lab.login``) in
    the namespace; ``hide``: directories that sshd's sessions see empty."""
    from tests.infra.sshd import LoginHost

    with running_lab(label, prefix, port, cm_home, second_host=second_host) as lab:
        with LoginHost(f"{label}-l", ssh_port, env={"SLURM_CONF": str(lab.slurm.conf)}, host=lab.slurm.ns_host,
                       hide=list(hide)) as login:
            launched_cluster(lab, name, login)
            lab.login = login
            yield lab


def launched_cluster(lab: ElasticLab, name: str, login, mirror_cloud: str = CLOUD) -> None:
    """Record the lab's Slurm as cluster ``name`` that cm launched on ``mirror_cloud``: ready, its head
    the sshd ``login`` (a LoginHost in the namespace), its munge key in cm's secrets file."""
    record = {"name": name, "recipe": "slurm", "state": "ready", "params": {}, "cloud": mirror_cloud,
              "outputs": {"login": login.alias, "user": "root", "ssh_config": str(login.ssh_config),
                          "slurm_conf": str(lab.slurm.conf)},
              "nodes": [{"name": f"{name}-head", "role": "head", "state": "ready", "address": GATEWAY}]}
    secrets = lab.cm_home / "clusters" / mirror_cloud / f"{name}.secrets.json"
    secrets.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = (lab.slurm.tmp / "munge" / "munge.key").read_bytes()
    secrets.write_text(json.dumps({"munge_key": base64.b64encode(key).decode()}))
    secrets.chmod(0o600)
    script = ("import json, sys\nfrom cm.context import Context\n"
              f"Context().mirror.put('cluster', {mirror_cloud!r}, json.loads(sys.stdin.read()))\n")
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(record), text=True, capture_output=True,
                          env=lab.env(), timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"could not record cluster {name}: {done.stderr}")


@contextmanager
def two_hosts(label: str) -> Iterator[tuple[PrivateLibvirtd, PrivateLibvirtd]]:
    """Two private libvirtds; the second's pool 'default' is the first's directory (shared storage)."""
    one, two = PrivateLibvirtd(f"{label}1"), PrivateLibvirtd(f"{label}2")
    with one, two:
        one.ensure_pool()
        one.ensure_network()
        two.ensure_network()
        _share_pool(one, two)
        yield one, two
