"""The Nucleus service for tests: its configuration, and `cm comet serve` as a real process on loopback."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.infra.procs import wait_for  # noqa: F401  (re-exported for the comet tests)

ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}
# Slurm prefixes carry the checkout: a start reaps what its own prefix left, never another worktree's running test
TREE = hashlib.sha256(str(ROOT).encode()).hexdigest()[:4]


def prefix(name: str) -> str:
    """A Slurm cluster prefix private to this checkout (``comet-a`` -> ``comet-a-1f2e``)."""
    return f"{name}-{TREE}"


def free_ports(count: int = 1, low: int = 30000, high: int = 32500) -> int:
    """The first of ``count`` consecutive loopback ports nobody listens on now (concurrent runs pick others)."""
    for _ in range(200):
        base = random.randrange(low, high - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {count} free consecutive ports in {low}-{high}")


def write_config(directory: Path, port: int, slurm_env: dict[str, str], hosts: dict[str, str], *,
                 computes: str = "vm-vc1-[0-3]", compute_hosts: str = "n[1-3]", frontend_host: str = "n1",
                 domain_xml: Path | None = None, extra: dict[str, Any] | None = None, memory: int = 128) -> Path:
    """A service configuration: users alice (abc101) and bob (abc101, xyz202), clusters vc1 and vc2."""
    from cm_nucleus.auth import hash_password

    directory.mkdir(parents=True, exist_ok=True)
    vc1: dict[str, Any] = {"description": "test cluster", "project": "abc101", "vlan": 101,
                           "allocations": ["abc101", "xyz202"],
                           "frontend": {"name": "vc1", "host": frontend_host, "cpus": 1, "memory": 128,
                                        "pub_ip": "127.0.0.1"},
                           "computes": [{"name": computes, "hosts": compute_hosts, "cpus": 1, "memory": memory}]}
    if domain_xml:
        vc1["domain_xml"] = str(domain_xml)
    config = {
        "state_dir": str(directory / "state"),
        "listen": {"host": "127.0.0.1", "port": port},
        "slurm": {"conf": slurm_env["SLURM_CONF"]},
        "reconcile_interval": 5,
        "hosts": hosts,
        "users": {"alice": {"password_hash": hash_password(PASSWORDS["alice"]), "email": "alice@example.org",
                            "allocations": ["abc101"]},
                  "bob": {"password_hash": hash_password(PASSWORDS["bob"]), "email": "bob@example.org",
                          "allocations": ["abc101", "xyz202"]}},
        "clusters": {"vc1": vc1,
                     "vc2": {"allocations": ["xyz202"], "frontend": {"name": "vc2", "host": frontend_host},
                             "computes": [{"name": "vm-vc2-0", "hosts": compute_hosts}]}},
        **(extra or {}),
    }
    path = directory / "nucleus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Nucleus:
    """`cm comet serve --config FILE` in its own process; stopped (or killed) by pid.

    With ``host`` (an object with ``wrap(argv)`` and ``run(argv)``, e.g. the elastic lab's NsHost) it
    runs inside that host's network namespace, on that namespace's loopback."""

    def __init__(self, config: Path, port: int, host: Any = None) -> None:
        self.config, self.port, self.host = config, port, host
        self.base = f"http://127.0.0.1:{port}/nucleus"
        self.proc: subprocess.Popen | None = None
        self.log = config.parent / "service.log"

    def start(self, timeout: float = 60) -> "Nucleus":
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        argv = [sys.executable, "-m", "cm.main", "comet", "serve", "--config", str(self.config)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.host.wrap(argv) if self.host else argv, cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited ({self.proc.returncode}):\n{self.log_text()}")
            if self.answers():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the service did not answer in {timeout:g} s:\n{self.log_text()}")
            time.sleep(0.1)

    def answers(self) -> bool:
        """True once the service serves its OpenAPI description (asked from where it listens)."""
        url = f"{self.base}/openapi.json"
        if self.host:
            return self.host.run(["curl", "-sf", "-o", "/dev/null", "--max-time", "2", url], timeout=10).returncode == 0
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def iso_files(self) -> dict[str, int]:
        """The ISO files the service keeps: path under its iso directory -> permission bits."""
        root = self.config.parent / "state" / "iso"
        return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def token(self, user: str = "alice") -> str:
        response = requests.post(f"{self.base}/rest-auth/login/", json={"username": user, "password": PASSWORDS[user]},
                                 timeout=30)
        response.raise_for_status()
        return response.json()["key"]


DOMAIN = """<domain type='qemu'>
  <name>$$domain</name>
  <memory unit='MiB'>$$memory</memory>
  <vcpu>$$cpus</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>$kernel</kernel><initrd>$initrd</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    $$iso_disk$devices
    <serial type='pty'><log file='$$console_log' append='off'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def domain_template(kernel: Path, initrd: Path, devices: str = "") -> str:
    """The service's domain template (``domain_xml``) for a direct-kernel-boot test guest, plus ``devices``."""
    from string import Template

    return Template(DOMAIN).substitute(kernel=kernel, initrd=initrd, devices=devices)


def test_driver_hosts(directory: Path, names: tuple[str, ...] = ("n1", "n2", "n3")) -> dict[str, str]:
    """Each Slurm node's hypervisor: its own instance of libvirt's test driver in the service's process."""
    hosts = {}
    for name in names:
        node = directory / f"{name}.xml"
        node.write_text("<node></node>\n")
        hosts[name] = f"test://{node}"
    return hosts


def cancel_all(slurm) -> None:
    """Cancel every job and wait until the queue is empty (COMPLETING ones included)."""
    jobs = slurm.run(["squeue", "-h", "-o", "%i"]).stdout.split()
    if jobs:
        slurm.run(["scancel", *jobs])
    wait_for("an empty Slurm queue", lambda: not slurm.run(["squeue", "-h", "-o", "%i"]).stdout.strip(), 60)


@contextmanager
def serving(directory: Path, slurm, hosts: dict[str, str], **options: Any) -> Iterator[Nucleus]:
    """The service on a free loopback port with a fresh database; its jobs cancelled and it stopped after."""
    port = free_ports()
    service = Nucleus(write_config(directory, port, slurm.client_env, hosts, **options), port).start()
    try:
        yield service
    finally:
        cancel_all(slurm)  # first, while the service answers the jobs' last callbacks (else they retry until killed)
        service.stop()
