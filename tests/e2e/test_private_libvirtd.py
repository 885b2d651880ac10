"""End-to-end: private libvirtds in namespaces of their own (tests/infra/libvirtd_ns.py) run side by side,
cm reaches one over its unix socket, and stopping them leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.libvirtd import _pid_alive
from tests.infra.libvirtd_ns import PrivateLibvirtd, reap_stale

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


def test_what_a_killed_test_process_left_is_reaped_by_the_next_start():
    script = ("import time; from tests.infra.libvirtd_ns import PrivateLibvirtd; d = PrivateLibvirtd('guest').start(); "
              "print(d.netns, flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    try:
        netns = proc.stdout.readline().strip()
        assert netns.startswith("cmlv-guest-")
        left = [int(p) for p in subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                                                 text=True).stdout.split()]
        assert left   # libvirtd, virtlogd
    finally:
        proc.kill()   # as kill -9 would: no stop() runs
        proc.wait()
    assert netns in _netns_list()
    assert netns in reap_stale()
    assert netns not in _netns_list()
    assert not any(_pid_alive(pid) for pid in left)
    assert not (Path(tempfile.gettempdir()) / netns).exists()


def _netns_list() -> list[str]:
    return [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                       text=True).stdout.splitlines() if line.strip()]
