"""Monitoring verbs of the kvm provider: libvirt's domain statistics, the host's, live vCPU and balloon changes.

``getAllDomainStats`` answers for every running domain in one call (about 5 ms
per guest under TCG), but costs libvirtd about 1.5 ms of CPU per guest.  So on a
hypervisor of this machine (``stats: auto``, the default) CPU, vCPU, NIC and RSS
counters are read from the kernel (:mod:`cm_plugins.kvm.direct`); libvirt is
asked each round only which domains run, for the balloon's statistics every
``MEMORY_EVERY`` seconds (carried in between), and for block counters while a
disk moves (and at least every ``BLOCK_EVERY`` seconds).  Busy raw disks are
asked for only every ``BUSY_EVERY`` seconds: in between their bytes come from
QEMU's I/O threads and their time in flight is carried at the last interval's
rate per second (:mod:`cm_plugins.kvm.diskcarry`).  A QEMU of another user
(``qemu:///system``) has its disks read through libvirt each round, as its
threads' I/O counters are its own.  A domain whose QEMU cannot be read so is
read wholly through libvirt, as are remote hosts and every host of a cloud
with ``stats: libvirt``.  libvirt's test hypervisor answers
``getAllDomainStats`` with ``state.*`` only, so there the per-domain calls fill
in (their numbers are made up).  A cloud that lists ``hosts:`` has each of them
sampled (named as listed there), and a VM migrated to another of them is read
where it runs.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

import libvirt

from cm.errors import ConfigError, Conflict, ProviderError
from cm.provider import VMStats
from cm_plugins.kvm import checkpoint
from cm_plugins.kvm.connection import is_local_uri
from cm_plugins.kvm.direct import Qemu, find_pids
from cm_plugins.kvm.diskcarry import DiskCarry

STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
         | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
RUNNING = libvirt.VIR_DOMAIN_RUNNING
ACTIVE = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
BALLOON, BLOCK = libvirt.VIR_DOMAIN_STATS_BALLOON, libvirt.VIR_DOMAIN_STATS_BLOCK
INTERFACE = libvirt.VIR_DOMAIN_STATS_INTERFACE
MEMORY_EVERY = 5.0  # seconds between balloon reads of a directly read domain (the guest's view changes slowly)
BLOCK_EVERY = 30.0  # seconds between block reads of a domain whose disks stood still (and NIC count checks)
BUSY_EVERY = 5.0  # seconds between block reads of a domain whose raw disks keep moving (bytes from the kernel)
SLACK = 0.25  # a round a little early still counts as due
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE


def _sum(record: dict[str, Any], kind: str, fields: tuple[str, ...]) -> int:
    """Sum of ``kind.N.field`` over the devices of one kind (block, net)."""
    return sum(int(record.get(f"{kind}.{i}.{f}", 0)) for i in range(int(record.get(f"{kind}.count", 0)))
               for f in fields)


def _memory(record: dict[str, Any]) -> tuple[int, int, int]:
    """(total, used, max) KiB: the guest's own view through the balloon where it reports, else QEMU's RSS."""
    total = int(record.get("balloon.current", 0))
    maximum = int(record.get("balloon.maximum", total))
    if "balloon.available" in record and ("balloon.usable" in record or "balloon.unused" in record):
        free = int(record.get("balloon.usable", record.get("balloon.unused", 0)))
        return int(record["balloon.available"]), max(0, int(record["balloon.available"]) - free), maximum
    return total, min(total, int(record.get("balloon.rss", 0))) if total else int(record.get("balloon.rss", 0)), maximum


def from_record(name: str, record: dict[str, Any], when: float, host: str) -> VMStats:
    """A VMStats from one domain's ``getAllDomainStats`` record."""
    vcpus = int(record.get("vcpu.current", 1))
    total, used, maximum = _memory(record)
    return VMStats(
        name=name, time=when, vcpus=vcpus, cpu_ns=int(record.get("cpu.time", 0)),
        vcpu_ns=[int(record.get(f"vcpu.{i}.time", 0)) for i in range(int(record.get("vcpu.maximum", vcpus)))
                 if record.get(f"vcpu.{i}.state", 1) == 1][:vcpus],
        steal_ns=sum(int(record.get(f"vcpu.{i}.delay", record.get(f"vcpu.{i}.wait", 0)))
                     for i in range(int(record.get("vcpu.maximum", vcpus)))),
        mem_total_kib=total, mem_used_kib=used, mem_max_kib=maximum,
        disk_rd_bytes=_sum(record, "block", ("rd.bytes",)), disk_wr_bytes=_sum(record, "block", ("wr.bytes",)),
        disk_time_ns=_sum(record, "block", ("rd.times", "wr.times", "fl.times")),
        net_rx_bytes=_sum(record, "net", ("rx.bytes",)), net_tx_bytes=_sum(record, "net", ("tx.bytes",)), host=host,
        extra={"balloon_kib": int(record.get("balloon.current", 0))})


def _devices(dom: libvirt.virDomain) -> tuple[list[str], list[str]]:
    """(disk targets, NIC targets) from the domain's XML."""
    root = ET.fromstring(dom.XMLDesc())
    return ([t.get("dev") or "" for t in root.findall("devices/disk/target") if t.get("dev")],
            [t.get("dev") or "" for t in root.findall("devices/interface/target") if t.get("dev")])


def _by_calls(dom: libvirt.virDomain, when: float, host: str, devices: dict[str, Any]) -> VMStats:
    """The test hypervisor's made-up numbers through the per-domain calls.

    ``devices`` caches each domain's disk and NIC names by UUID: parsing its XML every
    round was most of the collector's time on this driver.
    """
    _state, maximum, memory, vcpus, cpu = dom.info()
    record: dict[str, Any] = {"cpu.time": cpu, "vcpu.current": vcpus, "vcpu.maximum": vcpus,
                              "balloon.current": memory, "balloon.maximum": maximum}
    for i, (_n, _s, ns, _cpu) in enumerate(dom.vcpus()[0]):
        record[f"vcpu.{i}.time"] = ns
    memory_stats = dom.memoryStats()
    record.update({f"balloon.{k}": v for k, v in memory_stats.items() if k in ("available", "usable", "unused", "rss")})
    key = dom.UUIDString()
    if key not in devices:
        devices[key] = _devices(dom)
    disks, nics = devices[key]
    for i, dev in enumerate(disks):
        try:
            _rd_req, rd, _wr_req, wr, _err = dom.blockStats(dev)
        except libvirt.libvirtError:
            continue  # the test driver knows only some of its disks
        record.update({"block.count": i + 1, f"block.{i}.rd.bytes": rd, f"block.{i}.wr.bytes": wr})
    for i, dev in enumerate(nics):
        stats = dom.interfaceStats(dev)
        record.update({"net.count": i + 1, f"net.{i}.rx.bytes": stats[0], f"net.{i}.tx.bytes": stats[4]})
    return from_record(dom.name(), record, when, host)


def read_domains(conn: libvirt.virConnect, names: set[str], host: str,
                 devices: dict[str, Any] | None = None) -> list[VMStats]:
    """Counters of the running domains among ``names`` on ``host`` (``devices``: the test hypervisor's cache)."""
    when = time.time()
    found = []
    for dom, record in conn.getAllDomainStats(STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE):
        name = dom.name()
        if name not in names or record.get("state.state") != RUNNING:
            continue
        found.append(_by_calls(dom, when, host, devices) if devices is not None and "cpu.time" not in record
                     else from_record(name, record, when, host))
    return found


class LocalDomains:
    """The domains of a hypervisor on this machine, read from the kernel where it can, and what that remembers."""

    def __init__(self) -> None:
        self.qemus: dict[tuple[str, int], Qemu | None] = {}  # (UUID, domain id) -> its QEMU, None: libvirt only
        self.kept: dict[tuple[str, int], dict[str, Any]] = {}  # libvirt's last balloon.* and block.* figures
        self.asked: dict[tuple[tuple[str, int], int], float] = {}  # (domain, stats) -> when libvirt was asked
        self.moving: set[tuple[str, int]] = set()  # domains whose disks moved in the last round
        self.carries: dict[tuple[str, int], DiskCarry] = {}  # raw-disk domains: block counters between reads

    def read(self, conn: libvirt.virConnect, names: set[str], host: str) -> list[VMStats]:
        """Counters of the running domains among ``names``, as :func:`read_domains` gives them."""
        when = time.time()
        running = [dom for dom, record in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, ACTIVE)
                   if dom.name() in names and record.get("state.state") == RUNNING]
        keys = {(dom.UUIDString(), dom.ID()): dom for dom in running}
        self._forget(set(self.qemus) - set(keys))
        self._find([(key, dom) for key, dom in keys.items() if key not in self.qemus])
        direct: dict[tuple[str, int], dict[str, Any]] = {}
        asks: dict[int, list[libvirt.virDomain]] = {}
        moving: set[tuple[str, int]] = set()
        for key, dom in keys.items():
            flags = self._direct(key, direct, moving)
            if flags:
                asks.setdefault(flags, []).append(dom)
        self.moving = moving
        found = []
        for flags, doms in asks.items():
            found += self._ask(conn, doms, flags, direct, when, host)
        return found + [self._shown(key, keys[key].name(), record, when, host) for key, record in direct.items()]

    def _forget(self, gone: set[tuple[str, int]]) -> None:
        """Drop what is remembered of domains that stopped (a restarted one has a new id)."""
        for key in gone:
            self.qemus.pop(key)
            self.kept.pop(key, None)
            self.carries.pop(key, None)
            for stats in (BALLOON, BLOCK, INTERFACE):
                self.asked.pop((key, stats), None)

    def _ask(self, conn: libvirt.virConnect, doms: list[libvirt.virDomain], flags: int,
             direct: dict[tuple[str, int], dict[str, Any]], when: float, host: str) -> list[VMStats]:
        """libvirt's ``flags`` statistics of ``doms``: the samples of those not read directly, the rest kept."""
        try:
            answers = conn.domainListGetStats(doms, flags)
        except libvirt.libvirtError:
            return []  # a domain stopped meanwhile: the others come back next round
        found = []
        for dom, record in answers:
            key = (dom.UUIDString(), dom.ID())
            if key in direct:
                self._keep(key, flags, record)
            elif record.get("state.state") == RUNNING:
                found.append(from_record(dom.name(), record, when, host))
        return found

    def _keep(self, key: tuple[str, int], flags: int, record: dict[str, Any]) -> None:
        """Keep libvirt's balloon and block figures of a directly read domain (anchoring its raw disks' carry)."""
        qemu = self.qemus.get(key)
        if flags & INTERFACE and qemu is not None and record.get("net.count", 0) != len(qemu.taps):
            self.qemus.pop(key)  # a NIC came or went: its taps are read from the XML again next round
        kept = self.kept.setdefault(key, {})
        if flags & BLOCK:  # the disk list may have changed: drop the old figures
            for old in [k for k in kept if k.startswith("block.")]:
                kept.pop(old)
        kept.update({k: v for k, v in record.items() if k.startswith(("balloon.", "block."))})
        carry = self.carries.get(key)
        if flags & BLOCK and carry is not None and qemu is not None and qemu.disk_io:
            try:
                carry.anchor_at(record, qemu.disk_io, qemu.disk_counters(), time.monotonic())
            except ValueError:  # a disk came or went: libvirt reads them from now on
                qemu.raw_disks = False
                self.carries.pop(key)
            except OSError:
                self.carries.pop(key)  # QEMU is gone: found anew, or read by libvirt, next round

    def _shown(self, key: tuple[str, int], name: str, record: dict[str, Any], when: float, host: str) -> VMStats:
        """A directly read domain's sample: the kernel's counters over libvirt's kept ones, raw disks carried."""
        estimate = record.pop("estimate", None)
        merged = {**self.kept.get(key, {}), **record}
        carry = self.carries.get(key)
        if carry is not None:  # libvirt's sums or the kernel's estimate, never below what was shown
            figures = estimate or (_sum(merged, "block", ("rd.bytes",)), _sum(merged, "block", ("wr.bytes",)),
                                   _sum(merged, "block", ("rd.times", "wr.times", "fl.times")))
            merged = {k: v for k, v in merged.items() if not k.startswith("block.")}
            merged.update(carry.show(figures))
        return from_record(name, merged, when, host)

    def _find(self, new: list[tuple[tuple[str, int], libvirt.virDomain]]) -> None:
        """Find the QEMU of each newly seen domain (one pass over /proc for them all)."""
        if not new:
            return
        pids = find_pids({uuid for (uuid, _id), _dom in new})
        for key, dom in new:
            if pids.get(key[0]) == 0:
                continue  # which is it? libvirt answers this round, and it is looked for again next round
            try:
                self.qemus[key] = Qemu.find(pids[key[0]], dom.XMLDesc()) if key[0] in pids else None
            except (OSError, ValueError, IndexError, libvirt.libvirtError):
                self.qemus[key] = None

    def _direct(self, key: tuple[str, int], direct: dict[tuple[str, int], dict[str, Any]],
                moving: set[tuple[str, int]]) -> int:
        """Read one domain from the kernel into ``direct`` (into ``moving`` if its disks did I/O);
        return the stats libvirt must still give."""
        qemu = self.qemus.get(key)
        if qemu is None:
            return STATS
        try:
            record = qemu.read()
        except (OSError, KeyError, ValueError, IndexError, StopIteration):
            self.qemus.pop(key)  # looked for again next round; libvirt answers this one
            return STATS
        direct[key] = record
        flags = BALLOON if self._due(key, BALLOON, MEMORY_EVERY) else 0
        if qemu.raw_disks and key not in self.carries:
            self.carries[key] = DiskCarry()
        carry = self.carries.get(key)
        if qemu.disk_moved:
            moving.add(key)
        if self._due(key, INTERFACE, BLOCK_EVERY):
            flags |= BLOCK | INTERFACE
        elif key in moving and carry is not None and carry.ready:  # busy raw disks: libvirt now and then
            if self._due(key, BLOCK, BUSY_EVERY):
                flags |= BLOCK
            else:
                record["estimate"] = carry.estimate(qemu.disk_io, time.monotonic())
        elif key in moving or key in self.moving:
            # a disk that moved is read this round and the next (QEMU counts a request a moment after its bytes)
            flags |= BLOCK
        if flags & BLOCK:
            self.asked[(key, BLOCK)] = time.monotonic()
        return flags

    def _due(self, key: tuple[str, int], stats: int, every: float) -> bool:
        """Whether libvirt's ``stats`` of a domain are ``every`` seconds old (then they are asked now)."""
        now = time.monotonic()
        due = (key, stats) not in self.asked or now - self.asked[(key, stats)] >= every - SLACK
        if due:
            self.asked[(key, stats)] = now
        return due


def read_host(conn: libvirt.virConnect, local: bool, name: str) -> VMStats:
    """The hypervisor host: CPU and memory through libvirt (remote hosts too), disks and NICs from /proc here."""
    if local:
        from cm.monitoring.procfs import read_local

        return read_local(name)
    cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
    memory = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
    free = sum(memory.get(k, 0) for k in ("free", "buffers", "cached"))
    return VMStats(name=name, time=time.time(), vcpus=conn.getInfo()[2],
                   cpu_ns=cpu.get("kernel", 0) + cpu.get("user", 0), iowait_ns=cpu.get("iowait", 0),
                   mem_total_kib=memory.get("total", 0), mem_used_kib=max(0, memory.get("total", 0) - free),
                   host=name)


class StatsVerbs:
    """The monitoring and live-tuning verbs, mixed into the kvm provider (which has ``hv`` and ``_domain``)."""

    hv: Any
    SAMPLING = (f"on this machine's hypervisor (stats: auto) CPU, vCPUs, NICs, RSS from /proc every interval, "
                f"balloon statistics every {MEMORY_EVERY:g} s (carried between), disks through libvirt while they "
                f"move (else every {BLOCK_EVERY:g} s), busy raw disks every {BUSY_EVERY:g} s (bytes from /proc "
                "between, time in flight carried at the last rate); elsewhere or with stats: libvirt "
                "all through libvirt every interval")

    def vm_stats(self, names: list[str]) -> list[VMStats]:
        wanted = set(names)
        with self.hv.use("read VM statistics") as conn:
            test = self.hv.is_test
            host = self._host_name(conn, self.hv.uri)
            found = (read_domains(conn, wanted, host, self.__dict__.setdefault("_devices", {})) if test
                     else self._read(conn, self.hv.uri, wanted, host))
        missing = wanted - {s.name for s in found}
        for host, uri, conn in ([] if test or not missing else self._other_hosts()):
            try:  # VMs migrated to another host of the cloud are read there
                found += self._read(conn, uri, missing, host)
            except libvirt.libvirtError:
                continue  # that host does not answer now: its VMs come back with it
            missing -= {s.name for s in found}
        return found

    def host_stats(self) -> list[VMStats]:
        if self.hv.is_test:
            raise self._unsupported("read host statistics")  # type: ignore[attr-defined]
        with self.hv.use("read host statistics") as conn:
            hosts = [read_host(conn, self.hv.is_local, self._host_name(conn, self.hv.uri))]
        for host, uri, conn in self._other_hosts():
            try:
                hosts.append(read_host(conn, is_local_uri(uri), host))
            except libvirt.libvirtError:
                continue
        return hosts

    def _read(self, conn: libvirt.virConnect, uri: str, names: set[str], host: str) -> list[VMStats]:
        """The domains of one host: from the kernel where it is this machine (``stats: auto``), else libvirt's."""
        source = self.config.get("stats") or "auto"  # type: ignore[attr-defined]
        if source not in ("auto", "libvirt"):
            raise ConfigError(f"stats: {source}: use auto (the kernel's counters where it can) or libvirt")
        if source == "libvirt" or not is_local_uri(uri):
            return read_domains(conn, names, host)
        readers: dict[str, LocalDomains] = self.__dict__.setdefault("_local_domains", {})
        return readers.setdefault(uri, LocalDomains()).read(conn, names, host)

    def _host_name(self, conn: libvirt.virConnect, uri: str) -> str:
        """The host's name in the cloud's ``hosts:`` (what `cm vm migrate --to` takes), else its hostname."""
        for name, host in checkpoint.hosts(self).items():  # type: ignore[arg-type]
            if host["uri"] == uri:
                return name
        names: dict[str, str] = self.__dict__.setdefault("_hostnames", {})
        if uri not in names:  # asked once: an RPC each round otherwise
            names[uri] = conn.getHostname()
        return names[uri]

    def _other_hosts(self) -> list[tuple[str, str, libvirt.virConnect]]:
        """(name, URI, connection) of the cloud's other hosts that answer."""
        found = []
        for host, uri in checkpoint.other_hosts(self).items():  # type: ignore[arg-type]
            try:
                found.append((host, uri, checkpoint.host_connection(self, uri)))  # type: ignore[arg-type]
            except ProviderError:
                continue
        return found

    def set_vm_vcpus(self, name: str, count: int) -> int:
        with self.hv.use("change vCPUs of running VMs", write=True) as conn:
            dom = self._running(conn, name)
            most = dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | LIVE)
            if count > most:
                raise Conflict(f"VM '{name}' can have at most {most} vCPUs (its maximum); "
                               "give it a flavor with more to go beyond")
            dom.setVcpusFlags(count, LIVE)
            return dom.vcpusFlags(LIVE)

    def set_vm_memory(self, name: str, mib: int) -> int:
        with self.hv.use("change memory of running VMs", write=True) as conn:
            dom = self._running(conn, name)
            most = dom.maxMemory() // 1024
            if mib > most:
                raise Conflict(f"VM '{name}' can have at most {most} MiB through its balloon")
            dom.setMemoryFlags(mib * 1024, LIVE)
            return dom.info()[2] // 1024

    def _running(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        dom = self._domain(conn, name)  # type: ignore[attr-defined]
        if dom.info()[0] != RUNNING:
            raise ProviderError(f"VM '{name}' is not running")
        return dom
