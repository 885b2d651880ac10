"""End-to-end: a real libvirtd boots a tiny busybox guest under QEMU/TCG.

The guest reads a NoCloud seed (ISO9660, label ``cidata``) and prints
``cm-guest: hostname=<local-hostname>`` on its serial console.  Needs
root and the packages from ``scripts/install-system-packages.sh``; run
with ``pytest -m e2e tests/e2e``.  The kernel package is cached in
``$CM_E2E_CACHE`` (default ``~/.cache/cm-e2e``).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

from . import guest, libvirtd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root to run the system libvirtd"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64",
                                           "apt-get", "dpkg-deb")),
        reason="e2e: libvirtd/qemu missing: run scripts/install-system-packages.sh"),
]

libvirt = pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")
pytest.importorskip("pycdlib", reason="e2e: pip install pycdlib")

BOOT_TIMEOUT = 90
SHUTDOWN_TIMEOUT = 30


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

class EventLoop:
    """libvirt's default event loop in a thread (needed for stream callbacks)."""

    registered = False

    def __init__(self) -> None:
        if not EventLoop.registered:
            libvirt.virEventRegisterDefaultImpl()     # must come before libvirt.open()
            EventLoop.registered = True
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="libvirt-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            libvirt.virEventRunDefaultImpl()

    def close(self) -> None:
        self._stop = True
        # wake the loop up so it sees the flag
        timer = libvirt.virEventAddTimeout(0, lambda t, o: None, None)
        self._thread.join(timeout=5)
        libvirt.virEventRemoveTimeout(timer)


@pytest.fixture(scope="module")
def conn():
    t0 = time.monotonic()
    uri = libvirtd.start_libvirtd()
    print(f"\nlibvirtd ready in {time.monotonic() - t0:.1f} s (started here: {libvirtd.started})")
    loop = EventLoop()
    c = libvirt.open(uri)
    try:
        yield c
    finally:
        c.close()
        loop.close()
        libvirtd.stop_libvirtd()


@pytest.fixture(scope="module")
def guest_files():
    cache = Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e"))
    t0 = time.monotonic()
    kernel, initrd = guest.build_guest(cache)
    print(f"\nguest kernel+initrd ready in {time.monotonic() - t0:.1f} s")
    return kernel, initrd


@pytest.fixture
def pool(conn, tmp_path):
    name = f"cm-test-{uuid.uuid4().hex[:8]}"
    p = libvirtd.ensure_pool(conn, name, tmp_path / "pool")
    yield p
    for vol in p.listAllVolumes(0):
        vol.delete(0)
    p.destroy()
    p.undefine()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def upload(conn, pool, src: Path, name: str):
    """Create a raw volume in ``pool`` and upload ``src`` into it through the API."""
    size = src.stat().st_size
    vol = pool.createXML(
        f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
        f"<target><format type='raw'/></target></volume>", 0)
    stream = conn.newStream(0)
    vol.upload(stream, 0, size, 0)
    with open(src, "rb") as fh:
        stream.sendAll(lambda st, nbytes, f: f.read(nbytes), fh)
    stream.finish()
    return vol


def wait_for_log(path: Path, pattern: str, timeout: float, dom=None) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text(errors="replace")
            if re.search(pattern, text, re.M):
                return text
        if dom is not None and not dom.isActive():
            break
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not on the console within {timeout} s; console:\n{text[-3000:]}")


def wait_shutoff(dom, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dom.isActive():
            return True
        time.sleep(0.2)
    return False


def console_roundtrip(conn, dom, command: str, expect: str, timeout: float = 30) -> str:
    """Type ``command`` into the serial console through the API and wait for ``expect``."""
    buf = bytearray()
    got = threading.Event()

    def on_readable(st, events, _opaque):
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            got.set()
            return
        while True:
            try:
                data = st.recv(4096)
            except libvirt.libvirtError:
                got.set()
                return
            if data == -2 or not data:    # would block / end of stream
                break
            buf.extend(data)
        if expect.encode() in buf:
            got.set()

    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    stream.eventAddCallback(
        libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
        | libvirt.VIR_STREAM_EVENT_HANGUP, on_readable, None)
    try:
        deadline = time.monotonic() + timeout
        # the guest's shell may still be starting: type until it answers
        while not got.is_set() and time.monotonic() < deadline:
            stream.send(command.encode() + b"\r")
            got.wait(3)
    finally:
        stream.eventRemoveCallback()
        try:
            stream.finish()
        except libvirt.libvirtError:
            stream.abort()
    text = buf.decode(errors="replace")
    assert expect in text, f"console did not answer {expect!r}; got:\n{text[-2000:]}"
    return text


def qemu_processes_for(name: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and b"qemu-system" in cmd[0] and f"guest={name}".encode() in b",".join(cmd):
            pids.append(int(proc.name))
    return pids


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["cdrom", "virtio"])
def test_guest_boots_and_reads_nocloud_seed(conn, guest_files, pool, tmp_path, transport):
    kernel, initrd = guest_files
    token = uuid.uuid4().hex[:8]
    name = f"cm-e2e-{transport}-{token}"
    hostname = f"vm-{token}"
    iid = f"iid-{token}"
    t0 = time.monotonic()

    seed = guest.build_seed_iso(tmp_path / "seed.iso", hostname, iid,
                                user_data="#cloud-config\nruncmd: [echo hi]\n")
    kvol = upload(conn, pool, kernel, f"{name}-vmlinuz")
    ivol = upload(conn, pool, initrd, f"{name}-initrd")
    upload(conn, pool, seed, f"{name}-seed.iso")
    pool.refresh(0)
    assert {v.name() for v in pool.listAllVolumes(0)} == {
        f"{name}-vmlinuz", f"{name}-initrd", f"{name}-seed.iso"}

    log = tmp_path / "console.log"
    xml = guest.domain_xml(
        name, Path(kvol.path()), Path(ivol.path()),
        guest.seed_disk_xml(f"{name}-seed.iso", transport, pool=pool.name()), log)
    dom = conn.defineXML(xml)
    try:
        dom.create()
        t_start = time.monotonic()
        text = wait_for_log(log, rf"^{re.escape(guest.HOSTNAME_PREFIX + hostname)}\s*$",
                            BOOT_TIMEOUT, dom)
        t_boot = time.monotonic() - t_start
        assert f"{guest.INSTANCE_PREFIX}{iid}" in text
        text = wait_for_log(log, rf"^{guest.READY_LINE}", 10, dom)

        # the console through the libvirt API (stream + event loop)
        answer = console_roundtrip(conn, dom, 'echo "cm-console: $((40+2)) $(hostname)"',
                                   f"cm-console: 42 {hostname}")
        assert hostname in answer

        # ACPI power button: the guest powers itself off
        t_sd = time.monotonic()
        dom.shutdown()
        assert wait_shutoff(dom, SHUTDOWN_TIMEOUT), "guest ignored the ACPI power button"
        state, reason = dom.state()
        assert state == libvirt.VIR_DOMAIN_SHUTOFF
        assert reason == libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN
        assert "cm-guest: power button" in log.read_text(errors="replace")
        print(f"\n[{transport}] boot to hostname line {t_boot:.1f} s, "
              f"ACPI shutdown {time.monotonic() - t_sd:.1f} s, "
              f"whole test {time.monotonic() - t0:.1f} s")
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()

    for vol in pool.listAllVolumes(0):
        vol.delete(0)
    pool.refresh(0)
    assert pool.listAllVolumes(0) == []
    assert name not in [d.name() for d in conn.listAllDomains(0)]
    with pytest.raises(libvirt.libvirtError), libvirtd.quiet_libvirt():
        conn.lookupByName(name)
    assert qemu_processes_for(name) == []


def test_guest_gets_dhcp_lease_on_network(conn, guest_files, tmp_path):
    kernel, initrd = guest_files
    token = uuid.uuid4().hex[:8]
    name = f"cm-e2e-net-{token}"
    net = libvirtd.ensure_network(conn, f"cm-test-{token}")
    mode = libvirtd.network_mode(net)
    seed = guest.build_seed_iso(tmp_path / "seed.iso", f"vm-{token}", f"iid-{token}")
    log = tmp_path / "console.log"
    xml = guest.domain_xml(name, kernel, initrd, guest.seed_disk_xml(seed, "cdrom"), log,
                           network=net.name())
    t0 = time.monotonic()
    dom = conn.createXML(xml, 0)          # transient: gone once destroyed
    try:
        text = wait_for_log(log, r"^cm-guest: ip=[\d.]+", BOOT_TIMEOUT, dom)
        ip = re.search(r"^cm-guest: ip=([\d.]+)", text, re.M).group(1)
        addrs = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, 0)
        found = [a["addr"] for iface in addrs.values() for a in (iface["addrs"] or [])]
        assert ip in found, f"guest says {ip}, libvirt leases say {addrs}"
        leases = net.DHCPLeases()
        assert any(le["ipaddr"] == ip and le.get("hostname") == f"vm-{token}" for le in leases), leases
        print(f"\n[network mode={mode}] DHCP lease {ip} after {time.monotonic() - t0:.1f} s")
    finally:
        if dom.isActive():
            dom.destroy()
        net.destroy()
        net.undefine()
    assert qemu_processes_for(name) == []
