"""The kernel-side reads of the kvm monitor (cm_plugins/kvm/direct.py) on real processes of this machine.

A process carrying QEMU's arguments stands in for QEMU where only its command line
matters (finding it by UUID, judging its disks); the counters themselves are
compared with libvirt's on real guests in tests/e2e/test_monitor_e2e.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("libvirt")
from cm_plugins.kvm import direct  # noqa: E402


@pytest.fixture
def spawn():
    """Start processes with the given extra arguments (a sleeping python); stop them after."""
    procs = []

    def start(*args: str) -> int:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
        procs.append(proc)
        deadline = time.monotonic() + 10
        while b"time.sleep(60)" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # exec'd at last
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_domain_is_found_by_its_uuid_and_a_shared_one_is_not_guessed(spawn):
    one, two = str(uuid.uuid4()), str(uuid.uuid4())
    pid = spawn("-name", "guest=a,debug-threads=on", "-uuid", one)
    spawn("-uuid", two)
    spawn("-uuid", two)  # as while a domain migrates between two daemons of this machine
    found = direct.find_pids({one, two, str(uuid.uuid4())})
    assert found == {one: pid, two: 0}


def test_disks_are_judged_by_qemus_command_line(spawn):
    plain = spawn("-blockdev", json.dumps({"driver": "file", "filename": "/x.img", "node-name": "s"}),
                  "-blockdev", json.dumps({"node-name": "f", "driver": "qcow2", "file": "s"}))
    native = spawn("-blockdev", json.dumps({"driver": "file", "filename": "/x.img", "aio": "native"}))
    network = spawn("-blockdev", json.dumps({"driver": "rbd", "pool": "p", "image": "i"}))
    assert direct.file_disks_only(plain) is True
    assert direct.file_disks_only(native) is False
    assert direct.file_disks_only(network) is False


def test_nics_are_read_from_taps_only():
    tap = "<domain><devices><interface type='network'><target dev='vnet3'/></interface></devices></domain>"
    user = "<domain><devices><interface type='user'/></devices></domain>"
    assert direct.taps(tap) == ["vnet3"]
    assert direct.taps(user) is None
    assert direct.taps("<domain><devices/></domain>") == []


def test_a_process_without_vcpu_threads_is_not_read_as_qemu(spawn):
    qemu = direct.Qemu(spawn(), None, [], True)
    with pytest.raises(OSError, match="no vCPU threads"):
        qemu.read()
