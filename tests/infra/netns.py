"""Network namespaces for tests: one private "lab" bridge and hosts with their own address and hostname.

Usage::

    from tests.infra.netns import Lab

    with Lab("infra-t1") as lab:                 # prefix: every name carries it
        a = lab.add_host("a")                    # netns "infra-t1-a", eth0 10.231.x.2/24
        b = lab.add_host("b")
        a.run(["ping", "-c1", b.addr])           # CompletedProcess, runs inside a's netns
        p = b.popen(["sleep", "60"])             # a process with hostname "b" (UTS ns)
        lab.remove_host("b")                     # its processes killed, its namespace gone
        in_netns(a.ns, make_server)              # a server whose socket listens inside a's namespace
    # exit: every process left in the namespaces is killed, the namespaces are deleted

A host's commands run as ``nsenter --net=/run/netns/NS unshare --uts --mount sh -c
'hostname NAME; mount --bind HOSTS /etc/hosts; exec CMD'`` (never ``ip netns exec``: it
remounts /sys and breaks slurmd).  Inside, /etc/hosts names every lab host, so hostnames
resolve; ``Lab(prefix, resolve_names=False)`` is a network where no name resolves, not even a
host's own (as on many clouds): each host has its own /etc/hosts, holding only localhost (what a
host appends to it stays its own), and /etc/resolv.conf names only a nameserver on the host's own
loopback, where none listens, so every other lookup fails at once.  The subnet (default derived from the prefix, inside 10.231.0.0/16) exists only
inside the lab's namespaces: the machine's own namespace never routes to it.
``cleanup_prefix(prefix)`` removes whatever a crashed run with that prefix left behind (``start``
calls it): every namespace is listed in the lab's temp dir before it is made, so only those go.
"""

from __future__ import annotations

import hashlib
import ipaddress
import glob
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command in this namespace, raising with its stderr on failure."""
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def netns_pids(ns: str) -> list[int]:
    """Pids of the processes whose network namespace is ``ns``."""
    out = sh("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def kill_netns_processes(ns: str, timeout: float = 5.0) -> None:
    """TERM, then KILL, every process living in namespace ``ns`` (all were started by its owner)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = netns_pids(ns)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while netns_pids(ns) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not netns_pids(ns):
            return


def delete_netns(ns: str) -> None:
    """Kill what runs in ``ns`` and delete it (no error when it is already gone)."""
    if (NETNS_DIR / ns).exists():
        kill_netns_processes(ns)
        sh("ip", "netns", "delete", ns, check=False)


def cleanup_prefix(prefix: str) -> None:
    """Delete what a crashed lab with this prefix left: the namespaces its temp dir lists, the dir."""
    for path in Path(tempfile.gettempdir()).glob(f"{glob.escape(prefix)}-lab-*"):
        remove_lab_dir(path)
    delete_netns(f"{prefix}-lab")


def remove_lab_dir(path: Path) -> None:
    """Delete the namespaces a lab's temp dir lists (hosts first), then the dir."""
    listed = path / "namespaces"
    for ns in reversed(listed.read_text().split() if listed.exists() else []):
        delete_netns(ns)
    shutil.rmtree(path, ignore_errors=True)


def list_netns(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``PREFIX-``."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix + "-"))


def subnet_for(prefix: str) -> ipaddress.IPv4Network:
    """A /24 inside 10.231.0.0/16 chosen from the prefix, so concurrent labs rarely overlap."""
    octet = int(hashlib.sha256(prefix.encode()).hexdigest(), 16) % 254 + 1
    return ipaddress.IPv4Network(f"10.231.{octet}.0/24")


def in_netns(ns: str, make: Callable[[], T]) -> T:
    """``make()`` run in a thread that entered namespace ``ns``: the sockets it opens live there (a server
    bound to 127.0.0.1 answers on that namespace's loopback), while this process stays where it is."""
    import ctypes
    import threading

    result: list[T] = []
    failure: list[BaseException] = []

    def enter_and_make() -> None:
        fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {ns}")
            result.append(make())
        except BaseException as exc:   # handed to the caller's thread
            failure.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_make, name=f"in-{ns}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@dataclass
class Host:
    """One namespaced host: name (also its hostname), netns name and address on the lab bridge."""

    lab: "Lab"
    name: str
    ns: str
    addr: str

    def wrap(self, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside this host (own net, UTS and mount namespace)."""
        binds = "".join(f"mount --bind {shlex.quote(str(src))} {dst} && " for src, dst in self.lab.binds(self))
        script = f"hostname {shlex.quote(self.name)} && {binds}exec {shlex.join(argv)}"
        return ["nsenter", f"--net={NETNS_DIR / self.ns}", "unshare", "--uts", "--mount",
                "sh", "-c", script]

    def run(self, argv: list[str], timeout: float = 60, check: bool = False,
            **kw) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host and wait; output captured as text."""
        kw.setdefault("capture_output", True)
        return subprocess.run(self.wrap(argv), text=True, timeout=timeout, check=check, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start ``argv`` inside this host in its own session; its pid is the program's own pid."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.wrap(argv), start_new_session=True, **kw)


@dataclass
class Lab:
    """A bridge in namespace ``PREFIX-lab`` and hosts joined to it by veth pairs."""

    prefix: str
    subnet: ipaddress.IPv4Network | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    tmp: Path | None = None
    resolve_names: bool = True
    made: int = 0   # hosts added so far (names their veth pairs)

    def __post_init__(self) -> None:
        self.subnet = self.subnet or subnet_for(self.prefix)
        self.ns = f"{self.prefix}-lab"

    @property
    def hosts_file(self) -> Path:
        assert self.tmp is not None
        return self.tmp / "hosts"

    def binds(self, host: Host) -> list[tuple[Path, str]]:
        """The files ``host`` sees over the machine's own: /etc/hosts (and resolv.conf if no name resolves)."""
        if self.resolve_names:
            return [(self.hosts_file, "/etc/hosts")]
        return [(self.tmp / f"hosts-{host.name}", "/etc/hosts"), (self.tmp / "resolv.conf", "/etc/resolv.conf")]

    def start(self) -> "Lab":
        """Create the lab namespace with bridge br0 (idempotent after a crashed run: old names go first)."""
        cleanup_prefix(self.prefix)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-lab-"))
        self.write_hosts()
        (self.tmp / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        self.add_netns(self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.ns, "link", "set", "br0", "up")
        return self

    def add_netns(self, ns: str) -> None:
        """Record ``ns`` in TMP/namespaces (for a later cleanup), then create it."""
        with open(self.tmp / "namespaces", "a") as listed:
            listed.write(ns + "\n")
        sh("ip", "netns", "add", ns)

    def add_host(self, name: str, addr: str | None = None) -> Host:
        """A new namespace ``PREFIX-NAME`` whose eth0 is on the lab bridge with ``addr`` (default: the next
        free address), e.g. the address a cloud gave the VM this host stands for."""
        ns = f"{self.prefix}-{name}"
        addr = addr or str(self.subnet.network_address + len(self.hosts) + 2)
        self.made += 1
        veth = f"v{self.made}"   # never reused: a host removed and added again gets a new pair
        self.add_netns(ns)
        try:
            sh("ip", "-n", self.ns, "link", "add", veth, "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", self.ns, "link", "set", veth, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/{self.subnet.prefixlen}", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        except RuntimeError:
            delete_netns(ns)
            raise
        host = Host(self, name, ns, addr)
        self.hosts[name] = host
        self.write_hosts()
        (self.tmp / f"hosts-{name}").write_text("127.0.0.1 localhost\n")
        return host

    def remove_host(self, name: str) -> None:
        """Kill what runs in host ``name`` and delete its namespace (its veth pair goes with it)."""
        host = self.hosts.pop(name, None)
        if host is not None:
            delete_netns(host.ns)
            self.write_hosts()

    def write_hosts(self) -> None:
        """/etc/hosts as seen inside every host where names resolve: loopback plus each lab host's name."""
        lines = ["127.0.0.1 localhost"] + [f"{h.addr} {h.name}" for h in self.hosts.values()]
        self.hosts_file.write_text("\n".join(lines) + "\n")

    def stop(self) -> None:
        """Kill every process in the lab's namespaces, delete them and the temp dir."""
        if self.tmp:
            remove_lab_dir(self.tmp)
        delete_netns(self.ns)
        self.hosts.clear()

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
