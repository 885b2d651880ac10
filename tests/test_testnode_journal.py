"""The test hypervisor's state on disk: a snapshot plus a journal of changes, shared by processes.

A change appends what it touched (not the whole state), so booting many VMs is
linear (benchmarks/testhv_boot.py measures it); these tests prove the state
stays whole: across separate processes and long-lived ones, after a kill -9
in the middle of a boot, and with a journal line cut short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

libvirt = pytest.importorskip("libvirt")

from tests.test_kvm import node, qcow2_file, rows  # noqa: E402

from cm.provider import BootSpec  # noqa: E402


@pytest.fixture
def image(cm, tmp_path: Path) -> str:
    result = cm("image", "add", "cirros", str(qcow2_file(tmp_path / "cirros.qcow2")))
    assert result.code == 0, result.err
    return "cirros"


def provider(cm_home: Path):
    from cm_plugins.kvm.provider import KvmProvider

    made = KvmProvider("local", {"uri": "test:///default", "pool": "default", "network": "default"})
    made.state_dir = cm_home
    return made


def spec(name: str) -> BootSpec:
    return BootSpec(name=name, image="cirros", flavor="tiny", key_name="", public_key="", user="tester",
                    user_data="", secgroups=[], networks=[], public=False)


def names(p) -> list[str]:
    return [vm.name for vm in p.list_vms()]


def test_long_lived_processes_see_each_others_changes(cm_home, image):
    """Two open providers (a shell and a script, say) each keep a connection, and still agree."""
    first, second = provider(cm_home), provider(cm_home)
    try:
        first.create_vm(spec("a1"))
        assert names(second) == ["a1"]
        second.create_vm(spec("b1"))
        second.stop_vm("a1")
        assert names(first) == ["a1", "b1"] and first.get_vm("a1").state == "stopped"
        first.delete_vm("b1")
        assert names(second) == ["a1"]
        assert not (cm_home / "kvm-test" / "local.xml").read_text().count("<name>b1</name>")  # folded by second
    finally:
        first.close()
        second.close()
    journal = cm_home / "kvm-test" / "local.xml.journal"
    assert not journal.exists()  # closing folds the journal into the node file: it alone is the state
    conn = node(cm_home)
    assert [d.name() for d in conn.listAllDomains()] == ["a1"] and conn.lookupByName("a1").state()[0] == 5


def test_a_change_appends_only_what_it_touched(cm_home, image):
    p = provider(cm_home)
    try:
        for i in range(30):
            p.create_vm(spec(f"v{i:02d}"))
        snapshot = (cm_home / "kvm-test" / "local.xml").stat()
        journal = cm_home / "kvm-test" / "local.xml.journal"
        before = journal.stat().st_size
        p.stop_vm("v07")
        entries = [json.loads(line) for line in journal.read_bytes()[before:].splitlines()]
        assert [e.get("domain") for e in entries] == [p.get_vm("v07").id]  # one record: the stopped domain
        assert (cm_home / "kvm-test" / "local.xml").stat().st_mtime_ns == snapshot.st_mtime_ns
    finally:
        p.close()


def test_a_journal_line_cut_by_a_kill_is_dropped(cm, cm_home, image):
    p = provider(cm_home)
    p.create_vm(spec("kept"))
    p.hv._conn = None  # as if the process died here: no close, the journal stays
    journal = cm_home / "kvm-test" / "local.xml.journal"
    with journal.open("ab") as handle:
        handle.write(b'{"domain":"0f0e0d0c-0000-4000-8000-00000000000a","xml":"<domain type=')
    listed = rows(cm("vm", "list", "--refresh", "-f", "json"))
    assert [vm["name"] for vm in listed] == ["kept"] and listed[0]["state"] == "running"
    assert cm("vm", "boot", "--name", "after").code == 0
    assert sorted(vm["name"] for vm in rows(cm("vm", "list", "--refresh", "-f", "json"))) == ["after", "kept"]


def test_kill_9_in_the_middle_of_a_boot_leaves_every_created_vm_whole(cm, cm_home, image):
    """What the hypervisor created before the kill is kept, each VM with its disk and seed; nothing is broken."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-m", "cm.main", "vm", "boot", "--n", "400", "--no-wait"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = cm_home / "kvm-test" / "local.xml.journal"
    deadline = time.monotonic() + 240  # generous: a loaded machine starts Python slowly
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.stat().st_size > 20_000:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the boot ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    listed = cm("vm", "list", "--refresh", "-f", "json")
    assert listed.code == 0 and "unreadable" not in listed.err, listed.err
    vms = json.loads(listed.out)
    assert 0 < len(vms) < 400 and {vm["state"] for vm in vms} == {"running"}
    conn = node(cm_home)
    volumes = set(conn.storagePoolLookupByName("default").listVolumes())
    for dom in conn.listAllDomains():
        xml = dom.XMLDesc(0)
        disks = [v for v in volumes if v.startswith(f"{dom.name()}-")]
        assert sorted(v.split("-")[-2] for v in disks) == ["disk", "seed"] and all(d in xml for d in disks)
    assert not list((cm_home / "kvm-test").glob(".*.tmp"))


def test_a_journal_record_libvirt_refuses_is_kept_aside_and_said(cm, cm_home, image):
    assert cm("vm", "boot", "--name", "kept").code == 0
    journal = cm_home / "kvm-test" / "local.xml.journal"
    journal.write_text('{"domain":"0f0e0d0c-0000-4000-8000-00000000000b","xml":"<domain type=\'test\'>no name'
                       '</domain>","state":1}\n')
    listed = cm("vm", "list", "--refresh", "-f", "json")
    assert listed.code == 0 and [vm["name"] for vm in json.loads(listed.out)] == ["kept"]
    assert "latest changes could not be replayed" in listed.err and "local.xml.journal.bad-" in listed.err
    assert not journal.exists() and list(journal.parent.glob("local.xml.journal.bad-*"))


def test_a_node_file_cut_short_starts_fresh_and_says_so(cm, cm_home, image):
    assert cm("vm", "boot", "--n", "2").code == 0
    path = cm_home / "kvm-test" / "local.xml"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a disk that filled up mid-write, say
    listed = cm("vm", "list", "--refresh", "-f", "json")
    assert listed.code == 0 and json.loads(listed.out) == []
    assert "was unreadable (the file ends inside" in listed.err and "kept it as local.xml.bad-" in listed.err


def test_states_and_volumes_come_back_from_a_saved_node(tmp_path):
    """What dump() writes, open_node() restores: run states (running, paused, shut off) and volumes."""
    from cm_plugins.kvm.nodeload import open_node
    from cm_plugins.kvm.testnode import dump

    conn = libvirt.open("test:///default")
    try:
        xml = "<domain type='test'><name>{}</name><memory>65536</memory><os><type>hvm</type></os></domain>"
        for name in ("up", "paused", "off"):
            conn.defineXML(xml.format(name))
        conn.lookupByName("up").create()
        conn.lookupByName("paused").create()
        conn.lookupByName("paused").suspend()
        pool = conn.storagePoolLookupByName("default-pool")
        pool.createXML("<volume><name>v1.qcow2</name><capacity>1048576</capacity>"
                       "<target><format type='qcow2'/></target></volume>", 0)
        states = {d.name(): d.state()[0] for d in conn.listAllDomains()}
        (tmp_path / "node.xml").write_text(dump(conn))
    finally:
        conn.close()
    again = open_node(tmp_path / "node.xml")
    try:
        assert {d.name(): d.state()[0] for d in again.listAllDomains()} == states
        assert states["paused"] == libvirt.VIR_DOMAIN_PAUSED and states["off"] == libvirt.VIR_DOMAIN_SHUTOFF
        volume = again.storagePoolLookupByName("default-pool").storageVolLookupByName("v1.qcow2")
        assert volume.info()[1] == 1048576
    finally:
        again.close()
