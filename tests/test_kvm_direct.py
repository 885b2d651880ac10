"""The kernel-side reads of the kvm monitor (cm_plugins/kvm/direct.py) on real processes of this machine.

A process carrying QEMU's arguments stands in for QEMU where only its command line
matters (finding it by UUID, judging its disks); the counters themselves are
compared with libvirt's on real guests in tests/e2e/test_monitor_e2e.py.
"""

from __future__ import annotations

import json
import os
import shutil
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


def test_only_raw_file_disks_give_their_bytes_from_the_kernel(spawn):
    raw = spawn("-blockdev", json.dumps({"driver": "file", "filename": "/x.img", "node-name": "s"}),
                "-blockdev", json.dumps({"node-name": "f", "driver": "raw", "file": "s"}))
    qcow2 = spawn("-blockdev", json.dumps({"driver": "file", "filename": "/x.img", "node-name": "s"}),
                  "-blockdev", json.dumps({"node-name": "f", "driver": "qcow2", "file": "s"}))
    assert direct.raw_disks_only(raw) is True
    assert direct.raw_disks_only(qcow2) is False  # the workers read and write its metadata too


def _libvirt(rd: int, wr: int, wr_reqs: int, ns: int) -> dict:
    return {"block.count": 1, "block.0.rd.bytes": rd, "block.0.wr.bytes": wr, "block.0.wr.reqs": wr_reqs,
            "block.0.rd.times": ns}


def test_busy_disk_counters_are_carried_from_the_workers_between_libvirts_reads():
    """Figures as measured on a guest writing 4-KiB requests: the workers' rchar is 512 over libvirt's read
    bytes (QEMU's own read at start), their wchar 8 bytes over per wake-up (counted in syscw)."""
    from cm_plugins.kvm.diskcarry import DiskCarry

    def workers(rd: int, wr: int, reqs: int, wakes: int) -> tuple[int, int, int, int]:
        return rd + 512, wr + 8 * wakes, 0, reqs + wakes

    carry = DiskCarry()
    carry.anchor_at(_libvirt(0, 0, 0, 0), workers(0, 0, 0, 0), workers(0, 0, 0, 0), 100.0)
    assert not carry.ready, "a rate needs an interval"
    carry.anchor_at(_libvirt(65536, 65536, 16, 1_000_000), workers(65536, 65536, 16, 7),
                    workers(65536, 65536, 16, 7), 101.0)
    assert carry.ready and (carry.bytes_per_write, carry.busy_rate) == (4096, 1_000_000)
    now = carry.estimate(workers(65536 + 8192, 65536 + 40960, 26, 12), 103.0)  # 2 reads and 10 writes later
    assert now == (65536 + 8192, 65536 + 40960, 3_000_000)
    shown = carry.show(now)
    assert shown["block.0.rd.bytes"] == 73728 and shown["block.0.wr.bytes"] == 106496
    # libvirt read during I/O: the offsets stay bracketed, and what was shown never goes back
    carry.anchor_at(_libvirt(73728, 106496, 26, 2_500_000), workers(73728, 106496, 26, 12),
                    workers(77824, 106496, 26, 12), 104.0)
    assert carry.busy_rate == 500_000
    assert carry.show((73728, 106496, 2_500_000))["block.0.rd.times"] == 3_000_000
    assert carry.estimate(workers(77824, 106496, 26, 20), 106.0) == (77824, 106496, 3_500_000)  # pinned offsets


def test_a_disk_plugged_in_later_stops_the_carrying():
    from cm_plugins.kvm.diskcarry import DiskCarry

    carry = DiskCarry()
    carry.anchor_at(_libvirt(0, 0, 0, 0), (512, 0, 1, 0), (512, 0, 1, 0), 1.0)
    with pytest.raises(ValueError, match="disks changed"):
        carry.anchor_at({**_libvirt(0, 0, 0, 0), "block.count": 2}, (512, 0, 1, 0), (512, 0, 1, 0), 2.0)


WORKERS = r"""
import ctypes, os, sys, threading
libc = ctypes.CDLL(None)
def named(name):
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: the thread's comm, as QEMU names its threads
def vcpu():
    named("CPU 0/TCG"); threading.Event().wait()
def worker(size, done):
    named("worker")
    fd = os.open(sys.argv[1], os.O_RDONLY); os.pread(fd, size, 0); os.close(fd)
    print("read", flush=True); done.wait()
threading.Thread(target=vcpu, daemon=True).start()
for line in sys.stdin:
    word, size = line.split()
    if word == "start":
        done = threading.Event(); t = threading.Thread(target=worker, args=(int(size), done)); t.start()
    else:
        done.set(); t.join(); print("exited", flush=True)
"""


def test_the_workers_io_is_counted_after_they_exit(tmp_path):
    """A worker exits 10 s after its last request: what it read still counts, from its last reading."""
    data = tmp_path / "disk.img"
    data.write_bytes(bytes(65536))
    proc = subprocess.Popen([sys.executable, "-c", WORKERS, str(data)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        def say(line: str, answer: str) -> None:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == answer

        qemu = direct.Qemu(proc.pid, None, [], True)
        say("start 4096", "read")
        first = qemu.disk_counters()
        say("stop 0", "exited")
        say("start 8192", "read")
        second = qemu.disk_counters()
        assert first[0] >= 4096 and first[2] >= 1
        assert second[0] - first[0] == 8192 and second[2] - first[2] == 1, (first, second)
    finally:
        proc.kill()
        proc.wait()


THREADS = r"""
import ctypes, sys, threading
libc = ctypes.CDLL(None)
def named(name):
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
    ready.release(); threading.Event().wait()
ready = threading.Semaphore(0)
for name in ("CPU 0/TCG", "worker"):
    threading.Thread(target=named, args=(name,), daemon=True).start()
ready.acquire(); ready.acquire()
print("ready", flush=True)
sys.stdin.read()
"""

READER = r"""
import json, sys
from cm_plugins.kvm.direct import Qemu
qemu = Qemu.find(int(sys.argv[1]), sys.argv[2])
record = qemu.read()
print(json.dumps({"cgroup": str(qemu.cgroup), "file_disks": qemu.file_disks, "raw_disks": qemu.raw_disks,
                  "record": record}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_a_qemu_of_another_user_is_read_with_its_disks_left_to_libvirt():
    """Under qemu:///system QEMU runs as its own user: its threads' io files are that user's only.

    The reader runs as `nobody` against a root process with QEMU's thread names: it still reads
    CPU, vCPU and NIC counters from the kernel, and leaves the disks to libvirt.
    """
    xml = "<domain><devices><interface type='ethernet'><target dev='lo'/></interface></devices></domain>"
    proc = subprocess.Popen([sys.executable, "-c", THREADS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        own = direct.Qemu.find(proc.pid, xml)
        assert own is not None and own.file_disks, "QEMU of this user: its disks are read from the workers"
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
               "PYTHONDONTWRITEBYTECODE": "1"}
        reader = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 sys.executable, "-c", READER, str(proc.pid), xml],
                                capture_output=True, text=True, env=env, timeout=60, cwd="/")
        assert reader.returncode == 0, reader.stderr
        seen = json.loads(reader.stdout)
        assert seen["file_disks"] is False and seen["raw_disks"] is False
        record = seen["record"]
        assert record["vcpu.current"] == 1 and record["vcpu.0.time"] >= 0 and record["vcpu.0.delay"] >= 0
        assert record["net.count"] == 1 and record["net.0.rx.bytes"] >= 0 and record["balloon.rss"] > 0
    finally:
        proc.kill()
        proc.wait()
