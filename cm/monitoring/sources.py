"""Where readings come from: the cloud's hypervisor (vm_stats, host_stats), else the guest itself over ssh.

An OpenStack user cannot reach the hypervisor, so cm logs into each VM (the
ssh binary, one ControlMaster connection per VM kept open between samples) and
reads its /proc counters; the physical host is then out of sight.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cm.errors import CmError, Unsupported
from cm.monitoring import procfs
from cm.provider import VMStats

SSH_TIMEOUT = 10


def control_dir(home: Path) -> Path:
    """A short private directory for ssh's control sockets (a socket's path must fit in 108 bytes)."""
    import hashlib
    import tempfile

    tag = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"cm-ssh-{os.getuid()}-{tag}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.getuid() or path.stat().st_mode & 0o077:
        raise CmError(f"{path} is not a private directory of yours; remove it")
    return path


def ssh_command(address: str, login: str, control_dir: Path, options: list[str]) -> list[str]:
    """The ssh command line that prints a guest's /proc counters, reusing one connection per guest."""
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=5",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={control_dir}/%C", "-o", "ControlPersist=120",
            *options, f"{login}@{address}", procfs.READ_COMMAND]


def read_over_ssh(name: str, command: list[str]) -> VMStats:
    done = subprocess.run(command, capture_output=True, text=True, timeout=SSH_TIMEOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise CmError(f"ssh to {name} failed: {(done.stderr.strip().splitlines() or ['exit %d' % done.returncode])[-1]}")
    return procfs.parse(name, done.stdout)


class CloudSource:
    """The VMs of one cloud: through the provider where it reads statistics, else over ssh."""

    def __init__(self, ctx: Any, cloud: str, names: list[str], home: Path, warn: Callable[[str], None]) -> None:
        self.ctx, self.cloud, self.names = ctx, cloud, names
        self.warn = warn
        self.provider = ctx.provider(cloud)
        self.by_hypervisor = "vm_stats" in type(self.provider).verbs()
        self.sees_host = "host_stats" in type(self.provider).verbs()
        self.control_dir = None if self.by_hypervisor else control_dir(home)
        self._pool = None if self.by_hypervisor else ThreadPoolExecutor(max_workers=8)
        self._failed: set[str] = set()
        # how to log in, read once: the settings do not change under a running collector (start reads them)
        conf = ctx.config.cloud(cloud)
        self.login = str(ctx.value("login", cloud) or "root")
        self.ssh_options = [str(o) for o in conf.get("ssh_options") or []]

    def read(self) -> tuple[list[VMStats], list[VMStats]]:
        """(the VMs' readings, the hosts' readings: none where cm cannot see them)."""
        hosts: list[VMStats] = []
        if self.sees_host:
            try:
                hosts = self.provider.host_stats()
            except Unsupported:
                self.sees_host = False
        if self.by_hypervisor:
            return self.provider.vm_stats(self.names), hosts
        assert self._pool is not None
        results = list(self._pool.map(self._guest, self.names))
        return [r for r in results if r is not None], hosts

    def _guest(self, name: str) -> VMStats | None:
        record = self.ctx.mirror.get("vm", self.cloud, name) or {}
        addresses = [*record.get("public_ips", []), *record.get("private_ips", [])]
        if not addresses:
            return None
        assert self.control_dir is not None
        command = ssh_command(addresses[0], self.login, self.control_dir, self.ssh_options)
        try:
            stats = read_over_ssh(name, command)
        except (CmError, subprocess.TimeoutExpired, ValueError) as exc:
            if name not in self._failed:  # say it once, not every second
                self._failed.add(name)
                self.warn(f"cannot read {name} over ssh: {exc}")
            return None
        self._failed.discard(name)
        return stats

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        if self.control_dir is not None:
            close_masters(self.control_dir)
            self.control_dir.rmdir()


def close_masters(control_dir: Path) -> None:
    """End the ssh master connections kept open between samples."""
    for socket in Path(control_dir).iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "cm-monitor"], capture_output=True,
                       timeout=SSH_TIMEOUT, stdin=subprocess.DEVNULL)
