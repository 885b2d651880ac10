"""A private libvirtd (+ virtlogd) in its own network and mount namespaces, beside the system one.

``PrivateLibvirtd(label)`` (a context manager; ``private_libvirtd`` is the pytest fixture)
    ``start()`` makes a network namespace ``cm-<label>-<pid>-<n>`` and starts,
    inside it and inside a fresh mount + UTS namespace, virtlogd and libvirtd
    with private directories bind-mounted over /run/libvirt, /var/lib/libvirt,
    /var/log/libvirt, /var/cache/libvirt and /etc/libvirt (a private
    configuration: QEMU runs as root without a security driver, its own
    ``host_uuid``).  Several can run at once, and beside the shared system
    daemon of tests/e2e/libvirtd.py, without seeing each other.

    ``uri`` reaches it from the root namespace over its unix socket:
    ``qemu+unix:///system?socket=<base>/run/libvirt/libvirt-sock``.
    ``ensure_pool()`` / ``ensure_network()`` make a ``dir`` pool under
    ``<base>/images`` and a NAT network (bridge + dnsmasq DHCP) that exist only
    inside the namespace, as do the guests on it; ``run(argv)`` /
    ``command(argv)`` run a program inside the network namespace (to ssh to a
    guest).  ``cloud_settings()`` are the KEY=VALUE words for
    ``cm cloud add NAME --kind kvm``.

    ``PrivateLibvirtd(label, netns=other.netns)`` joins another daemon's network namespace
    instead of making one (a second host on the same network: ``ensure_network(bridge=other.bridge())``
    puts its guests on the first daemon's bridge, so a guest migrated between them keeps its
    address and connections); it then never kills what runs in that namespace nor deletes it.

    ``stop()`` destroys its domains and networks, stops exactly the daemons
    it started (by pid), kills whatever else still runs in its network
    namespace (only its own QEMU and dnsmasq can), deletes the namespace and
    its private directory.  ``leftovers()`` lists anything that survived
    (processes in the namespaces, the namespace itself): empty after ``stop()``.
    A test process killed with -9 cannot stop its daemon: the next ``start()``
    reaps what it left (``reap_stale()``: namespaces ``cmlv-<label>-<pid>-<n>``
    whose pid is gone).

A start takes about 9 s, nearly all of it libvirtd probing QEMU's
capabilities (a copy of an earlier daemon's cache does not help: libvirt
finds the host CPU data changed and probes again).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from tests.e2e import libvirtd as system_libvirtd
from tests.infra.netns import delete_netns, netns_pids

# private directory (under the base) -> where the daemons see it
BIND_MOUNTS = {
    "run/libvirt": "/run/libvirt",
    "lib/libvirt": "/var/lib/libvirt",
    "log/libvirt": "/var/log/libvirt",
    "cache/libvirt": "/var/cache/libvirt",
    "etc/libvirt": "/etc/libvirt",
}
QEMU_CONF = 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n'
DEFAULT_SUBNET = "192.168.150.0/24"   # private to the namespace: no clash with any other
PREFIX = "cmlv-"   # cmlv-<label>-<pid of the test process>-<n>: the namespace and the private directory
_counter = itertools.count(1)


class PrivateLibvirtdError(RuntimeError):
    pass


def _mount_ns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return ""


class PrivateLibvirtd:
    """One libvirtd + virtlogd of our own, in namespaces of our own."""

    def __init__(self, label: str = "lv", base: Path | None = None, netns: str = "") -> None:
        self.label = label
        self.name = f"{PREFIX}{label}-{os.getpid()}-{next(_counter)}"
        self.netns = netns or self.name
        self._own_netns = not netns
        self._own_base = base is None
        self.base = Path(base) if base else Path(tempfile.gettempdir()) / self.name
        self.host_uuid = str(uuid.uuid4())
        self.socket = self.base / "run/libvirt/libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        self.pool_dir = self.base / "images"
        self.console_dir = self.base / "log/libvirt/qemu"   # the same files the daemons see in /var/log/libvirt/qemu
        self.libvirtd: subprocess.Popen | None = None
        self.virtlogd_pid: int | None = None
        self.mount_ns = ""
        self.started_seconds = 0.0

    # -- running things inside ---------------------------------------------------------------
    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the network namespace (``nsenter --net``, never ``ip netns exec``)."""
        return ["nsenter", f"--net=/run/netns/{self.netns}", *argv]

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run a program inside the network namespace; keyword arguments go to subprocess.run."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.command(argv), **kwargs)

    def ssh(self, key: Path, target: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``ssh -i KEY TARGET COMMAND`` (TARGET: user@address of a guest) from inside the namespace."""
        argv = ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                target, command]
        return self.run(argv, timeout=timeout)

    def connect(self):
        import libvirt

        return libvirt.open(self.uri)

    def domains(self) -> list[str]:
        """The names of every domain this daemon has, sorted."""
        conn = self.connect()
        try:
            return sorted(d.name() for d in conn.listAllDomains())
        finally:
            conn.close()

    def volumes(self, pool: str = "default") -> list[str]:
        """The names of the volumes in ``pool``, sorted (after a refresh: files made behind libvirt's back)."""
        conn = self.connect()
        try:
            found = conn.storagePoolLookupByName(pool)
            found.refresh(0)
            return sorted(found.listVolumes())
        finally:
            conn.close()

    # -- start ------------------------------------------------------------------------------
    def _write_config(self) -> None:
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)
        for private in BIND_MOUNTS:
            (self.base / private).mkdir(parents=True, exist_ok=True)
        etc = self.base / "etc/libvirt"
        for conf in Path("/etc/libvirt").glob("*.conf"):   # client settings only: no domains, networks, pools
            shutil.copy2(conf, etc / conf.name)
        (etc / "qemu.conf").write_text(QEMU_CONF)
        (etc / "libvirtd.conf").write_text(f'host_uuid = "{self.host_uuid}"\n')
        (etc / "virtlogd.conf").write_text("")
        for sub in ("lib/libvirt/qemu", "lib/libvirt/images", "log/libvirt/qemu", "cache/libvirt/qemu"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)

    def _script(self) -> str:
        mounts = "".join(f"mkdir -p {seen}; mount --bind {self.base / private} {seen}\n"
                         for private, seen in BIND_MOUNTS.items())
        return (f"set -e\n{mounts}hostname {self.name}\nip link set lo up\n"
                f"virtlogd -d -p {self.base / 'virtlogd.pid'}\n"
                f"exec libvirtd -p {self.base / 'libvirtd.pid'}\n")

    def start(self, timeout: float = 180) -> PrivateLibvirtd:
        if os.geteuid() != 0:
            raise PrivateLibvirtdError("a private libvirtd needs root (namespaces, bind mounts)")
        missing = [t for t in ("libvirtd", "virtlogd", "nsenter", "unshare", "ip") if shutil.which(t) is None]
        if missing:
            raise PrivateLibvirtdError(f"missing {', '.join(missing)}: run scripts/install-system-packages.sh")
        begun = time.monotonic()
        reap_stale()
        system_libvirtd._ensure_user_and_group()
        self._write_config()
        if self._own_netns:
            subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        try:
            log = open(self.base / "libvirtd.log", "ab")
            self.libvirtd = subprocess.Popen(
                self.command(["unshare", "--mount", "--uts", "--propagation", "private",
                              "sh", "-c", self._script()]),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.mount_ns = _mount_ns(self.libvirtd.pid)
        self.started_seconds = time.monotonic() - begun
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.libvirtd.poll() is not None:
                raise PrivateLibvirtdError(f"libvirtd exited ({self.libvirtd.returncode}) during start-up:\n"
                                           + self.log_tail())
            if self.virtlogd_pid is None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    self.virtlogd_pid = int((self.base / "virtlogd.pid").read_text().split()[0])
            if self.socket.exists() and system_libvirtd.can_connect(self.uri):
                return
            if time.monotonic() > deadline:
                raise PrivateLibvirtdError(f"libvirtd did not answer on {self.uri} within {timeout:g} s:\n"
                                           + self.log_tail())
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.base / "libvirtd.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    # -- pools and networks ----------------------------------------------------------------
    def ensure_pool(self, name: str = "default") -> str:
        """An active ``dir`` pool under ``<base>/images``; returns its name."""
        import libvirt

        conn = self.connect()
        try:
            self.pool_dir.mkdir(parents=True, exist_ok=True)
            with system_libvirtd.quiet_libvirt():
                try:
                    pool = conn.storagePoolLookupByName(name)
                except libvirt.libvirtError:
                    pool = conn.storagePoolDefineXML(
                        f"<pool type='dir'><name>{escape(name)}</name>"
                        f"<target><path>{escape(str(self.pool_dir))}</path></target></pool>", 0)
            if not pool.isActive():
                pool.create(0)
            return name
        finally:
            conn.close()

    def ensure_network(self, name: str = "default", subnet: str = DEFAULT_SUBNET, bridge: str = "") -> str:
        """An active NAT network with DHCP (bridge + dnsmasq inside the namespace), or with ``bridge`` one
        whose guests join that existing bridge (another daemon's); returns its name."""
        import ipaddress

        import libvirt

        conn = self.connect()
        try:
            with system_libvirtd.quiet_libvirt():
                try:
                    net = conn.networkLookupByName(name)
                except libvirt.libvirtError:
                    xml = (f"<network><name>{escape(name)}</name><forward mode='bridge'/>"
                           f"<bridge name='{escape(bridge)}'/></network>") if bridge else \
                        system_libvirtd.network_xml(name, ipaddress.ip_network(subnet), "nat")
                    net = conn.networkDefineXML(xml)
            if not net.isActive():
                net.create()
            return name
        finally:
            conn.close()

    def bridge(self, network: str = "default") -> str:
        """The bridge device of one of this daemon's networks."""
        conn = self.connect()
        try:
            return conn.networkLookupByName(network).bridgeName()
        finally:
            conn.close()

    def cloud_settings(self, pool: str = "default", network: str = "default") -> list[str]:
        """KEY=VALUE words for `cm cloud add NAME --kind kvm ...` that reach this daemon."""
        return [f"uri={self.uri}", f"pool={pool}", f"network={network}", f"console_dir={self.console_dir}",
                "domain_type=qemu"]

    # -- stop -------------------------------------------------------------------------------
    def _destroy_everything(self) -> None:
        """Domains, then networks (their dnsmasq and bridge), then pools: nothing outlives the daemon."""
        import libvirt

        with system_libvirtd.quiet_libvirt():
            try:
                conn = self.connect()
            except libvirt.libvirtError:
                return
            try:
                for dom in conn.listAllDomains():
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
                for net in conn.listAllNetworks():
                    with contextlib.suppress(libvirt.libvirtError):
                        if net.isActive():
                            net.destroy()
                for pool in conn.listAllStoragePools():
                    with contextlib.suppress(libvirt.libvirtError):
                        if pool.isActive():
                            pool.destroy()
            finally:
                conn.close()

    def namespace_pids(self) -> list[int]:
        """Processes in our network namespace (when it is ours) or our mount namespace."""
        pids = set(netns_pids(self.netns)) if self._own_netns else set()
        if self.mount_ns:
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and _mount_ns(int(entry.name)) == self.mount_ns:
                    pids.add(int(entry.name))
        return sorted(pids)

    def _kill_all(self) -> None:
        """SIGKILL what still runs in our namespaces (a QEMU or dnsmasq the daemon left: ours) and wait."""
        pids = self.namespace_pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(system_libvirtd._pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float = 30) -> None:
        if self.libvirtd is not None and self.libvirtd.poll() is None:
            self._destroy_everything()
            self.libvirtd.send_signal(signal.SIGTERM)
            try:
                self.libvirtd.wait(timeout)
            except subprocess.TimeoutExpired:
                self.libvirtd.kill()
                self.libvirtd.wait(10)
        if self.virtlogd_pid is not None:
            system_libvirtd._stop_pid(self.virtlogd_pid, "virtlogd", timeout)
        self._kill_all()
        if self._own_netns:
            delete_netns(self.netns)
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this daemon still exists: processes in its namespaces, the namespace (empty when clean)."""
        found = [f"pid {pid}" for pid in self.namespace_pids() if system_libvirtd._pid_alive(pid)]
        if self._own_netns and Path(f"/run/netns/{self.netns}").exists():
            found.append(f"network namespace {self.netns}")
        return found

    def __enter__(self) -> PrivateLibvirtd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _pid_of(netns: str) -> int:
    """The pid of the test process that made a namespace ``cmlv-<label>-<pid>-<n>`` (0 if not one of ours)."""
    parts = netns.rsplit("-", 2)
    return int(parts[1]) if netns.startswith(PREFIX) and len(parts) == 3 and parts[1].isdigit() else 0


def reap_stale() -> list[str]:
    """Stop what private libvirtds of test processes that died (kill -9) left: their namespaces'
    processes, the namespaces, their directories.  Returns the namespaces reaped."""
    reaped = []
    for entry in sorted(Path("/run/netns").glob(PREFIX + "*")) if Path("/run/netns").is_dir() else []:
        pid = _pid_of(entry.name)
        if not pid or Path(f"/proc/{pid}").exists():
            continue   # not ours, or its test process still runs
        delete_netns(entry.name)   # kills what runs in it (its daemons, QEMU, dnsmasq), then deletes it
        shutil.rmtree(Path(tempfile.gettempdir()) / entry.name, ignore_errors=True)
        reaped.append(entry.name)
    return reaped


@contextlib.contextmanager
def private_libvirtd_running(label: str = "lv") -> Iterator[PrivateLibvirtd]:
    """A started private libvirtd, stopped on the way out whatever happens."""
    daemon = PrivateLibvirtd(label)
    with daemon:
        yield daemon


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="module")
    def private_libvirtd() -> Iterator[PrivateLibvirtd]:
        """A private libvirtd in namespaces of its own, with pool and network ``default``; stopped after."""
        if os.geteuid() != 0:
            pytest.skip("a private libvirtd needs root")
        if not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64")):
            pytest.skip("libvirtd/qemu missing: run scripts/install-system-packages.sh")
        with private_libvirtd_running(os.environ.get("CM_TEST_LABEL", "lv")) as daemon:
            daemon.ensure_pool()
            daemon.ensure_network()
            yield daemon
