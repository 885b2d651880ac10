"""What kind of disk image a file is, from its first bytes (as Glance's and QEMU's format probes)."""

from __future__ import annotations

from pathlib import Path

from cm.errors import UsageError

# (offset, magic, format as Glance names it, what it is in words)
FORMATS = [
    (0, b"QFI\xfb", "qcow2", "a qcow2 image"),
    (0, b"KDMV", "vmdk", "a VMDK image"),
    (0, b"# Disk DescriptorFile", "vmdk", "a VMDK descriptor"),
    (0, b"vhdxfile", "vhdx", "a VHDX image"),
    (0, b"conectix", "vhd", "a VHD image"),
    (0, b"QED\x00", "qed", "a QED image"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi", "a VDI image"),
    (0x8001, b"CD001", "iso", "an ISO image"),
]
# Containers no cloud boots: the file must be unpacked first.
PACKED = [
    (0, b"\x1f\x8b", "gzip-compressed; uncompress it first (gunzip)"),
    (0, b"\xfd7zXZ\x00", "xz-compressed; uncompress it first (unxz)"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed; uncompress it first (unzstd)"),
    (0, b"BZh", "bzip2-compressed; uncompress it first (bunzip2)"),
    (0, b"PK\x03\x04", "a zip archive; unpack it first (unzip)"),
]
HEADER_BYTES = 0x8010  # enough to see an ISO's volume descriptor


def header(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEADER_BYTES)


def _at(data: bytes, offset: int, magic: bytes) -> bool:
    return data[offset:offset + len(magic)] == magic


def detect(path: Path, data: bytes | None = None) -> tuple[str, str]:
    """(format, description) of the image file at ``path``; raw when nothing else matches.

    A compressed file or an archive is refused with what to do (one clear line)."""
    data = header(path) if data is None else data
    for offset, magic, what in PACKED:
        if _at(data, offset, magic):
            raise UsageError(f"{path} is {what}")
    for offset, magic, fmt, what in FORMATS:
        if _at(data, offset, magic):
            return fmt, what
    return "raw", "a raw disk image"
