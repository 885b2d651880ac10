"""Counters of this machine's QEMU guests read straight from the kernel, sparing libvirtd the stats calls.

Answering ``getAllDomainStats`` every second costs libvirtd about 1.5 ms of CPU
per guest (QEMU's monitor is asked for balloon and block figures; measured on
TCG guests), more than the whole collector.  The kernel already holds most of
them, for the QEMU process libvirt started:

- CPU: ``cpu.stat`` of the domain's cgroup (what libvirt reads), else the process's ticks;
- per vCPU: ``/proc/PID/task/TID/stat`` and ``schedstat`` of the ``CPU N/...`` threads (libvirt's
  ``vcpu.N.time`` and ``.delay``, same resolution);
- NICs: the tap devices' counters in ``/proc/PID/net/dev`` (QEMU's network namespace), guest's view;
- memory: the RSS from ``/proc/PID/statm``.

Balloon statistics and block counters (bytes and time in flight) only QEMU
knows: the caller asks libvirt for those less often (see :mod:`cm_plugins.kvm.stats`).
The disks' activity is seen here, though: QEMU's thread-pool ``worker`` threads
do the file I/O of a file-backed disk, so their read/write counters move exactly
when the guest's disks do (and, for raw disks, give their bytes:
:mod:`cm_plugins.kvm.diskcarry`).

A thread's ``io`` file is readable only by QEMU's own user (and root): under
``qemu:///system`` QEMU runs as another user, so its disks are then read
through libvirt; any other counter this user cannot read leaves the whole
domain to libvirt (both decided once, when QEMU is found).
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK_NS = 10 ** 9 // os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
VCPU_THREAD = re.compile(r"CPU (\d+)/")
TAP_TYPES = ("network", "bridge", "ethernet")  # NICs libvirt reads from the host side of a tap
FILE_DRIVERS = ("file", "host_device", "host_cdrom")  # blockdev protocols QEMU's thread pool serves
PROTOCOLS = FILE_DRIVERS + ("nbd", "rbd", "iscsi", "gluster", "nfs", "ssh", "http", "https", "ftp", "ftps",
                            "vxhs", "nvme", "libblkio", "virtio-blk-vhost-user")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _readable(path: str) -> bool:
    """Whether this user may read a /proc or cgroup file (other errors, as QEMU gone, are raised)."""
    try:
        _read(path)
    except PermissionError:
        return False
    return True


def _stat_fields(path: str) -> list[str]:
    """The fields of a /proc stat file after the command name (field 3 onwards)."""
    return _read(path).rsplit(")", 1)[1].split()


IO_FIELDS = ("rchar", "wchar", "syscr", "syscw")


def _io(path: str) -> tuple[int, ...]:
    """(rchar, wchar, syscr, syscw) of a /proc io file: bytes through and calls of read and write."""
    values = dict(line.split(": ") for line in _read(path).splitlines())
    return tuple(int(values[f]) for f in IO_FIELDS)


def find_pids(uuids: set[str]) -> dict[str, int]:
    """The QEMU pid of each domain UUID, by its ``-uuid`` argument (0: two processes carry it, as while a
    domain migrates between two daemons of this machine)."""
    wanted = {f"-uuid\0{u}\0".encode(): u for u in uuids}
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"-uuid\0" not in cmdline:
            continue
        for key, uuid in wanted.items():
            if key in cmdline:
                found.setdefault(uuid, []).append(int(entry))
    return {u: pids[0] if len(pids) == 1 else 0 for u, pids in found.items()}


def domain_cgroup(pid: int) -> Path | None:
    """The domain's own cgroup (v2) that libvirt made: the parent of QEMU's ``emulator`` group."""
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        if line.startswith("0::") and line.rstrip().endswith("/emulator"):
            relative = line[3:].strip().rsplit("/", 1)[0].lstrip("/")
            for root in CGROUP_ROOTS:
                if (root / relative / "cpu.stat").exists():
                    return root / relative
    return None


def file_disks_only(pid: int) -> bool:
    """Whether every disk of QEMU's command line is a file its thread pool reads (no native AIO, no network)."""
    args = _read(f"/proc/{pid}/cmdline").split("\0")
    for flag, value in zip(args, args[1:]):
        if flag != "-blockdev" or not value.startswith("{"):
            continue
        node = json.loads(value)
        if node.get("driver") in PROTOCOLS and (node["driver"] not in FILE_DRIVERS
                                                  or node.get("aio") in ("native", "io_uring")):
            return False
    return "-drive\0" not in _read(f"/proc/{pid}/cmdline")  # the old syntax: not worth parsing, ask libvirt


def raw_disks_only(pid: int) -> bool:
    """Whether every disk is a raw file (no image format whose metadata the workers read and write too)."""
    args = _read(f"/proc/{pid}/cmdline").split("\0")
    nodes = [json.loads(value) for flag, value in zip(args, args[1:]) if flag == "-blockdev" and value.startswith("{")]
    return file_disks_only(pid) and all(node.get("driver") in FILE_DRIVERS + ("raw",) for node in nodes)


def taps(xml: str) -> list[str] | None:
    """The tap devices of the domain's NICs (live XML), None if a NIC is of a kind read another way."""
    found = []
    for nic in ET.fromstring(xml).findall("devices/interface"):
        target = nic.find("target")
        if nic.get("type") not in TAP_TYPES or target is None or not target.get("dev"):
            return None
        found.append(target.get("dev") or "")
    return found


@dataclass
class Qemu:
    """One running domain's QEMU process, found once per domain id (see :meth:`_threads`)."""

    pid: int
    cgroup: Path | None
    taps: list[str]
    file_disks: bool
    raw_disks: bool = False  # their bytes are the workers' (see diskcarry)
    vcpus: dict[int, int] = field(default_factory=dict)  # vCPU index -> thread id
    tasks: frozenset[str] = frozenset()
    names: dict[str, str] = field(default_factory=dict)  # thread id -> name
    disk_io: tuple[int, ...] = ()  # the workers' (rchar, wchar, syscr, syscw) at the last read
    workers: dict[str, tuple[int, ...]] = field(default_factory=dict)  # live worker's thread id -> its last io
    gone: tuple[int, ...] = (0, 0, 0, 0)  # the io of the workers that exited since QEMU was found
    disk_moved: bool = True  # whether the disks did I/O between the last two reads (True where unseen)

    @classmethod
    def find(cls, pid: int, xml: str) -> Qemu | None:
        """QEMU as this user can read it; None if a NIC is not a tap (PermissionError: libvirt reads it all)."""
        nics = taps(xml)
        if nics is None:
            return None
        cgroup = domain_cgroup(pid)
        if cgroup is not None and not _readable(str(cgroup / "cpu.stat")):
            cgroup = None  # the process's own ticks instead
        for counters in ("stat", "statm", "schedstat", *(["net/dev"] if nics else [])):
            _read(f"/proc/{pid}/{counters}")  # the threads' files have the same owner and modes
        # Checked on the main thread: the workers come and go, and their io files are guarded alike.
        files = file_disks_only(pid) and _readable(f"/proc/{pid}/task/{pid}/io")
        return cls(pid, cgroup, nics, files, files and raw_disks_only(pid))

    def _threads(self) -> dict[str, str]:
        """thread id -> name, re-read only when the set of threads changed (vCPUs come and go with it).

        The cache is keyed by the domain's id, which a restarted domain changes; a pid that
        another program took meanwhile has no vCPU threads and raises OSError.
        """
        tasks = frozenset(os.listdir(f"/proc/{self.pid}/task"))
        if tasks != self.tasks:
            self.tasks = tasks
            self.names = {t: _read(f"/proc/{self.pid}/task/{t}/comm").strip() for t in tasks}
            self.vcpus = {int(m.group(1)): int(t) for t, n in self.names.items() if (m := VCPU_THREAD.match(n))}
            if not self.vcpus:
                raise OSError(f"process {self.pid} has no vCPU threads: not QEMU, or no longer")
        return self.names

    def read(self) -> dict[str, Any]:
        """This round's counters, keyed as in a ``getAllDomainStats`` record (raises OSError if QEMU is gone)."""
        names = self._threads()
        pid = self.pid
        if self.cgroup is not None:
            usage = next(line for line in _read(str(self.cgroup / "cpu.stat")).splitlines()
                         if line.startswith("usage_usec"))
            cpu = int(usage.split()[1]) * 1000
        else:
            cpu = sum(int(f) for f in _stat_fields(f"/proc/{pid}/stat")[11:13]) * TICK_NS
        record: dict[str, Any] = {"cpu.time": cpu, "vcpu.current": len(self.vcpus), "vcpu.maximum": len(self.vcpus),
                                  "balloon.rss": int(_read(f"/proc/{pid}/statm").split()[1]) * PAGE_KIB}
        for index, tid in sorted(self.vcpus.items()):
            ticks = _stat_fields(f"/proc/{pid}/task/{tid}/stat")[11:13]
            record[f"vcpu.{index}.state"] = 1
            record[f"vcpu.{index}.time"] = (int(ticks[0]) + int(ticks[1])) * TICK_NS
            record[f"vcpu.{index}.delay"] = int(_read(f"/proc/{pid}/task/{tid}/schedstat").split()[1])
        record.update(self._nics())
        self._disk_activity(names)
        return record

    def _disk_activity(self, names: dict[str, str]) -> None:
        """Whether the disks moved: the workers' counters changed.

        A worker lives on 10 s after its last request, so with none alive the disks stood still.
        """
        if not self.file_disks:
            return
        if "worker" not in names.values():
            self.disk_moved = False
            return
        now = self.disk_counters(names)
        self.disk_moved, self.disk_io = now != self.disk_io, now

    def disk_counters(self, names: dict[str, str] | None = None) -> tuple[int, ...]:
        """The workers' (rchar, wchar, syscr, syscw) since QEMU was found: the live ones' and the exited ones'.

        Only the workers' own files are read (the process's total less every other thread's
        cost twice as many reads).  A worker exits 10 s after its last request, so its last
        reading, a second or so old, is its final count.
        """
        names = names if names is not None else self._threads()
        live = {}
        for tid in (t for t, n in names.items() if n == "worker"):
            try:
                live[tid] = _io(f"/proc/{self.pid}/task/{tid}/io")
            except FileNotFoundError:  # exited since the thread list was read
                if tid in self.workers:
                    live[tid] = self.workers[tid]
        for tid, last in self.workers.items():
            if tid not in live:
                self.gone = tuple(a + b for a, b in zip(self.gone, last))
        self.workers = live
        return tuple(sum(column) for column in zip(self.gone, *live.values()))

    def _nics(self) -> dict[str, Any]:
        """net.* of the taps, as the guest sees them (the tap's transmit is the guest's receive)."""
        if not self.taps:
            return {"net.count": 0}
        rows = {}
        for line in _read(f"/proc/{self.pid}/net/dev").splitlines()[2:]:
            name, _, counters = line.partition(":")
            rows[name.strip()] = counters.split()
        record: dict[str, Any] = {"net.count": len(self.taps)}
        for i, tap in enumerate(self.taps):
            counters = rows[tap]  # KeyError: the tap went away, libvirt says what became of it
            record[f"net.{i}.rx.bytes"], record[f"net.{i}.tx.bytes"] = int(counters[8]), int(counters[0])
        return record
