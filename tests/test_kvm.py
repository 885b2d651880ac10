"""The kvm provider through the shell, on libvirt's test hypervisor (no daemon, in-process).

conftest pins the local cloud to ``test:///default``; cm keeps that hypervisor's
state in a node file under CM_HOME, so one-shot commands in separate processes
see the same VMs, as on a real cloud.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

libvirt = pytest.importorskip("libvirt")

from cm.errors import UsageError  # noqa: E402
from cm_plugins.kvm import seed  # noqa: E402  (after the skip: needs libvirt-python)

ROOT = Path(__file__).resolve().parent.parent


# -- helpers ----------------------------------------------------------------------------------
def qcow2_file(path: Path, virtual_size: int = 2 << 30) -> Path:
    """A qcow2 header: all cm reads of an image on the test hypervisor."""
    header = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, virtual_size)
    path.write_bytes(header + bytes(512 - len(header)))
    return path


def kernel_file(path: Path) -> Path:
    data = bytearray(4096)
    data[0x202:0x206] = b"HdrS"  # the Linux x86 boot protocol's signature
    path.write_bytes(bytes(data))
    return path


def set_cloud(cm_home: Path, **settings: object) -> None:
    path = cm_home / "cm.yaml"
    config = yaml.safe_load(path.read_text())
    config["clouds"]["local"].update(settings)
    path.write_text(yaml.safe_dump(config))


def node(cm_home: Path):
    """The persisted test hypervisor, opened the way cm opens it."""
    return libvirt.open(f"test://{cm_home / 'kvm-test' / 'local.xml'}")


def rows(result) -> list[dict]:
    assert result.code == 0, result.err
    return json.loads(result.out)


def one_line(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    return lines[0]


@pytest.fixture
def image(cm, tmp_path: Path) -> str:
    """The local cloud with the image its defaults name (cirros)."""
    result = cm("image", "add", "cirros", str(qcow2_file(tmp_path / "cirros.qcow2")))
    assert result.code == 0, result.err
    return "cirros"


@pytest.fixture
def three(cm, image: str) -> list[str]:
    result = cm("vm", "boot", "--n", "3", "-f", "json")
    assert result.code == 0, result.err
    return [r["name"] for r in json.loads(result.out)]


# -- flavors and images ---------------------------------------------------------------------------
def test_flavors_come_from_the_cloud_config(cm):
    flavors = {f["name"]: f for f in rows(cm("flavor", "list", "--refresh", "-f", "json"))}
    assert set(flavors) == {"tiny", "small", "medium", "large"}
    assert (flavors["small"]["vcpus"], flavors["small"]["ram"], flavors["small"]["disk"]) == (1, 1024, 10)


def test_a_cloud_without_flavors_gets_the_shipped_ones(cm, cm_home):
    set_cloud(cm_home, flavors=None)
    flavors = {f["name"]: f for f in rows(cm("flavor", "list", "--refresh", "-f", "json"))}
    shipped = yaml.safe_load((ROOT / "defaults" / "cm.yaml").read_text())["clouds"]["local"]["flavors"]
    assert {name: (f["vcpus"], f["ram"], f["disk"]) for name, f in flavors.items()} == \
        {name: (f["vcpus"], f["ram"], f["disk"]) for name, f in shipped.items()}


def test_image_add_list_show_delete(cm, cm_home, tmp_path):
    added = cm("image", "add", "debian", str(qcow2_file(tmp_path / "d.qcow2", 3 << 30)))
    assert added.code == 0 and "added image debian to local" in added.out
    assert "stores no disk data" in added.err  # the test hypervisor says what it did with the file
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(1 << 20))
    assert cm("image", "add", "rawdisk", str(raw)).code == 0

    listed = {i["name"]: i for i in rows(cm("image", "list", "-f", "json"))}
    assert listed["debian"]["format"] == "qcow2" and listed["debian"]["size"] == 3 << 30
    assert listed["rawdisk"]["format"] == "raw" and listed["rawdisk"]["size"] == 1 << 20
    shown = rows(cm("image", "show", "debian", "-f", "json"))
    assert shown["name"] == "debian" and shown["cloud"] == "local"

    assert cm("image", "delete", "debian").code == 0
    assert [i["name"] for i in rows(cm("image", "list", "--refresh", "-f", "json"))] == ["rawdisk"]


def test_kernel_images_from_a_directory_or_a_spec(cm, tmp_path):
    guest = tmp_path / "guest"
    guest.mkdir()
    kernel_file(guest / "vmlinuz-6.1")
    (guest / "initrd.img").write_bytes(b"initrd" * 100)
    assert cm("image", "add", "guest", str(guest)).code == 0
    spec = f"kernel={guest / 'vmlinuz-6.1'},initrd={guest / 'initrd.img'}"
    assert cm("image", "add", "guest2", spec).code == 0
    elf = tmp_path / "pvh"
    elf.mkdir()
    (elf / "vmlinux-6.1").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00" + bytes(100))
    (elf / "initramfs.gz").write_bytes(b"initrd")
    assert cm("image", "add", "guest3", str(elf)).code == 0  # an ELF vmlinux: QEMU boots its PVH entry
    listed = {i["name"]: i for i in rows(cm("image", "list", "--refresh", "-f", "json"))}
    assert listed["guest"]["format"] == listed["guest2"]["format"] == listed["guest3"]["format"] == "kernel+initrd"
    assert listed["guest"]["status"] == "active"
    booted = rows(cm("vm", "boot", "--name", "k1", "--image", "guest", "--flavor", "tiny", "-f", "json"))
    assert booted[0]["state"] == "running"
    in_use = cm("image", "delete", "guest")
    assert in_use.code == 1 and "image 'guest' is in use by k1" in in_use.err


def test_a_kernel_image_with_its_root_disk_boots_an_overlay_on_it(cm, cm_home, tmp_path):
    guest = tmp_path / "debian12"
    guest.mkdir()
    kernel_file(guest / "vmlinuz")
    (guest / "initrd.img").write_bytes(b"initrd" * 100)
    qcow2_file(guest / "disk.qcow2", 3 << 30)
    (guest / "cmdline").write_text("root=/dev/vda rw console=ttyS0 net.ifnames=0\n")
    (guest / "build.json").write_text("{}")   # other files in the directory are left alone
    assert cm("image", "add", "debian12", str(guest)).code == 0
    spec = (f"kernel={guest / 'vmlinuz'},initrd={guest / 'initrd.img'},disk={guest / 'disk.qcow2'},"
            "cmdline=root=/dev/vda rw console=ttyS0,115200")   # the command line keeps its commas
    assert cm("image", "add", "deb2", spec).code == 0
    listed = {i["name"]: i for i in rows(cm("image", "list", "--refresh", "-f", "json"))}
    assert listed["debian12"]["format"] == listed["deb2"]["format"] == "kernel+initrd+disk"
    assert listed["debian12"]["status"] == "active"
    assert sorted(v.name() for v in node(cm_home).storagePoolLookupByName("default").listAllVolumes()
                  if v.name().startswith("debian12.")) == \
        ["debian12.cmdline", "debian12.disk", "debian12.initrd", "debian12.kernel"]
    booted = rows(cm("vm", "boot", "--name", "d1", "--image", "debian12", "--flavor", "tiny", "-f", "json"))
    assert booted[0]["state"] == "running"
    conn = node(cm_home)
    xml = conn.lookupByName("d1").XMLDesc(0)
    assert "/debian12.kernel</kernel>" in xml and "/debian12.initrd</initrd>" in xml and "root=/dev/vda" in xml
    disk = next(v for v in conn.storagePoolLookupByName("default").listAllVolumes() if v.name().startswith("d1-disk-"))
    assert disk.name().endswith(".qcow2") and "/debian12.disk</path>" in disk.XMLDesc(0)
    assert disk.info()[1] == 3 << 30   # the image's disk is larger than the flavor's 1 GiB
    in_use = cm("image", "delete", "debian12")
    assert in_use.code == 1 and "image 'debian12' is in use by d1" in in_use.err
    assert cm("vm", "delete", "d1").code == 0 and cm("image", "delete", "debian12").code == 0
    assert not [v for v in node(cm_home).storagePoolLookupByName("default").listVolumes() if "debian12" in v]


@pytest.mark.parametrize("spec, expected", [
    ("kernel={k},disk={d}", "a kernel image is given as kernel=PATH,initrd=PATH[,disk=PATH][,cmdline=ARGS]"),
    ("kernel={k},initrd={i},disk={i}", "give its initrd too"),   # checked as a disk: the initrd is no disk
    ("kernel={k},initrd={i},root={d}", "a kernel image is given as kernel=PATH,initrd=PATH"),
])
def test_kernel_image_specs_that_are_refused(cm, tmp_path, spec, expected):
    k, i, d = kernel_file(tmp_path / "vmlinuz"), tmp_path / "initrd", qcow2_file(tmp_path / "d.qcow2")
    i.write_bytes(b"initrd")
    words = spec.format(k=k, i=i, d=d)
    if "disk={i}" in spec:
        i.write_bytes(kernel_file(tmp_path / "k2").read_bytes())   # an "initrd" that is a kernel, given as disk
    result = cm("image", "add", "x", words)
    assert result.code == 2 and expected in one_line(result)


@pytest.mark.parametrize("content, expected", [
    (b"\x1f\x8b" + bytes(100), "gzip-compressed; uncompress it first"),
    (b"KDMV" + bytes(100), "a VMDK image; convert it: qemu-img convert"),
    (b"", "is empty"),
])
def test_image_add_refuses_what_cannot_boot(cm, tmp_path, content, expected):
    path = tmp_path / "img"
    path.write_bytes(content)
    result = cm("image", "add", "x", str(path))
    assert result.code == 2 and expected in one_line(result)


def test_image_add_errors(cm, tmp_path, image):
    missing = cm("image", "add", "y", str(tmp_path / "nope.qcow2"))
    assert missing.code == 2 and "no such file" in one_line(missing)
    alone = cm("image", "add", "k", str(kernel_file(tmp_path / "vmlinuz")))
    assert alone.code == 2 and "give its initrd too: cm image add NAME kernel=" in one_line(alone)
    again = cm("image", "add", "cirros", str(qcow2_file(tmp_path / "again.qcow2")))
    assert again.code == 1 and "image 'cirros' already exists" in one_line(again)
    reserved = cm("image", "add", "x-disk-0123abcd.qcow2", str(tmp_path / "again.qcow2"))
    assert reserved.code == 2 and "looks like a volume cm makes itself" in one_line(reserved)


def test_out_of_space_is_one_line_that_says_so(cm, tmp_path):
    big = tmp_path / "big.raw"
    with open(big, "wb") as handle:  # sparse: 200 GiB for the fake 100 GiB pool
        handle.truncate(200 << 30)
    result = cm("image", "add", "big", str(big))
    assert result.code == 1 and "storage pool is out of space" in one_line(result)


def test_an_image_in_use_is_not_deleted(cm, three):
    result = cm("image", "delete", "cirros")
    assert result.code == 1
    assert one_line(result) == f"cm: image 'cirros' is in use by {', '.join(three)}; delete those VMs first"


# -- booting -----------------------------------------------------------------------------------------
def test_boot_three_with_generated_names(cm, cm_home, three):
    assert three == ["tester-001", "tester-002", "tester-003"]
    listed = rows(cm("vm", "list", "-f", "json"))
    assert [(v["name"], v["state"], v["image"], v["flavor"]) for v in listed] == \
        [(n, "running", "cirros", "small") for n in three]
    assert all(v["private_ips"] for v in listed)  # the test hypervisor's addresses
    csv = cm("vm", "list", "-f", "csv")
    assert csv.out.splitlines()[0].startswith("name,cloud,state") and "tester-002,local,running" in csv.out
    conn = node(cm_home)
    assert sorted(d.name() for d in conn.listAllDomains()) == three
    volumes = conn.storagePoolLookupByName("default").listVolumes()
    assert sum(v.startswith("tester-001-disk-") for v in volumes) == 1
    assert sum(v.startswith("tester-001-seed-") for v in volumes) == 1


def test_boot_hostlist_names_and_show(cm, image):
    booted = rows(cm("vm", "boot", "--name", "node[01-03]", "--flavor", "tiny", "-f", "json"))
    assert [v["name"] for v in booted] == ["node01", "node02", "node03"]
    shown = rows(cm("vm", "show", "node02", "--refresh", "-f", "json"))
    assert shown["flavor"] == "tiny" and shown["state"] == "running" and shown["key"] == "id_ed25519"
    assert shown["extra"]["ram"] == 256 and shown["extra"]["domain_type"] == "test"


def test_the_name_is_taken_in_libvirt(cm, cm_home, image):
    assert cm("vm", "boot", "--name", "web").code == 0
    (cm_home / "mirror.json").unlink()  # the mirror forgot; libvirt did not
    assert boot_failure(cm, "--name", "web") == "failed: a VM named 'web' already exists on cloud 'local'"


def boot_failure(cm, *words: str) -> str:
    """The result column of a boot that failed (exit 1, summary on stderr)."""
    result = cm("vm", "boot", *words, "-f", "json")
    assert result.code == 1 and result.err.strip() == "1 of 1 failed", result.err
    return json.loads(result.out)[0]["result"]


def test_boot_errors_name_what_to_do(cm, cm_home, image):
    # The mirror knows the cloud's images: the command refuses before creating anything ...
    refused = cm("vm", "boot", "--name", "a", "--image", "nosuch")
    assert refused.code == 2 and one_line(refused) == (
        "cm: unknown image 'nosuch' on cloud 'local' (known: cirros); add it with `cm image add nosuch PATH`")
    # ... and when it does not, the provider says the same per VM.
    cm_home.joinpath("mirror.json").unlink()
    assert boot_failure(cm, "--name", "a", "--image", "nosuch") == (
        "failed: unknown image 'nosuch' on cloud 'local' (images: cirros); "
        "add it with `cm image add nosuch PATH` (a qcow2 or raw disk image file)")
    assert "unknown flavor 'huge' on cloud 'local' (flavors: tiny, small, medium, large)" in \
        boot_failure(cm, "--name", "b", "--flavor", "huge")
    public = cm("vm", "boot", "--name", "c", "--public")  # refused before any VM is made
    assert public.code == 2 and "cloud 'local' cannot assign public IPs" in one_line(public)
    assert not node(cm_home).listAllDomains()


def test_missing_pool_and_network_are_config_errors(cm, cm_home, image):
    set_cloud(cm_home, pool="nosuch")
    pool = cm("image", "list", "--refresh")
    assert pool.code == 2 and "has no storage pool 'nosuch'; create it (virsh pool-define-as" in one_line(pool)
    set_cloud(cm_home, pool="default", network="lab")
    assert "has no network 'lab'; create it (virsh net-define, net-start)" in boot_failure(cm, "--name", "x")


def test_no_daemon_is_one_line_that_says_what_to_do(cm, cm_home):
    set_cloud(cm_home, uri="qemu+unix:///system?socket=/nonexistent/libvirt-sock")
    result = cm("image", "list", "--refresh")
    assert result.code == 1
    assert "no libvirt daemon answers at qemu+unix:///system" in one_line(result)
    assert "start libvirtd, or set uri: auto" in result.err


def test_a_password_in_the_uri_is_never_shown(cm, cm_home):
    set_cloud(cm_home, uri="qemu+tcp://alice:s3cret-pw@127.0.0.1:1/system")
    result = cm("image", "list", "--refresh")
    assert result.code == 1 and "s3cret-pw" not in result.out + result.err
    assert "libvirt daemon answers at qemu+tcp://alice@127.0.0.1:1/system" in one_line(result)


@pytest.mark.parametrize("uri, shown", [
    ("qemu+ssh://me:pw@lab.example.org/system", "qemu+ssh://me@lab.example.org/system"),
    ("qemu+tcp://me:p@ss:w0rd@lab:16509/system?mode=legacy", "qemu+tcp://me@lab:16509/system?mode=legacy"),
    ("qemu+ssh://me@lab/system", "qemu+ssh://me@lab/system"),
    ("qemu:///system", "qemu:///system"),
    ("test:///default", "test:///default"),
])
def test_shown_uri_drops_only_the_password(uri, shown):
    from cm_plugins.kvm.connection import scrub, shown_uri

    assert shown_uri(uri) == shown
    assert scrub(f"cannot reach {uri}", uri) == f"cannot reach {shown}"


# -- libvirt's stock pool and network on a daemon that lacks them ---------------------------------------
@pytest.mark.parametrize("uri, daemon", [
    ("qemu:///system", "system"), ("qemu:///session", "session"), ("qemu+unix:///system", "system"),
    ("qemu+ssh://lab/system", ""), ("qemu+tcp://lab/session", ""), ("test:///default", ""), ("xen:///system", ""),
])
def test_stock_objects_are_made_only_on_local_qemu_daemons(uri, daemon):
    from cm_plugins.kvm import stock

    assert stock.local_daemon(uri) == daemon


def test_make_pool_and_network_build_start_and_autostart(tmp_path):
    from cm_plugins.kvm import stock

    conn = libvirt.open("test:///default")  # the driver's built-in node: pool 'default-pool', network 'default'
    try:
        conn.networkLookupByName("default").destroy()
        conn.networkLookupByName("default").undefine()
        pool = stock.make_pool(conn, "default", tmp_path / "images")
        assert pool.isActive() and pool.autostart()
        assert f"<path>{tmp_path / 'images'}</path>" in pool.XMLDesc(0)
        net = stock.make_network(conn)
        assert net.isActive() and net.autostart()
        assert "<forward mode='nat'/>" in net.XMLDesc(0) and "192.168.122.1" in net.XMLDesc(0)
        assert stock.make_network(conn).name() == "default"  # made meanwhile (another process): reused
    finally:
        conn.close()


def test_a_missing_default_pool_and_network_are_made_once_and_said_once(cm, cm_home, tmp_path, monkeypatch):
    from cm_plugins.kvm import stock

    set_cloud(cm_home, pool="other", network="lab")
    assert cm("image", "list", "--refresh").code == 0  # a hypervisor with neither 'default'
    set_cloud(cm_home, pool="default", network="default")
    monkeypatch.setattr(stock, "local_daemon", lambda uri: "system")  # the test hypervisor, as if qemu:///system
    monkeypatch.setattr(stock, "pool_dir", lambda daemon: tmp_path / "images")
    added = cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2")))
    assert added.code == 0, added.err
    assert added.err.count(f"had no storage pool 'default'; created it as a directory pool in {tmp_path}/images "
                           "(started, and autostarted from now on)") == 1
    booted = cm("vm", "boot", "--n", "2")
    assert booted.code == 0, booted.err
    assert booted.err.count("had no network 'default'; created libvirt's usual NAT network with DHCP on "
                            "192.168.122.0/24") == 1
    conn = node(cm_home)  # (the test driver's saved state keeps no autostart flags)
    assert conn.storagePoolLookupByName("default").isActive()
    assert conn.networkLookupByName("default").isActive()
    again = cm("vm", "boot", "--name", "x1")
    assert again.code == 0 and "created" not in again.err


def test_no_stock_objects_under_other_names_or_on_remote_daemons(cm, cm_home, image, monkeypatch):
    from cm_plugins.kvm import stock
    from cm_plugins.kvm.testnode import dump

    monkeypatch.setattr(stock, "local_daemon", lambda uri: "system")
    set_cloud(cm_home, pool="mine")
    result = cm("image", "list", "--refresh")
    assert result.code == 2 and "has no storage pool 'mine'" in one_line(result)
    set_cloud(cm_home, pool="default", network="default")
    monkeypatch.setattr(stock, "local_daemon", lambda uri: "session")  # a session daemon makes no bridges
    conn = node(cm_home)
    conn.networkLookupByName("default").destroy()
    conn.networkLookupByName("default").undefine()
    (cm_home / "kvm-test" / "local.xml").write_text(dump(conn))  # the hypervisor without network 'default'
    assert "has no network 'default'; create it" in boot_failure(cm, "--name", "n1")


@pytest.mark.parametrize("option, good, bad, error", [
    ("--user-data", "#cloud-config\npackages: [htop]\n", "#cloud-config\npackages: [htop\n",
     "user-data is not valid YAML (line 3); fix the file given with --user-data"),
    ("--network-config", "version: 2\nethernets:\n  eth0:\n    dhcp4: true\n", "version: 7\n",
     "network-config must be a YAML mapping with version: 1 or 2"),
])
def test_seed_files_from_boot_options(cm, tmp_path, image, option, good, bad, error):
    path = tmp_path / "file"
    path.write_text(good)
    assert cm("vm", "boot", "--name", "s1", option, str(path)).code == 0
    path.write_text(bad)
    assert boot_failure(cm, "--name", "s2", option, str(path)) == f"failed: {error}"
    missing = cm("vm", "boot", "--name", "s3", option, str(tmp_path / "nope"))
    assert missing.code == 2
    assert one_line(missing) == f"cm: cannot read {option[2:]} {tmp_path / 'nope'}: No such file or directory"


# -- the lifecycle ----------------------------------------------------------------------------------
def states(cm, names: list[str]) -> list[str]:
    return [r["state"] for r in rows(cm("vm", "status", *names, "-f", "json"))]


def test_lifecycle(cm, three):
    first = three[0]
    assert rows(cm("vm", "stop", first, "-f", "json"))[0]["result"] == "stopped"
    assert states(cm, three) == ["stopped", "running", "running"]
    assert cm("vm", "start", first).code == 0
    assert cm("vm", "suspend", "tester-[001-002]").code == 0
    assert states(cm, three) == ["suspended", "suspended", "running"]
    assert cm("vm", "resume", "tester-001,tester-002").code == 0
    assert cm("vm", "reboot", first).code == 0
    assert states(cm, three) == ["running"] * 3
    waited = cm("vm", "wait", *three, "--state", "running", "--timeout", "5", "-f", "json")
    assert [r["result"] for r in rows(waited)] == ["running"] * 3


def test_suspended_and_stopped_survive_separate_processes(cm_process, tmp_path):
    assert cm_process("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    assert cm_process("vm", "boot", "--n", "2").code == 0
    assert cm_process("vm", "suspend", "tester-001").code == 0
    assert cm_process("vm", "stop", "tester-002").code == 0
    listed = cm_process("vm", "list", "--refresh", "-f", "json")
    assert [(v["name"], v["state"]) for v in json.loads(listed.out)] == \
        [("tester-001", "suspended"), ("tester-002", "stopped")]
    assert cm_process("vm", "delete", "tester-[001-002]").code == 0


def test_concurrent_processes_lose_nothing(cm_process, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    assert cm_process("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda n: cm_process("vm", "boot", "--name", f"p{n}").code, range(4)))
    assert codes == [0] * 4
    listed = json.loads(cm_process("vm", "list", "--refresh", "-f", "json").out)
    assert [(v["name"], v["state"]) for v in listed] == [(f"p{n}", "running") for n in range(4)]


def test_wrong_state_is_a_clear_conflict(cm, three):
    cm("vm", "stop", three[0])
    result = cm("vm", "suspend", three[0], "-f", "json")
    assert result.code == 1 and result.err.strip() == "1 of 1 failed"
    assert json.loads(result.out)[0]["result"] == \
        "failed: tester-001 is stopped, so it cannot be suspended; start it first (cm vm start tester-001)"


def test_stop_says_so_when_the_guest_ignores_it(cm, cm_home, three, monkeypatch):
    set_cloud(cm_home, shutdown_timeout=0.3)
    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self, *a: 0)  # a guest deaf to ACPI
    result = cm("vm", "stop", three[0], "-f", "json")
    assert result.code == 1
    message = json.loads(result.out)[0]["result"]
    assert "ignored the shutdown request for 0.3 s" in message and "virsh -c" in message
    assert states(cm, three[:1]) == ["running"]


def test_stop_waits_as_long_as_its_timeout_says(cm_home, three, monkeypatch):
    """stop_vm(timeout=N) waits N seconds, not the cloud's shutdown_timeout; None means shutdown_timeout."""
    import time

    from cm.errors import ProviderError
    from cm_plugins.kvm.provider import KvmProvider

    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self, *a: 0)  # a guest deaf to ACPI
    provider = KvmProvider("local", {"uri": "test:///default", "pool": "default", "network": "default",
                                     "shutdown_timeout": 30})
    provider.state_dir = cm_home
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError, match=r"ignored the shutdown request for 0.4 s .* give a longer --timeout"):
            provider.stop_vm(three[0], timeout=0.4)
        assert 0.4 <= time.monotonic() - started < 3
        provider.config["shutdown_timeout"] = 0.2
        with pytest.raises(ProviderError, match=r"for 0.2 s .* raise shutdown_timeout in cm.yaml"):
            provider.stop_vm(three[0])
        monkeypatch.undo()
        provider.stop_vm(three[0], timeout=0.4)  # a guest that powers off: done at once
        assert provider.get_vm(three[0]).state == "stopped"
    finally:
        provider.close()


def test_vm_stop_timeout_reaches_the_provider(cm, cm_home, three, monkeypatch):
    import time

    set_cloud(cm_home, shutdown_timeout=30)
    monkeypatch.setattr(libvirt.virDomain, "shutdown", lambda self, *a: 0)  # a guest deaf to ACPI
    started = time.monotonic()
    result = cm("vm", "stop", three[0], "--timeout", "0.3", "-f", "json")
    assert result.code == 1 and time.monotonic() - started < 5
    assert "ignored the shutdown request for 0.3 s" in json.loads(result.out)[0]["result"]


def test_the_test_hypervisor_lives_in_the_state_dir_the_shell_gives(cm_home, tmp_path):
    from cm_plugins.kvm.provider import KvmProvider

    provider = KvmProvider("lab", {"uri": "test:///default", "pool": "default", "network": ""})
    provider.state_dir = tmp_path / "state"
    try:
        assert provider.list_vms() == []
    finally:
        provider.close()
    assert (tmp_path / "state" / "kvm-test" / "lab.xml").is_file()
    assert not (cm_home / "kvm-test" / "lab.xml").exists()


def test_a_verb_the_driver_lacks_names_the_cloud_and_the_verb(cm, cm_home, three, monkeypatch):
    def unsupported(self, *args):
        error = libvirt.libvirtError("unsupported")
        error.err = (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_FROM_NONE,
                     "this function is not supported by the connection driver: virDomainSuspend", 2, "", None,
                     None, 0, 0)
        raise error

    monkeypatch.setattr(libvirt.virDomain, "suspend", unsupported)
    result = cm("vm", "suspend", three[0], "-f", "json")
    assert result.code == 1
    assert json.loads(result.out)[0]["result"] == (
        f"failed: cloud 'local' cannot suspend VMs: libvirt's driver for test://{cm_home}/kvm-test/local.xml "
        "does not support it (this function is not supported by the connection driver: virDomainSuspend)")


def test_rename_needs_a_stopped_vm(cm, three):
    running = cm("vm", "rename", three[0], "db")
    assert running.code == 1 and "libvirt renames only stopped VMs: `cm vm stop tester-001` first" in one_line(running)
    cm("vm", "stop", three[0])
    assert cm("vm", "rename", three[0], "db").out.strip() == "renamed tester-001 to db"
    names = [v["name"] for v in rows(cm("vm", "list", "--refresh", "-f", "json"))]
    assert names == ["db", "tester-002", "tester-003"]
    assert cm("vm", "start", "db").code == 0


def test_console_is_unsupported_on_the_test_hypervisor(cm, three):
    result = cm("vm", "console", three[0])
    assert result.code == 2
    assert one_line(result) == ("cm: cloud 'local' cannot show consoles: libvirt's test hypervisor runs "
                                "no guest, so it has none")


def test_public_ips_are_unsupported(cm, three):
    from cm_plugins.kvm.provider import KvmProvider

    result = cm("vm", "ip", "assign", three[0], "-f", "json")
    assert result.code == 2 and result.out == "" and one_line(result) == \
        "cm: cloud 'local' cannot assign public IPs: VMs get addresses on the libvirt network only"
    assert "assign_public_ip" not in KvmProvider.verbs() and "console_log" in KvmProvider.verbs()


def test_delete_leaves_nothing_behind(cm, cm_home, three):
    assert cm("vm", "stop", three[1]).code == 0
    result = cm("vm", "delete", *three)
    assert result.code == 0 and result.err.strip() == "deleted 3 of 3"
    conn = node(cm_home)
    assert conn.listAllDomains() == []
    assert conn.storagePoolLookupByName("default").listVolumes() == ["cirros"]
    assert rows(cm("vm", "list", "--refresh", "-f", "json")) == []


def test_dryrun_changes_nothing(cm, cm_home, tmp_path, three):
    state = (cm_home / "kvm-test" / "local.xml").read_bytes()
    for words in (("vm", "boot", "--n", "2"), ("vm", "stop", three[0]), ("vm", "delete", *three),
                  ("vm", "rename", three[0], "x"), ("image", "delete", "cirros"),
                  ("image", "add", "i2", str(qcow2_file(tmp_path / "i2.qcow2")))):
        result = cm(*words, "--dryrun")
        assert result.code == 0 and "would" in result.out, words
    assert (cm_home / "kvm-test" / "local.xml").read_bytes() == state
    assert [v["name"] for v in rows(cm("vm", "list", "--refresh", "-f", "json"))] == three


# -- the fake hypervisor's file, and the auto fallback ----------------------------------------------------
def test_a_corrupt_node_file_starts_fresh_and_says_so(cm, cm_home, three):
    path = cm_home / "kvm-test" / "local.xml"
    path.write_text("<node><domain>half a write")
    result = cm("vm", "list", "--refresh", "-f", "json")
    assert result.code == 0 and json.loads(result.out) == []
    assert "was unreadable" in result.err and "kept it as local.xml.bad-" in result.err
    assert list(path.parent.glob("local.xml.bad-*"))


def test_a_lost_node_file_starts_fresh_and_says_so(cm, cm_home, three):
    (cm_home / "kvm-test" / "local.xml").unlink()
    result = cm("vm", "list", "--refresh", "-f", "json")
    assert result.code == 0 and json.loads(result.out) == []
    assert one_line(result).endswith("was missing; started a fresh one (its VMs and images are gone)")


def test_auto_falls_back_to_the_test_hypervisor_and_says_so_once(cm, cm_home, monkeypatch):
    monkeypatch.setattr("cm_plugins.kvm.connection.SYSTEM_URI", "qemu+unix:///system?socket=/nonexistent/sock")
    set_cloud(cm_home, uri="auto")
    result = cm(str(ROOT / "defaults" / "tour.cm"))
    assert result.code == 0, result.err
    assert result.err.count("using libvirt's test hypervisor instead") == 1
    assert "booted 3 of 3" in result.err and "stopped 3 of 3" in result.err and "deleted 3 of 3" in result.err
    assert '"state": "running"' in result.out  # the json list
    assert not node(cm_home).listAllDomains()


def test_vm_list_does_not_import_libvirt(cm_process):
    code = ("import sys; from cm.main import run; code = run(['vm', 'list']); "
            "print('libvirt' in sys.modules, code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split()[-2:] == ["False", "0"], proc.stderr


# -- the seed ----------------------------------------------------------------------------------------------
def _iso_file(data: bytes, name: str) -> bytes | None:
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    assert iso.pvd.volume_identifier.strip() == b"cidata"
    out = io.BytesIO()
    try:
        iso.get_file_from_iso_fp(out, rr_path="/" + name)
    except pycdlib.pycdlibexception.PyCdlibInvalidInput:
        return None   # no such file in the seed
    return out.getvalue()


def test_seed_iso_holds_nocloud_meta_data_and_user_data():
    data = seed.iso_bytes(seed.nocloud("id-1", "vm1", "alice", "ssh-ed25519 AAAA x"))
    assert _iso_file(data, "meta-data").decode() == "instance-id: id-1\nlocal-hostname: vm1\n"
    config = yaml.safe_load(_iso_file(data, "user-data"))
    assert config["hostname"] == "vm1" and config["users"][1]["name"] == "alice"
    assert config["users"][1]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA x"]
    assert _iso_file(data, "vendor-data") is None and _iso_file(data, "network-config") is None


USER_DATA = ("#cloud-config\n# rendered by a launcher: comments, quoting and order are kept\n"
             "write_files:\n- path: /etc/munge/munge.key\n  encoding: b64\n  content: AAAA\n  permissions: '0400'\n"
             "packages: [htop]\nusers: [{name: bob}]\nruncmd: [[ls]]\n")
NETWORK_CONFIG = "version: 2\nethernets:\n  eth0:\n    addresses: [10.1.0.5/24]\n"


@pytest.mark.parametrize("extra", [USER_DATA, "#!/bin/sh\necho hi\n", "## template: jinja\n#cloud-config\n{}\n",
                                   "Content-Type: multipart/mixed; boundary=x\nMIME-Version: 1.0\n\n--x--\n"])
def test_the_users_user_data_reaches_the_seed_byte_for_byte(extra):
    made = seed.nocloud("id-1", "vm1", "alice", "ssh-ed25519 AAAA x", extra, NETWORK_CONFIG)
    data = seed.iso_bytes(made)
    assert seed.iso_size(made) == len(data)   # what the test hypervisor records without building the ISO
    assert _iso_file(data, "user-data").decode() == extra
    vendor = yaml.safe_load(_iso_file(data, "vendor-data"))   # cm's settings, merged by cloud-init with lists joined
    assert vendor["merge_how"] == "list(append)+dict(no_replace,recurse_list)+str()"
    assert vendor["users"][1]["ssh_authorized_keys"] == ["ssh-ed25519 AAAA x"] and vendor["hostname"] == "vm1"
    assert _iso_file(data, "network-config").decode() == NETWORK_CONFIG


@pytest.mark.parametrize("extra", ["", USER_DATA])
def test_generated_seed_is_valid_cloud_config(tmp_path, extra):
    if shutil.which("cloud-init") is None:
        pytest.skip("cloud-init is not installed (apt-get install cloud-init)")
    made = seed.nocloud("id-1", "vm1", "alice", "ssh-ed25519 AAAA x", extra)
    for text in filter(None, (made.user_data, made.vendor_data)):
        path = tmp_path / "config"
        path.write_text(text)
        proc = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0 and "Valid cloud-config" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("text, error", [
    ("echo hi\n", "user-data must start with #cloud-config, #!, #include or another cloud-init marker"),
    ("#cloud-config\n- a list\n", "user-data: a #cloud-config must be a mapping of keys"),
])
def test_bad_user_data_is_refused(text, error):
    with pytest.raises(UsageError, match=re.escape(error)):
        seed.nocloud("id-1", "vm1", "alice", "", text)


@pytest.mark.parametrize("text", ["eth0: [\n", "- 1\n", "version: 3\n", "network: 5\n"])
def test_bad_network_config_is_refused(text):
    with pytest.raises(UsageError, match="network-config"):
        seed.nocloud("id-1", "vm1", "alice", "", "", text)


# -- choosing kvm or qemu ----------------------------------------------------------------------------------
class FakeConn:
    def __init__(self, types: list[str], kvm_ok: bool = True) -> None:
        self.types, self.kvm_ok = types, kvm_ok

    def getCapabilities(self) -> str:
        domains = "".join(f"<domain type='{t}'/>" for t in self.types)
        return (f"<capabilities><host><cpu><arch>x86_64</arch></cpu></host><guest><os_type>hvm</os_type>"
                f"<arch name='x86_64'>{domains}</arch></guest></capabilities>")

    def getDomainCapabilities(self, *args: object) -> str:
        if not self.kvm_ok:
            raise libvirt.libvirtError("KVM is not supported by '/usr/bin/qemu-system-x86_64' on this host")
        return "<domainCapabilities/>"


@pytest.mark.parametrize("types, kvm_ok, cpu, local, wanted, expected", [
    (["qemu", "kvm"], True, True, True, "auto", "kvm"),
    (["qemu", "kvm"], True, False, True, "auto", "qemu"),  # /dev/kvm without vmx/svm (nested PVM)
    (["qemu", "kvm"], False, True, True, "auto", "qemu"),  # libvirt lists kvm but cannot use it
    (["qemu"], True, True, True, "auto", "qemu"),
    (["qemu", "kvm"], True, False, False, "auto", "kvm"),  # remote: libvirt's word is all there is
    (["qemu", "kvm"], True, True, True, "qemu", "qemu"),  # the config decides
])
def test_domain_type_detection(monkeypatch, types, kvm_ok, cpu, local, wanted, expected):
    from cm_plugins.kvm import connection

    monkeypatch.setattr(connection, "_cpu_has_virtualization", lambda: cpu)
    assert connection.guest_kind(FakeConn(types, kvm_ok), wanted, local) == (expected, "x86_64")


@pytest.mark.parametrize("message, kind, advice", [
    ("Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied", "AuthError",
     "join the 'libvirt' group"),
    ("authentication unavailable: no polkit agent available to authenticate action", "AuthError",
     "or use uri: qemu:///session"),
    ("Failed to connect socket to '/var/run/libvirt/libvirt-sock': No such file or directory", "ProviderError",
     "start libvirtd, or set uri: auto"),
    ("Cannot recv data: ssh: Could not resolve hostname lab", "ProviderError", "no libvirt daemon answers"),
])
def test_connection_errors_say_what_to_do(message, kind, advice):
    from cm_plugins.kvm.connection import connect_error

    error = connect_error(libvirt.libvirtError(message), "qemu:///system")
    assert type(error).__name__ == kind and advice in str(error) and "\n" not in str(error)
