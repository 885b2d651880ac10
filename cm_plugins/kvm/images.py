"""Image files: what a PATH given to `cm image add` is, and uploading files into libvirt volumes.

An image is either a disk image (qcow2 or raw: one volume named like the
image) or a kernel + initrd pair for direct kernel boot (two volumes,
``NAME.kernel`` and ``NAME.initrd``).  `cm image add NAME PATH` takes:

* a qcow2 or raw disk image file;
* ``kernel=KERNEL,initrd=INITRD``;
* a directory holding one ``vmlinuz*`` (or ELF ``vmlinux*``) and one ``initrd*``/``initramfs*`` file.
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from cm import diskformat
from cm.errors import UsageError
from cm.provider import Image

KERNEL_SUFFIX = ".kernel"
INITRD_SUFFIX = ".initrd"
# The volumes cm makes for a VM: <vm>-disk-<id>.qcow2|.img and <vm>-seed-<id>.iso.
VM_VOLUME = re.compile(r"^(?P<vm>.+)-(?P<kind>disk|seed)-(?P<id>[0-9a-f]{8})\.(qcow2|img|iso)$")
CHUNK = 1 << 20

@dataclass
class DiskFile:
    path: Path
    format: str  # qcow2 or raw
    virtual_size: int  # bytes the guest sees
    file_size: int  # bytes to upload


@dataclass
class KernelPair:
    kernel: Path
    initrd: Path


def _header(path: Path) -> bytes:
    return diskformat.header(path)


def is_kernel(header: bytes) -> bool:
    """A Linux x86 boot image (bzImage, 'HdrS' at 0x202) or an ELF vmlinux (QEMU boots its PVH entry)."""
    elf_executable = header[:4] == b"\x7fELF" and header[16:18] == b"\x02\x00"  # ET_EXEC, little-endian
    return header[0x202:0x206] == b"HdrS" or elf_executable


def _existing(path: str) -> Path:
    found = Path(path).expanduser()
    if not found.exists():
        raise UsageError(f"no such file: {path}")
    return found.resolve()


def disk_file(path: Path) -> DiskFile:
    """Detect a disk image's format from its header; refuse what cm cannot boot."""
    header = _header(path)
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"{path} is empty")
    if header[:4] == b"QFI\xfb":
        backing_offset, = struct.unpack(">Q", header[8:16])
        if backing_offset:
            raise UsageError(f"{path} is a qcow2 overlay with a backing file; flatten it first: "
                             f"qemu-img convert -O qcow2 {path} flat.qcow2")
        virtual, = struct.unpack(">Q", header[24:32])
        return DiskFile(path, "qcow2", virtual, size)
    fmt, what = diskformat.detect(path, header)
    if fmt == "iso":
        raise UsageError(f"{path} is an ISO installer image; cm boots disk images (qcow2, raw) or a kernel+initrd")
    if fmt != "raw":
        raise UsageError(f"{path} is {what}; convert it: qemu-img convert -O qcow2 {path} NAME.qcow2")
    if is_kernel(header):
        raise UsageError(f"{path} is a Linux kernel; give its initrd too: "
                         f"cm image add NAME kernel={path},initrd=INITRD")
    return DiskFile(path, "raw", size, size)


def _pair_in_directory(directory: Path) -> KernelPair:
    kernels = sorted(p for p in directory.iterdir()
                     if p.is_file() and p.name.startswith(("vmlinuz", "vmlinux", "bzImage")))
    initrds = sorted(p for p in directory.iterdir() if p.is_file() and p.name.startswith(("initrd", "initramfs")))
    if len(kernels) != 1 or len(initrds) != 1:
        raise UsageError(f"{directory} must hold exactly one vmlinuz*/vmlinux* and one initrd*/initramfs* file "
                         f"(found {len(kernels)} and {len(initrds)}); or give kernel=PATH,initrd=PATH")
    return KernelPair(kernels[0], initrds[0])


def _pair_from_spec(spec: str) -> KernelPair:
    parts = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    unknown = set(parts) - {"kernel", "initrd"}
    if unknown or set(parts) != {"kernel", "initrd"}:
        raise UsageError("a kernel image is given as kernel=PATH,initrd=PATH")
    return KernelPair(_existing(parts["kernel"]), _existing(parts["initrd"]))


def parse_source(path: str) -> DiskFile | KernelPair:
    """What `cm image add NAME PATH` was given."""
    if path.startswith(("kernel=", "initrd=")):
        pair = _pair_from_spec(path)
    else:
        found = _existing(path)
        if not found.is_dir():
            return disk_file(found)
        pair = _pair_in_directory(found)
    if not is_kernel(_header(pair.kernel)):
        raise UsageError(f"{pair.kernel} is not a Linux kernel (a bzImage or an ELF vmlinux)")
    return pair


def check_image_name(name: str) -> None:
    """Image names become volume names: no slashes, and none of cm's own volume patterns."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"'{name}' cannot be an image name (no '/' and no leading '.')")
    if VM_VOLUME.match(name) or name.endswith((KERNEL_SUFFIX, INITRD_SUFFIX)):
        raise UsageError(f"'{name}' looks like a volume cm makes itself; pick another image name")


def volume_xml(name: str, capacity: int, fmt: str, *, sparse: bool = False, backing: str = "",
               backing_format: str = "") -> str:
    """The XML of a new volume; ``backing`` makes it a copy-on-write overlay on that path."""
    allocation = "<allocation>0</allocation>" if sparse else ""
    chain = (f"<backingStore><path>{escape(backing)}</path><format type='{backing_format}'/></backingStore>"
             if backing else "")
    return (f"<volume><name>{escape(name)}</name><capacity>{capacity}</capacity>{allocation}"
            f"<target><format type='{fmt}'/></target>{chain}</volume>")


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: Path) -> None:
    """Copy a file into a volume through libvirt's storage API (works over qemu+ssh too)."""
    size = path.stat().st_size
    stream = conn.newStream(0)
    with open(path, "rb") as handle:
        vol.upload(stream, 0, size, 0)
        try:
            stream.sendAll(lambda _stream, nbytes, fh: fh.read(min(nbytes, CHUNK)), handle)
            stream.finish()
        except BaseException:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass  # the stream is already dead; the original error says why
            raise


def upload_bytes(conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes) -> None:
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    try:
        sent = 0
        while sent < len(data):  # send() may take less than it was given
            sent += stream.send(data[sent:sent + CHUNK])
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise


# -- images in a storage pool --------------------------------------------------------------
def volume_info(vol: libvirt.virStorageVol) -> dict[str, Any]:
    root = ET.fromstring(vol.XMLDesc(0))
    fmt = root.find("target/format")
    return {"name": vol.name(), "path": vol.path(), "format": fmt.get("type", "") if fmt is not None else "",
            "capacity": int(root.findtext("capacity") or 0), "backing": root.findtext("backingStore/path") or ""}


def _as_images(infos: Iterable[dict[str, Any]], pool: str) -> dict[str, Image]:
    """Volumes as images: disk images, and kernel+initrd pairs folded into one."""
    found: dict[str, Image] = {}
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for info in infos:
        name = info["name"]
        if VM_VOLUME.match(name):
            continue
        for suffix, part in ((KERNEL_SUFFIX, "kernel"), (INITRD_SUFFIX, "initrd")):
            if name.endswith(suffix):
                pairs.setdefault(name[: -len(suffix)], {})[part] = info
                break
        else:
            found[name] = Image(name=name, id=info["path"], size=info["capacity"], format=info["format"],
                                extra={"path": info["path"], "volumes": [name], "pool": pool})
    for name, parts in pairs.items():
        complete = set(parts) == {"kernel", "initrd"}
        found[name] = Image(name=name, id=parts.get("kernel", parts.get("initrd", {})).get("path", ""),
                            status="active" if complete else "incomplete", format="kernel+initrd",
                            size=sum(p["capacity"] for p in parts.values()),
                            extra={"kernel": parts.get("kernel", {}).get("path", ""),
                                   "initrd": parts.get("initrd", {}).get("path", ""),
                                   "volumes": [p["name"] for p in parts.values()], "pool": pool})
    return found


def in_pool(pool: libvirt.virStoragePool) -> dict[str, Image]:
    """The pool's volumes as images: disk images, and kernel+initrd pairs folded into one."""
    return _as_images(map(volume_info, pool.listAllVolumes()), pool.name())


def named(pool: libvirt.virStoragePool, name: str) -> Image | None:
    """The image called ``name``, found by its volumes' names (not by listing a pool of thousands)."""
    infos = []
    for volume in (name, name + KERNEL_SUFFIX, name + INITRD_SUFFIX):
        try:
            infos.append(volume_info(pool.storageVolLookupByName(volume)))
        except libvirt.libvirtError:
            continue
    return _as_images(infos, pool.name()).get(name)


def users_of(conn: libvirt.virConnect, pool: libvirt.virStoragePool, image: Image) -> list[str]:
    """The VMs whose disk or kernel is the image."""
    paths = {image.extra.get(k) for k in ("path", "kernel", "initrd")} - {None, ""}
    users = []
    for info in map(volume_info, pool.listAllVolumes()):
        if info["backing"] in paths:
            match = VM_VOLUME.match(info["name"])
            users.append(match.group("vm") if match else info["name"])
    for dom in conn.listAllDomains():
        root = ET.fromstring(dom.XMLDesc(0))
        if {root.findtext("os/kernel"), root.findtext("os/initrd")} & paths:
            users.append(dom.name())
    return sorted(set(users))
