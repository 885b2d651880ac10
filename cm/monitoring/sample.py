"""One sample: the rates between two readings of a node's counters, in compact integers.

CPU figures are per mille of the node's CPUs (1000 = every vCPU busy all the
time), memory in KiB, disk and network in bytes per second, ``disk_busy`` the
average number of requests in flight, per mille (1000 = one request always
outstanding).  Per-vCPU use is a byte per vCPU, in percent.
"""

from __future__ import annotations

from typing import NamedTuple

from cm.provider import VMStats

COLUMNS = ("t", "ncpu", "cpu", "vcpu", "steal", "iowait", "mem_used", "mem_total", "disk_rd", "disk_wr",
           "disk_busy", "net_rx", "net_tx")


class Sample(NamedTuple):
    """A row of the store (without its node)."""

    t: int  # epoch milliseconds, the end of the interval
    ncpu: int
    cpu: int
    vcpu: bytes
    steal: int
    iowait: int
    mem_used: int
    mem_total: int
    disk_rd: int
    disk_wr: int
    disk_busy: int
    net_rx: int
    net_tx: int


def _rate(before: int, after: int, seconds: float) -> int:
    """A counter's rate per second; a counter that went back (a VM restarted) counts from zero."""
    delta = after - before if after >= before else after
    return int(delta / seconds)


def _permille(ns: int, seconds: float, cpus: int = 1) -> int:
    return min(65535, int(ns / (seconds * 1e9 * max(1, cpus)) * 1000))


def between(before: VMStats, after: VMStats) -> Sample | None:
    """The sample of the interval between two readings (None if no time passed)."""
    seconds = after.time - before.time
    if seconds <= 0:
        return None
    cpus = after.vcpus or 1
    cpu = _rate(before.cpu_ns, after.cpu_ns, 1.0)
    per_vcpu = []
    for i, now in enumerate(after.vcpu_ns):
        was = before.vcpu_ns[i] if i < len(before.vcpu_ns) else now
        per_vcpu.append(min(100, _permille(_rate(was, now, 1.0), seconds) // 10))
    return Sample(
        t=int(after.time * 1000), ncpu=cpus,
        cpu=min(1000, _permille(cpu, seconds, cpus)), vcpu=bytes(per_vcpu),
        steal=min(1000, _permille(_rate(before.steal_ns, after.steal_ns, 1.0), seconds, cpus)),
        iowait=min(1000, _permille(_rate(before.iowait_ns, after.iowait_ns, 1.0), seconds, cpus)),
        mem_used=after.mem_used_kib, mem_total=after.mem_total_kib,
        disk_rd=_rate(before.disk_rd_bytes, after.disk_rd_bytes, seconds),
        disk_wr=_rate(before.disk_wr_bytes, after.disk_wr_bytes, seconds),
        disk_busy=_permille(_rate(before.disk_time_ns, after.disk_time_ns, 1.0), seconds),
        net_rx=_rate(before.net_rx_bytes, after.net_rx_bytes, seconds),
        net_tx=_rate(before.net_tx_bytes, after.net_tx_bytes, seconds))
