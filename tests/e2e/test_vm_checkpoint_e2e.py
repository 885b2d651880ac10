"""End-to-end: `cm vm save|restore|migrate` on real libvirtd + QEMU (TCG).

A guest counts seconds on its console; after save and restore the count carries on (never
from 1 again); `cm vm migrate --to h2` moves it live to a second libvirtd (its own namespaces,
the same storage directory) where it keeps counting, and back offline when stopped.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, libvirtd)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "qemu-system-x86_64", "dnsmasq")),
                       reason="e2e: run scripts/install-system-packages.sh"),
]
libvirt = pytest.importorskip("libvirt")
pytest.importorskip("pycdlib")

COUNTER = "#!/bin/sh\n(i=0; while :; do i=$((i+1)); echo \"count=$i\"; sleep 1; done) > /dev/console 2>&1 &\n"


@pytest.fixture(scope="module")
def hosts():
    """Two private libvirtds sharing one storage directory, and the guest that counts."""
    from tests.e2e.elastic_lab import guest_files, two_hosts

    kernel, initrd = guest_files()
    with two_hosts("elastic-h") as (one, two):
        yield {"h1": one, "h2": two, "kernel": kernel, "initrd": initrd}


@pytest.fixture
def cloud(cm_home: Path, hosts, cm_process):
    path = cm_home / "cm.yaml"
    config = yaml.safe_load(path.read_text())
    settings = dict(w.split("=", 1) for w in hosts["h1"].cloud_settings())
    config["clouds"]["two"] = {"kind": "kvm", **settings, "cmdline": "console=ttyS0 panic=-1 quiet",
                               "migrate_storage": "shared",
                               "hosts": {"h1": {"uri": hosts["h1"].uri, "tunnelled": True},
                                         "h2": {"uri": hosts["h2"].uri, "tunnelled": True}},
                               "flavors": {"m256": {"vcpus": 1, "ram": 256, "disk": 1}}}
    path.write_text(yaml.safe_dump(config))
    added = cm_process("image", "add", "counter", f"kernel={hosts['kernel']},initrd={hosts['initrd']}",
                       "--cloud", "two")
    assert added.code == 0, added.err
    yield "two"
    for name in ("ck-a",):
        cm_process("vm", "delete", name, "--cloud", "two")
    cm_process("image", "delete", "counter", "--cloud", "two")


def ok(result) -> str:
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    return result.out


def counts(hosts, name: str) -> list[int]:
    """The numbers the guest printed so far (its console log, wherever it runs now)."""
    found: list[int] = []
    for host in ("h1", "h2"):
        for log in Path(hosts[host].console_dir).glob(f"cm-{name}-*.console.log"):
            found = [int(n) for n in re.findall(r"count=(\d+)", log.read_text(errors="replace"))] or found
    return found


def wait_count(hosts, name: str, above: int, timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = counts(hosts, name)
        if seen and seen[-1] > above:
            return seen
        time.sleep(0.5)
    pytest.fail(f"{name} did not count past {above} within {timeout:g} s (saw {counts(hosts, name)[-5:]})")


def test_save_restore_and_live_migration_keep_the_guest_counting(cm_process, cloud, hosts, tmp_path):
    script = tmp_path / "count.sh"
    script.write_text(COUNTER)
    ok(cm_process("vm", "boot", "--name", "ck-a", "--cloud", cloud, "--image", "counter", "--flavor", "m256",
                  "--user-data", str(script)))
    before = wait_count(hosts, "ck-a", 3)[-1]

    saved = ok(cm_process("vm", "save", "ck-a", "--cloud", cloud, "-f", "json"))
    assert '"saved"' in saved and '"stopped"' in saved
    conn = hosts["h1"].connect()
    dom = conn.lookupByName("ck-a")
    assert not dom.isActive() and dom.hasManagedSaveImage(0)
    at_save = counts(hosts, "ck-a")[-1]
    assert at_save >= before
    time.sleep(3)   # time passes while it is saved: the guest must not count it
    ok(cm_process("vm", "restore", "ck-a", "--cloud", cloud))
    after = wait_count(hosts, "ck-a", at_save + 1)
    # the console log starts afresh with the restored QEMU: its first number carries on from the save
    assert after[0] > at_save and 1 not in after, (at_save, after)
    conn.close()

    moved = ok(cm_process("vm", "migrate", "ck-a", "--to", "h2", "--cloud", cloud, "-f", "json"))
    assert "migrated to h2" in moved and '"running"' in moved
    assert "ck-a" not in [d.name() for d in hosts["h1"].connect().listAllDomains()]
    on_two = hosts["h2"].connect().lookupByName("ck-a")
    assert on_two.isActive()
    now = counts(hosts, "ck-a")[-1]
    there = wait_count(hosts, "ck-a", now + 2)   # still counting on the second host
    assert 1 not in there and there[0] > at_save
    shown = ok(cm_process("vm", "show", "ck-a", "--cloud", cloud, "--refresh", "-f", "yaml"))
    assert "host: h2" in shown

    ok(cm_process("vm", "stop", "ck-a", "--cloud", cloud, "--timeout", "60"))
    back = ok(cm_process("vm", "migrate", "ck-a", "--to", "h1", "--cloud", cloud))
    assert "migrated to h1" in back
    assert "ck-a" in [d.name() for d in hosts["h1"].connect().listAllDomains()]
    refused = cm_process("vm", "migrate", "ck-a", "--to", "h1", "--cloud", cloud)
    assert refused.code == 1 and "already on host 'h1'" in refused.out
