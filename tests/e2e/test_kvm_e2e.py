"""End-to-end: the kvm provider on a real libvirtd with QEMU (software emulation), through `cm`.

`cm vm boot` a tiny real guest (a Debian kernel + busybox initramfs that reads
the NoCloud seed and prints ``cm-guest: hostname=<name>``), see it on the
console, stop and start it, and `cm vm delete` it: no domain and no volume are
left.  Needs root and scripts/install-system-packages.sh; run with
``python -m pytest -m e2e tests/e2e/test_kvm_e2e.py``.  Every cm command runs
as its own process, exactly as from bash.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from . import guest, libvirtd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root to run the system libvirtd"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64", "dpkg-deb")),
                       reason="e2e: libvirtd/qemu missing: run scripts/install-system-packages.sh"),
]

libvirt = pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")

BOOT_TIMEOUT = 180  # seconds from `cm vm boot` to the hostname on the console (TCG on 2 cores: ~15 s)
TOKEN = f"{os.getpid() % 100000}"


@pytest.fixture(scope="module")
def hypervisor(tmp_path_factory: pytest.TempPathFactory):
    """A running libvirtd with a pool and (if dnsmasq works) a DHCP network of this run's own."""
    cache = Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e"))
    kernel, initrd = guest.build_guest(cache)
    uri = libvirtd.start_libvirtd()
    conn = libvirt.open(uri)
    try:
        pool = f"cm-kvm-e2e-{TOKEN}"
        libvirtd.ensure_pool(conn, pool, tmp_path_factory.mktemp("pool"))
        try:
            network = libvirtd.ensure_network(conn, f"cm-kvm-{TOKEN}").name()
        except Exception as exc:  # no dnsmasq/iptables: the VMs boot without a NIC
            print(f"\nno test network ({exc}); VMs boot without one")
            network = ""
        yield {"uri": uri, "conn": conn, "pool": pool, "network": network, "kernel": kernel, "initrd": initrd}
    finally:
        remove_leftovers(conn)
        conn.close()
        libvirtd.stop_libvirtd()


def remove_leftovers(conn) -> None:
    """After a failed test: no VM of this run may outlive it."""
    for dom in conn.listAllDomains():
        if dom.name().startswith(f"e2e-{TOKEN}-"):
            if dom.isActive():
                dom.destroy()
            dom.undefine()


@pytest.fixture
def local(cm_home: Path, hypervisor: dict) -> dict:
    """The local cloud pointed at the real libvirtd."""
    path = cm_home / "cm.yaml"
    config = yaml.safe_load(path.read_text())
    config["clouds"]["local"].update(uri=hypervisor["uri"], pool=hypervisor["pool"], network=hypervisor["network"],
                                     shutdown_timeout=60)
    path.write_text(yaml.safe_dump(config))
    return hypervisor


@pytest.fixture
def guest_image(cm_process, local: dict, request: pytest.FixtureRequest):
    """The test guest as a kernel+initrd image (named per test: a failed test cannot spoil the next)."""
    name = f"guest-{request.node.name[5:25]}"
    added = cm_process("image", "add", name, f"kernel={local['kernel']},initrd={local['initrd']}")
    assert added.code == 0, added.err
    yield name
    cm_process("image", "delete", name)


def ok(result) -> str:
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    return result.out


def wait_console(cm_process, name: str, pattern: str, timeout: float) -> str:
    """Poll `cm vm console` until the pattern shows; return the console text."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = ok(cm_process("vm", "console", name))
        if re.search(pattern, text, re.M):
            return text
        time.sleep(1)
    pytest.fail(f"no /{pattern}/ on {name}'s console within {timeout:g} s; it shows:\n{text[-3000:]}")


def leftovers(conn, pool: str, name: str) -> tuple[list[str], list[str]]:
    """Domains and volumes of the VM ``name`` that libvirt still has."""
    domains = [d.name() for d in conn.listAllDomains() if d.name() == name]
    storage = conn.storagePoolLookupByName(pool)
    storage.refresh(0)
    return domains, [v for v in storage.listVolumes() if v.startswith(f"{name}-")]


def test_boot_console_stop_start_delete(cm_process, local, guest_image):
    name = f"e2e-{TOKEN}-a"
    started = time.monotonic()
    booted = json.loads(ok(cm_process("vm", "boot", "--name", name, "--image", guest_image, "--flavor", "tiny",
                                      "-f", "json")))
    assert booted[0]["state"] == "running" and booted[0]["result"] == "booted"
    text = wait_console(cm_process, name, rf"^cm-guest: hostname={re.escape(name)}\s*$", BOOT_TIMEOUT)
    print(f"\nboot to hostname on the console: {time.monotonic() - started:.1f} s")
    text = wait_console(cm_process, name, r"^cm-guest: ready", 30)
    shown = json.loads(ok(cm_process("vm", "show", name, "--refresh", "-f", "json")))
    assert f"cm-guest: instance-id={shown['id']}" in text  # the seed carries the domain's uuid
    assert shown["extra"]["domain_type"] == "qemu"  # KVM does not work on these machines: detected, not assumed
    assert "cm-guest: user-data-sha256=" in text and "cm-guest: ready" in text

    if local["network"]:  # the address comes from the network's DHCP leases
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = json.loads(ok(cm_process("vm", "show", name, "--refresh", "-f", "json")))
            if status["private_ips"]:
                break
            time.sleep(2)
        assert status["private_ips"], "no DHCP lease within 90 s"
        assert re.search(rf"^cm-guest: ip={re.escape(status['private_ips'][0])}", ok(
            cm_process("vm", "console", name)), re.M)

    stopping = time.monotonic()
    stopped = json.loads(ok(cm_process("vm", "stop", name, "-f", "json")))
    assert stopped[0]["state"] == "stopped"
    print(f"graceful stop: {time.monotonic() - stopping:.1f} s")
    assert "cm-guest: power button" in ok(cm_process("vm", "console", name))
    assert json.loads(ok(cm_process("vm", "start", name, "-f", "json")))[0]["state"] == "running"

    console_log = Path(shown["extra"].get("console_log") or "")
    deleted = cm_process("vm", "delete", name)
    assert deleted.code == 0 and deleted.err.strip() == "deleted 1 of 1"
    assert leftovers(local["conn"], local["pool"], name) == ([], [])
    assert not list(Path("/var/log/libvirt/qemu").glob(f"cm-{name}-*.console.log"))
    assert not console_log.name or not console_log.exists()
    listed = json.loads(ok(cm_process("vm", "list", "--refresh", "-f", "json")))
    assert name not in [vm["name"] for vm in listed]  # (other runs may share this libvirtd)


def test_disk_image_gets_a_copy_on_write_overlay(cm_process, local, tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("libvirt needs qemu-img (Debian qemu-utils) to create qcow2 overlays")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    ok(cm_process("image", "add", "blank", str(base)))
    name = f"e2e-{TOKEN}-b"
    ok(cm_process("vm", "boot", "--name", name, "--image", "blank", "--flavor", "tiny"))
    pool = local["conn"].storagePoolLookupByName(local["pool"])
    disk = next(v for v in pool.listAllVolumes() if v.name().startswith(f"{name}-disk-"))
    xml = disk.XMLDesc(0)
    assert "<format type='qcow2'/>" in xml and "<backingStore>" in xml and "/blank</path>" in xml
    in_use = cm_process("image", "delete", "blank")
    assert in_use.code == 1 and f"image 'blank' is in use by {name}; delete those VMs first" in in_use.err
    ok(cm_process("vm", "delete", name))
    assert leftovers(local["conn"], local["pool"], name) == ([], [])
    ok(cm_process("image", "delete", "blank"))
    assert "blank" not in pool.listVolumes()


def test_console_stream_when_the_log_is_not_used(cm_process, cm_home, local, guest_image):
    """Where the log file cannot be read (remote hosts), cm attaches to the console for a few seconds."""
    config = yaml.safe_load((cm_home / "cm.yaml").read_text())
    config["clouds"]["local"].update(console_source="stream", console_wait=4)
    (cm_home / "cm.yaml").write_text(yaml.safe_dump(config))
    name = f"e2e-{TOKEN}-c"
    ok(cm_process("vm", "boot", "--name", name, "--image", guest_image, "--flavor", "tiny"))
    try:
        text = ""
        deadline = time.monotonic() + 60
        while not text.strip() and time.monotonic() < deadline:  # the kernel talks while it boots
            text = ok(cm_process("vm", "console", name))
        assert text.strip(), "nothing arrived on the console stream"
    finally:
        ok(cm_process("vm", "delete", name))
    assert leftovers(local["conn"], local["pool"], name) == ([], [])


def _set_local(cm_home: Path, **settings: object) -> None:
    config = yaml.safe_load((cm_home / "cm.yaml").read_text())
    config["clouds"]["local"].update(settings)
    (cm_home / "cm.yaml").write_text(yaml.safe_dump(config))


def _stock_subnet_free(conn) -> bool:
    """No interface, route or libvirt network of this host uses libvirt's stock 192.168.122.0/24 or virbr0."""
    import ipaddress

    stock = ipaddress.ip_network("192.168.122.0/24")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return not re.search(r"^\d+: virbr0[:@]", links, re.M) and \
        not any(stock.overlaps(used) for used in libvirtd._used_subnets(conn))


def test_a_daemon_without_the_stock_pool_and_network_gets_them(cm_process, cm_home, local, guest_image):
    """Like virt-install: pool 'default' (and network 'default') are made once on a daemon that lacks them,
    and the shipped default image (cirros), which only the test hypervisor has, fails boot with what to do."""
    conn = local["conn"]
    had_pool = "default" in [p.name() for p in conn.listAllStoragePools()]
    had_network = "default" in [n.name() for n in conn.listAllNetworks()]
    if had_pool:
        pytest.skip("this libvirtd already has a storage pool 'default'")
    name = f"e2e-{TOKEN}-d"
    try:
        _set_local(cm_home, pool="default", network="")
        listed = cm_process("image", "list", "--refresh")
        assert listed.code == 0, listed.err
        assert listed.err.count("had no storage pool 'default'; created it as a directory pool in "
                                "/var/lib/libvirt/images (started, and autostarted from now on)") == 1
        pool = conn.storagePoolLookupByName("default")
        assert pool.isActive() and pool.autostart() and "<path>/var/lib/libvirt/images</path>" in pool.XMLDesc(0)
        again = cm_process("image", "list", "--refresh")
        assert again.code == 0 and "created" not in again.err

        booted = cm_process("vm", "boot", "--name", name, "-f", "json")  # image: cirros, the shipped default
        assert booted.code == 1 and booted.err.strip() == "1 of 1 failed"
        assert json.loads(booted.out)[0]["result"] == (
            "failed: unknown image 'cirros' on cloud 'local' (images: none yet); "
            "add it with `cm image add cirros PATH` (a qcow2 or raw disk image file)")
        assert name not in [d.name() for d in conn.listAllDomains()]

        if had_network or not local["network"] or not _stock_subnet_free(conn):
            print("\nnetwork 'default' not tried: it exists, networks do not work here, or its subnet is taken")
            return
        if libvirtd.network_mode(conn.networkLookupByName(local["network"])) != "nat":
            print("\nnetwork 'default' not tried: NAT networks do not work here")
            return
        _set_local(cm_home, pool=local["pool"], network="default")
        booted = cm_process("vm", "boot", "--name", name, "--image", guest_image, "--flavor", "tiny", "--no-wait")
        assert booted.code == 0, booted.err
        assert booted.err.count("had no network 'default'; created libvirt's usual NAT network with DHCP on "
                                "192.168.122.0/24 (started, and autostarted from now on)") == 1
        net = conn.networkLookupByName("default")
        assert net.isActive() and net.autostart() and libvirtd.network_mode(net) == "nat"
        assert "<source network='default'" in conn.lookupByName(name).XMLDesc(0)
        ok(cm_process("vm", "delete", name))
    finally:
        remove_leftovers(conn)
        if not had_network:  # leave the daemon as it was: no stock objects of ours outlive the test
            with contextlib.suppress(libvirt.libvirtError):
                net = conn.networkLookupByName("default")
                if net.isActive():
                    net.destroy()
                net.undefine()
        with contextlib.suppress(libvirt.libvirtError):
            pool = conn.storagePoolLookupByName("default")
            if pool.isActive():
                pool.destroy()
            pool.undefine()
