"""End-to-end: private libvirtds in namespaces of their own (tests/infra/libvirtd_ns.py) run side by side,
cm reaches one over its unix socket, and stopping them leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.libvirtd_ns import PrivateLibvirtd

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root for namespaces"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64")),
                       reason="e2e: libvirtd/qemu missing: run scripts/install-system-packages.sh"),
]
pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")


def _links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout


def _named(daemon: PrivateLibvirtd, comm: str) -> list[int]:
    return [pid for pid in daemon.namespace_pids() if Path(f"/proc/{pid}/comm").read_text().strip() == comm]


def test_two_private_daemons_side_by_side_and_nothing_left(cm_process):
    first, second = PrivateLibvirtd("guest"), PrivateLibvirtd("guest")
    try:
        first.start()
        second.start()
        assert first.netns != second.netns and first.host_uuid != second.host_uuid
        for daemon in (first, second):
            daemon.ensure_pool()
            daemon.ensure_network()   # same name and subnet in both: each lives in its own namespace
        bridges = [daemon.run(["ip", "-o", "-4", "addr", "show"]).stdout for daemon in (first, second)]
        assert all("192.168.150.1/24" in text for text in bridges)
        assert "192.168.150.1" not in subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                                                     text=True).stdout   # not in the machine's own namespace
        dnsmasq = [_named(daemon, "dnsmasq") for daemon in (first, second)]
        assert all(dnsmasq) and not set(dnsmasq[0]) & set(dnsmasq[1])   # a DHCP server each, in its namespace

        added = cm_process("cloud", "add", "lab", "--kind", "kvm", *first.cloud_settings())
        assert added.code == 0, added.err
        images = cm_process("image", "list", "--cloud", "lab", "--refresh", "-f", "json")
        assert images.code == 0 and json.loads(images.out) == [], images.err
        conn = first.connect()
        try:   # the capabilities of the private daemon, not of the system one
            assert f"<uuid>{first.host_uuid}</uuid>" in conn.getCapabilities()
            assert [p.name() for p in conn.listAllStoragePools()] == ["default"]
        finally:
            conn.close()
    finally:
        first.stop()
        second.stop()
    for daemon in (first, second):
        assert daemon.leftovers() == []
        assert not Path(daemon.base).exists()
        assert daemon.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "192.168.150" not in _links()
