"""A big boot writes finished VMs to the mirror in timed batches (at most 2 s apart), not one write per few VMs.

What a batch holds is written at once on Ctrl-C; a kill -9 may lose the last
batch from the mirror, never from the cloud, and a refresh brings it back.
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

from tests.test_kvm import image  # noqa: E402,F401 - the fixture: the local cloud with its default image
from tests.test_testnode_journal import provider  # noqa: E402


def _boot_in_background(cm_home: Path, count: int) -> subprocess.Popen[str]:
    """`cm vm boot --n COUNT` as a separate process, once the hypervisor has made a few of its VMs."""
    proc = subprocess.Popen([sys.executable, "-m", "cm.main", "vm", "boot", "--n", str(count), "-f", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    journal = cm_home / "kvm-test" / "local.xml.journal"
    deadline = time.monotonic() + 240  # generous: a loaded machine starts Python slowly
    while not (journal.exists() and journal.stat().st_size > 20_000):
        assert time.monotonic() < deadline and proc.poll() is None, "the boot ended before it could be stopped"
        time.sleep(0.01)
    return proc


def _in_cloud(cm_home: Path) -> set[str]:
    """The VMs the hypervisor has (its snapshot and journal, read as cm reads them)."""
    hv = provider(cm_home)
    try:
        return {vm.name for vm in hv.list_vms()}
    finally:
        hv.close()


def _in_mirror(cm) -> set[str]:
    listed = cm("vm", "list", "-f", "json")
    assert listed.code == 0, listed.err
    return {vm["name"] for vm in json.loads(listed.out)}


def test_ctrl_c_during_a_big_boot_writes_every_vm_made_to_the_mirror_and_group(cm, cm_home, image):
    proc = _boot_in_background(cm_home, 600)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    made = _in_cloud(cm_home)
    assert 0 < len(made) < 600
    assert _in_mirror(cm) == made  # without a refresh
    members = json.loads(cm("group", "list", "default", "-f", "json").out)[0]["members"]
    assert {f"local:{n}" for n in made} <= set(members)
    assert {r["name"] for r in json.loads(out) if r["result"] == "booted"} == made


def test_a_kill_9_during_a_big_boot_loses_nothing_a_refresh_does_not_find(cm, cm_home, image):
    proc = _boot_in_background(cm_home, 600)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    made = _in_cloud(cm_home)
    assert _in_mirror(cm) <= made  # the mirror file is whole; it may lack the last batch
    refreshed = cm("vm", "list", "--refresh", "-f", "json")
    assert refreshed.code == 0 and "unreadable" not in refreshed.err, refreshed.err
    assert {vm["name"] for vm in json.loads(refreshed.out)} == made == _in_mirror(cm)
