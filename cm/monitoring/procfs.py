"""Counters from the Linux /proc files: the local host, and guests read over ssh (OpenStack).

One text holds the four files separated by ``SEPARATOR`` lines, the way one ssh
command returns them (:data:`READ_COMMAND`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from cm.provider import VMStats

FILES = ("/proc/stat", "/proc/meminfo", "/proc/diskstats", "/proc/net/dev")
SEPARATOR = "@@cm-monitor@@"
READ_COMMAND = f"; echo {SEPARATOR}; ".join(f"cat {f}" for f in FILES)
TICK_NS = 10_000_000  # USER_HZ is 100 on every Linux cm meets
# Devices that are not disks holding data: loop, RAM disks, CD-ROMs (the cloud-init seed), floppies, LVM maps.
_NOT_DISKS = re.compile(r"^(loop|ram|zram|sr|fd|dm-|md)\d*")


def _cpu(text: str) -> tuple[int, int, int, list[int]]:
    """(busy ns, iowait ns, steal ns, per-CPU busy ns) from /proc/stat."""
    busy = iowait = steal = 0
    per_cpu: list[int] = []
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        fields = line.split()
        values = [int(v) for v in fields[1:9]] + [0] * max(0, 9 - len(fields))
        user, nice, system, _idle, wait, irq, softirq, stolen = values[:8]
        used = (user + nice + system + irq + softirq) * TICK_NS
        if fields[0] == "cpu":
            busy, iowait, steal = used, wait * TICK_NS, stolen * TICK_NS
        else:
            per_cpu.append(used)
    return busy, iowait, steal, per_cpu


def _memory(text: str) -> tuple[int, int]:
    """(total KiB, used KiB): used is what is not available to new work (MemAvailable)."""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            values[key] = int(parts[0])
    total = values.get("MemTotal", 0)
    available = values.get("MemAvailable", values.get("MemFree", 0) + values.get("Cached", 0))
    return total, max(0, total - available)


def _disks(text: str) -> tuple[int, int, int]:
    """(bytes read, bytes written, ns requests were in flight) summed over whole disks."""
    rows = [line.split() for line in text.splitlines() if len(line.split()) >= 14]
    names = {r[2] for r in rows}
    read = written = busy = 0
    for row in rows:
        name = row[2]
        if _NOT_DISKS.match(name) or _is_partition(name, names):
            continue
        read += int(row[5]) * 512
        written += int(row[9]) * 512
        busy += int(row[13]) * 1_000_000  # weighted ms: summed request time, like libvirt's block times
    return read, written, busy


def _is_partition(name: str, names: set[str]) -> bool:
    base = re.sub(r"p?\d+$", "", name)
    return base != name and base in names


def _network(text: str) -> tuple[int, int]:
    """(bytes received, bytes sent) over every interface but loopback."""
    rx = tx = 0
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        if not sep or name.strip() == "lo" or "|" in rest:
            continue
        fields = rest.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def parse(name: str, text: str, when: float | None = None, host: str = "") -> VMStats:
    """A reading of the four files (as :data:`READ_COMMAND` prints them) as counters."""
    parts = text.split(SEPARATOR)
    if len(parts) != len(FILES):
        raise ValueError(f"expected {len(FILES)} /proc files from {name}, got {len(parts)}")
    busy, iowait, steal, per_cpu = _cpu(parts[0])
    total, used = _memory(parts[1])
    read, written, disk_ns = _disks(parts[2])
    rx, tx = _network(parts[3])
    return VMStats(name=name, time=time.time() if when is None else when, vcpus=max(1, len(per_cpu)),
                   cpu_ns=busy, vcpu_ns=per_cpu, steal_ns=steal, iowait_ns=iowait, mem_total_kib=total,
                   mem_used_kib=used, mem_max_kib=total, disk_rd_bytes=read, disk_wr_bytes=written,
                   disk_time_ns=disk_ns, net_rx_bytes=rx, net_tx_bytes=tx, host=host or name)


def read_local(name: str) -> VMStats:
    """This machine's counters."""
    when = time.time()
    return parse(name, f"\n{SEPARATOR}\n".join(Path(f).read_text() for f in FILES), when)
