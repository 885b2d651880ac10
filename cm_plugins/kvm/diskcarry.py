"""Block counters of a domain's busy raw disks between libvirt's reads, from QEMU's ``worker`` threads.

For a raw file-backed disk QEMU's thread-pool workers do one ``preadv``/``pwritev``
per guest request, so (measured on QEMU 7.2 against libvirt's ``block.*``):

- their ``rchar`` is the bytes the guest read, plus a constant (QEMU's own 512-byte read at start);
- their ``wchar`` is the bytes written plus 8 for each completion wake-up they send the main
  loop (an eventfd write, counted in ``syscw`` too): ``wchar - 8 * syscw`` is the bytes written
  less 8 per write request, exactly.

How many write requests that was, and the time requests spent in flight (the ``*.times``
that disk busy is made of) only QEMU knows: between libvirt's reads they are carried at
the last interval's bytes per write request and nanoseconds in flight per second (a
streaming guest keeps as many requests in flight however fast the host serves them; per
byte the figure swings with the host's load).  Each libvirt read re-anchors the figures;
the constants are bracketed by the workers' counters read just before and just after it,
so a quiet moment pins them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WAKE_BYTES = 8  # an eventfd write


def _sums(record: dict[str, Any]) -> tuple[int, int, int, int]:
    """(read bytes, written bytes, write requests, ns in flight) over the disks of a libvirt record."""
    disks = range(int(record.get("block.count", 0)))

    def total(*fields: str) -> int:
        return sum(int(record.get(f"block.{i}.{f}", 0)) for i in disks for f in fields)

    return (total("rd.bytes"), total("wr.bytes"), total("wr.reqs"), total("rd.times", "wr.times", "fl.times"))


def _kernel(io: tuple[int, int, int, int]) -> tuple[int, int]:
    """(bytes read, bytes written less 8 per write request) from the workers' (rchar, wchar, syscr, syscw)."""
    return io[0], io[1] - WAKE_BYTES * io[3]


@dataclass
class Bracket:
    """A constant known to lie in [low, high], narrowed by each reading; restarted if a reading contradicts it."""

    low: float = float("-inf")
    high: float = float("inf")

    def narrow(self, low: int, high: int) -> None:
        if high < self.low or low > self.high:  # the constant moved (a thread with I/O of its own exited)
            self.low, self.high = low, high
        else:
            self.low, self.high = max(self.low, low), min(self.high, high)

    @property
    def value(self) -> int:
        return int(self.low)  # the lower bound: a carried counter never runs ahead of what the kernel proves


@dataclass
class DiskCarry:
    """What one domain's block counters are carried with between libvirt's reads."""

    read_offset: Bracket = field(default_factory=Bracket)
    write_offset: Bracket = field(default_factory=Bracket)
    anchor: tuple[int, int, int, int] | None = None  # libvirt's sums at its last read
    disks: int = -1  # how many disks libvirt listed at its first read
    bytes_per_write: float = 0.0
    busy_rate: float | None = None  # ns in flight per second over libvirt's last interval
    anchored: float = 0.0  # when libvirt was read (monotonic seconds)
    shown: tuple[int, int, int] = (0, 0, 0)  # the last (read, written, ns) given out: counters never go back

    @property
    def ready(self) -> bool:
        """Whether libvirt was read twice (the rates need an interval: since boot says little of now)."""
        return self.busy_rate is not None

    def anchor_at(self, record: dict[str, Any], before: tuple[int, int, int, int],
                  after: tuple[int, int, int, int], now: float) -> None:
        """libvirt's ``block.*`` read between the workers' counters ``before`` and ``after``.

        Raises ValueError when a disk came or went: one hot-plugged is not on QEMU's command line,
        so what kind it is (raw or not) is unknown.
        """
        if self.disks not in (-1, int(record.get("block.count", 0))):
            raise ValueError("the domain's disks changed")
        self.disks = int(record.get("block.count", 0))
        rd, wr, wr_reqs, ns = sums = _sums(record)
        (r1, x1), (r2, x2) = _kernel(before), _kernel(after)
        self.read_offset.narrow(rd - r2, rd - r1)
        written = wr - WAKE_BYTES * wr_reqs
        self.write_offset.narrow(written - x2, written - x1)
        rd0, wr0, reqs0, ns0 = self.anchor or (0, 0, 0, 0)
        if wr_reqs > reqs0:
            self.bytes_per_write = (wr - wr0) / (wr_reqs - reqs0)
        if self.anchor is not None and now > self.anchored:
            self.busy_rate = (ns - ns0) / (now - self.anchored)
        self.anchor, self.anchored = sums, now

    def estimate(self, io: tuple[int, int, int, int], now: float) -> tuple[int, int, int]:
        """(read bytes, written bytes, ns in flight) at ``now``, from the workers' counters ``io``."""
        assert self.anchor is not None and self.busy_rate is not None
        rd0, wr0, reqs0, ns0 = self.anchor
        r, x = _kernel(io)
        rd = max(rd0, r + self.read_offset.value)
        less = x + self.write_offset.value - (wr0 - WAKE_BYTES * reqs0)  # bytes since, less 8 per request
        per = self.bytes_per_write  # so ``less`` is ``per - 8`` bytes per request
        wr = wr0 + max(0, int(less * per / (per - WAKE_BYTES)) if per > WAKE_BYTES else less)
        return rd, wr, ns0 + int(self.busy_rate * (now - self.anchored))

    def show(self, values: tuple[int, int, int]) -> dict[str, int]:
        """``values`` as one disk's ``block.*`` keys, none below what was given out before."""
        self.shown = tuple(max(a, b) for a, b in zip(self.shown, values))  # type: ignore[assignment]
        rd, wr, ns = self.shown
        return {"block.count": 1, "block.0.rd.bytes": rd, "block.0.wr.bytes": wr, "block.0.rd.times": ns}
