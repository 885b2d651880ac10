"""Start and stop a real libvirtd (+ virtlogd) for end-to-end tests.

The machines this project is tested on run Debian 12 as root without
systemd, and KVM does not work there, so guests run under QEMU's software
emulation (``<domain type='qemu'>``).  This module brings up the system
daemons by hand:

``start_libvirtd()`` -> ``"qemu:///system"``
    Creates the ``kvm`` group and ``libvirt-qemu`` user (libvirtd refuses to
    start without them), makes sure ``/etc/libvirt/qemu.conf`` has
    ``user = "root"``, ``group = "root"`` and ``security_driver = "none"``
    (only these three keys are touched, and only when libvirtd is not
    already running), creates the run/log/state directories, starts
    ``virtlogd -d`` and ``libvirtd -d`` if they are not running, and waits
    until ``libvirt.open("qemu:///system")`` works.  Idempotent.

``stop_libvirtd()``
    Removes the networks and pools this process created with
    ``ensure_network``/``ensure_pool``, then stops the daemons, but only
    if an e2e run started them and no other live e2e run still uses them.
    Before stopping a libvirtd it started, it destroys every running domain
    so that no qemu process outlives the daemon.

``ensure_pool(conn, name, path)`` / ``ensure_network(conn, name)``
    Create (or reuse) an active ``dir`` storage pool and a network.

Bookkeeping shared by concurrent e2e runs lives in ``/run/cm-e2e-libvirtd``
(a lock file, one file per process using the daemons, and a marker per
daemon an e2e run started, holding that daemon's pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import hashlib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

URI = "qemu:///system"

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
QEMU_CONF_SETTINGS = {"user": '"root"', "group": '"root"', "security_driver": '"none"'}
RUN_DIRS = [
    "/run/libvirt",
    "/var/log/libvirt/qemu",
    "/var/lib/libvirt/qemu",
    "/var/lib/libvirt/images",
    "/var/cache/libvirt",
    "/etc/libvirt/qemu",
]
STATE_DIR = Path("/run/cm-e2e-libvirtd")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")   # NAT networks switch it on

# Top-level chains libvirt 9's iptables backend adds and leaves behind
# (empty) after its last network is destroyed: (table, parent chain, chain).
LIBVIRT_CHAINS = [
    ("filter", "INPUT", "LIBVIRT_INP"),
    ("filter", "OUTPUT", "LIBVIRT_OUT"),
    ("filter", "FORWARD", "LIBVIRT_FWO"),
    ("filter", "FORWARD", "LIBVIRT_FWI"),
    ("filter", "FORWARD", "LIBVIRT_FWX"),
    ("nat", "POSTROUTING", "LIBVIRT_PRT"),
    ("mangle", "POSTROUTING", "LIBVIRT_PRT"),
]

DAEMONS = {
    # name: (argv, pid file, unix socket that shows it is up)
    "virtlogd": (["virtlogd", "-d"], Path("/run/virtlogd.pid"), "/run/libvirt/virtlogd-sock"),
    "libvirtd": (["libvirtd", "-d"], Path("/run/libvirtd.pid"), "/run/libvirt/libvirt-sock"),
}

# What this process did, for stop_libvirtd() and for callers that want to know.
started: dict[str, int] = {}          # daemon name -> pid, for daemons THIS process started
_created_networks: list[str] = []
_created_pools: list[str] = []


class LibvirtdError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def _libvirt():
    import libvirt  # imported lazily: the module must import without libvirt-python

    return libvirt


@contextlib.contextmanager
def quiet_libvirt():
    """Silence libvirt's default error printer (connection probes fail on purpose)."""
    libvirt = _libvirt()
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    try:
        yield
    finally:
        libvirt.registerErrorHandler(None, None)


def _pid_alive(pid: int, comm: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # field 3 is the state; a zombie is not alive
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return False
    if comm is not None:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
                return False
        except OSError:
            return False
    return True


def _daemon_pid(name: str) -> int | None:
    """Pid of a running daemon, from its pid file (None if not running)."""
    _, pidfile, _ = DAEMONS[name]
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid, name) else None


def _socket_answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def _running(name: str) -> bool:
    return _daemon_pid(name) is not None or _socket_answers(DAEMONS[name][2])


def can_connect(uri: str = URI) -> bool:
    libvirt = _libvirt()
    with quiet_libvirt():
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError:
            return False
    try:
        conn.getVersion()
        return True
    except libvirt.libvirtError:
        return False
    finally:
        with contextlib.suppress(Exception):
            conn.close()


@contextlib.contextmanager
def _state_lock():
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / "users").mkdir(exist_ok=True)
    with open(STATE_DIR / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _live_users() -> list[int]:
    users = []
    for f in (STATE_DIR / "users").iterdir():
        try:
            pid = int(f.name)
        except ValueError:
            continue
        if _pid_alive(pid):
            users.append(pid)
        else:
            f.unlink(missing_ok=True)
    return users


def _owned_pid(name: str) -> int | None:
    try:
        return int((STATE_DIR / f"owned-{name}").read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------
# system preparation (only done when libvirtd is not running yet)
# --------------------------------------------------------------------------

def _ensure_user_and_group() -> None:
    # Debian's libvirtd resolves its built-in default user and group
    # (libvirt-qemu:libvirt-qemu) even when qemu.conf overrides them.
    for group in ("kvm", "libvirt-qemu"):
        try:
            grp.getgrnam(group)
        except KeyError:
            subprocess.run(["groupadd", "-r", group], check=True)
    try:
        pwd.getpwnam("libvirt-qemu")
    except KeyError:
        subprocess.run(
            ["useradd", "-r", "-g", "kvm", "-d", "/var/lib/libvirt", "-s", "/usr/sbin/nologin",
             "libvirt-qemu"],
            check=True,
        )


def _ensure_qemu_conf() -> None:
    """Set user/group root and security_driver none in qemu.conf, leaving other lines alone."""
    QEMU_CONF.parent.mkdir(parents=True, exist_ok=True)
    old = QEMU_CONF.read_text() if QEMU_CONF.exists() else ""
    lines = old.splitlines()
    current = {}
    for line in lines:
        m = re.match(r"\s*(\w+)\s*=\s*(.*?)\s*$", line)
        if m and m.group(1) in QEMU_CONF_SETTINGS:
            current[m.group(1)] = m.group(2)
    if current == QEMU_CONF_SETTINGS:
        return
    kept = [ln for ln in lines
            if not (re.match(r"\s*(\w+)\s*=", ln)
                    and re.match(r"\s*(\w+)", ln).group(1) in QEMU_CONF_SETTINGS)]
    kept.append("# set by cm tests/e2e/libvirtd.py: run QEMU as root without a security driver")
    kept += [f"{k} = {v}" for k, v in QEMU_CONF_SETTINGS.items()]
    tmp = QEMU_CONF.with_suffix(".conf.cm-tmp")
    tmp.write_text("\n".join(kept) + "\n")
    os.replace(tmp, QEMU_CONF)


def _prepare_system() -> None:
    for tool in ("libvirtd", "virtlogd"):
        if shutil.which(tool) is None:
            raise LibvirtdError(
                f"{tool} not found: run scripts/install-system-packages.sh first")
    _ensure_user_and_group()
    _ensure_qemu_conf()
    for d in RUN_DIRS:
        Path(d).mkdir(parents=True, exist_ok=True)


def _start_daemon(name: str) -> int:
    argv, pidfile, sock = DAEMONS[name]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, start_new_session=True,
                       close_fds=True, timeout=120)
    if r.returncode != 0:
        raise LibvirtdError(f"{' '.join(argv)} failed ({r.returncode}): {r.stdout.strip()}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = _daemon_pid(name)
        if pid is not None:
            return pid
        time.sleep(0.05)
    raise LibvirtdError(f"{name} did not write {pidfile}")


def _stop_pid(pid: int, name: str, timeout: float = 20) -> None:
    if not _pid_alive(pid, name):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, name):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pid_alive(pid, name):
        time.sleep(0.05)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def start_libvirtd(timeout: float = 90) -> str:
    """Make sure virtlogd and libvirtd run; return the URI ``qemu:///system``.

    Safe to call repeatedly and from several processes at once.  Daemons
    that this call starts are recorded in ``started`` (and in
    ``/run/cm-e2e-libvirtd``) so that ``stop_libvirtd`` stops only those.
    """
    if os.geteuid() != 0:
        raise LibvirtdError("starting the system libvirtd needs root")
    with _state_lock():
        (STATE_DIR / "users" / str(os.getpid())).touch()
        if not _running("libvirtd"):
            _prepare_system()
            if not _running("virtlogd"):
                pid = _start_daemon("virtlogd")
                started["virtlogd"] = pid
                (STATE_DIR / "owned-virtlogd").write_text(str(pid))
            with contextlib.suppress(OSError):
                (STATE_DIR / "ip_forward").write_text(IP_FORWARD.read_text())
            pid = _start_daemon("libvirtd")
            started["libvirtd"] = pid
            (STATE_DIR / "owned-libvirtd").write_text(str(pid))
        elif not _running("virtlogd"):
            # libvirtd without virtlogd cannot start domains with a serial log
            Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
            pid = _start_daemon("virtlogd")
            started["virtlogd"] = pid
            (STATE_DIR / "owned-virtlogd").write_text(str(pid))
        # wait for the driver to answer (the first start probes QEMU, ~8 s)
        deadline = time.monotonic() + timeout
        while not can_connect(URI):
            if time.monotonic() > deadline:
                raise LibvirtdError(f"libvirtd did not answer on {URI} within {timeout} s")
            if _daemon_pid("libvirtd") is None and not _socket_answers(DAEMONS["libvirtd"][2]):
                raise LibvirtdError("libvirtd exited during start-up")
            time.sleep(0.1)
    return URI


def stop_libvirtd(timeout: float = 30) -> None:
    """Undo ``start_libvirtd``: stop only daemons an e2e run started.

    Networks and pools made by ``ensure_network``/``ensure_pool`` in this
    process are destroyed and undefined first.  If other live processes
    registered through ``start_libvirtd`` still use the daemons, they are
    left running (the last one out stops them).
    """
    libvirt = _libvirt()
    with _state_lock():
        if _created_networks or _created_pools:
            with contextlib.suppress(libvirt.libvirtError), quiet_libvirt():
                conn = libvirt.open(URI)
                try:
                    _remove_created(conn)
                finally:
                    conn.close()
        (STATE_DIR / "users" / str(os.getpid())).unlink(missing_ok=True)
        if _live_users():
            started.clear()
            return
        lv_owned = _owned_pid("libvirtd")
        if lv_owned is not None and lv_owned == _daemon_pid("libvirtd"):
            _destroy_all_domains()
            _stop_pid(lv_owned, "libvirtd", timeout)
            _cleanup_firewall()
            with contextlib.suppress(OSError):
                IP_FORWARD.write_text((STATE_DIR / "ip_forward").read_text())
        (STATE_DIR / "ip_forward").unlink(missing_ok=True)
        (STATE_DIR / "owned-libvirtd").unlink(missing_ok=True)
        lg_owned = _owned_pid("virtlogd")
        if lg_owned is not None and lg_owned == _daemon_pid("virtlogd"):
            _stop_pid(lg_owned, "virtlogd", timeout)
        (STATE_DIR / "owned-virtlogd").unlink(missing_ok=True)
        started.clear()


def _cleanup_firewall() -> None:
    """Remove libvirt's top-level iptables chains if they are empty (no network uses them)."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table, parent, chain in LIBVIRT_CHAINS:
            r = subprocess.run([tool, "-w", "-t", table, "-S", chain],
                               capture_output=True, text=True)
            if r.returncode != 0:
                continue                      # no such chain
            rules = [ln for ln in r.stdout.splitlines() if ln.startswith("-A ")]
            if rules:
                continue                      # still in use: leave it
            subprocess.run([tool, "-w", "-t", table, "-D", parent, "-j", chain],
                           capture_output=True)
            subprocess.run([tool, "-w", "-t", table, "-X", chain], capture_output=True)


def _destroy_all_domains() -> None:
    """Destroy running domains (a libvirtd we started only runs test guests)."""
    libvirt = _libvirt()
    with quiet_libvirt():
        try:
            conn = libvirt.open(URI)
        except libvirt.libvirtError:
            return
        try:
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
            for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
                # networks with a bridge + dnsmasq would outlive the daemon
                if not net.autostart():
                    with contextlib.suppress(libvirt.libvirtError):
                        net.destroy()
        finally:
            conn.close()


def _remove_created(conn) -> None:
    libvirt = _libvirt()
    while _created_networks:
        name = _created_networks.pop()
        with contextlib.suppress(libvirt.libvirtError):
            net = conn.networkLookupByName(name)
            if net.isActive():
                net.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                net.undefine()
    while _created_pools:
        name = _created_pools.pop()
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName(name)
            if pool.isActive():
                pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()


def ensure_pool(conn, name: str, path: str | os.PathLike):
    """Return an active ``dir`` storage pool ``name`` rooted at ``path``.

    Reuses an existing pool of that name (starting it if needed).  A pool
    created here is destroyed and undefined by ``stop_libvirtd`` (its
    directory is left to the caller).
    """
    libvirt = _libvirt()
    path = Path(path).resolve()
    try:
        with quiet_libvirt():
            pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        path.mkdir(parents=True, exist_ok=True)
        xml = (f"<pool type='dir'><name>{escape(name)}</name>"
               f"<target><path>{escape(str(path))}</path></target></pool>")
        pool = conn.storagePoolDefineXML(xml, 0)
        _created_pools.append(name)
    if not pool.isActive():
        path.mkdir(parents=True, exist_ok=True)
        pool.create(0)
    pool.refresh(0)
    return pool


def _bridge_name(name: str) -> str:
    return "cm" + hashlib.sha1(name.encode()).hexdigest()[:10]   # <= 15 chars


def _used_subnets(conn) -> list[ipaddress.IPv4Network]:
    used = []
    r = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    for m in re.finditer(r"inet (\S+)", r.stdout):
        used.append(ipaddress.ip_interface(m.group(1)).network)
    r = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(dest, strict=False))
    for net in conn.listAllNetworks(0):
        for m in re.finditer(r"<ip [^>]*address='([\d.]+)'[^>]*(?:netmask='([\d.]+)'|prefix='(\d+)')",
                             net.XMLDesc(0)):
            mask = m.group(2) or m.group(3)
            used.append(ipaddress.ip_network(f"{m.group(1)}/{mask}", strict=False))
    return used


def _free_subnet(conn) -> ipaddress.IPv4Network:
    used = _used_subnets(conn)
    for third in range(100, 255):
        cand = ipaddress.ip_network(f"192.168.{third}.0/24")
        if not any(cand.overlaps(u) for u in used):
            return cand
    raise LibvirtdError("no free 192.168.x.0/24 subnet for a test network")


def network_xml(name: str, subnet: ipaddress.IPv4Network, mode: str) -> str:
    """XML for a bridge network with DHCP; mode is 'nat', 'open' or 'isolated'."""
    hosts = list(subnet.hosts())
    gw, first, last = hosts[0], hosts[1], hosts[-1]
    fwd = "" if mode == "isolated" else f"<forward mode={quoteattr(mode)}/>"
    return (
        f"<network><name>{escape(name)}</name>{fwd}"
        f"<bridge name='{_bridge_name(name)}' stp='off' delay='0'/>"
        f"<ip address='{gw}' netmask='{subnet.netmask}'>"
        f"<dhcp><range start='{first}' end='{last}'/></dhcp></ip></network>"
    )


def ensure_network(conn, name: str, modes: tuple[str, ...] = ("nat", "open", "isolated")):
    """Return an active network ``name`` with a bridge and a DHCP server (dnsmasq).

    Tries each forward mode in ``modes`` in turn: ``nat`` needs iptables,
    ``open`` and ``isolated`` are fallbacks (``open`` adds no firewall
    rules at all).  The subnet is the first free 192.168.100-254.0/24.
    The chosen mode is readable from the network XML.  A network created
    here is destroyed and undefined by ``stop_libvirtd``.
    """
    libvirt = _libvirt()
    try:
        with quiet_libvirt():
            net = conn.networkLookupByName(name)
    except libvirt.libvirtError:
        net = None
    if net is not None:
        if not net.isActive():
            net.create()
        return net
    errors = []
    for mode in modes:
        for _attempt in range(3):
            xml = network_xml(name, _free_subnet(conn), mode)
            net = conn.networkDefineXML(xml)
            try:
                with quiet_libvirt():
                    net.create()
            except libvirt.libvirtError as e:
                net.undefine()
                if "in use" in str(e):     # another run took the subnet meanwhile
                    continue
                errors.append(f"{mode}: {e}")
                break
            _created_networks.append(name)
            return net
    raise LibvirtdError("could not start a network: " + "; ".join(errors))


def network_mode(net) -> str:
    m = re.search(r"<forward mode='(\w+)'", net.XMLDesc(0))
    if m:
        return m.group(1)
    return "nat" if "<forward" in net.XMLDesc(0) else "isolated"
