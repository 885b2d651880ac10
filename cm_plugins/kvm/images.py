"""Image files: what a PATH given to `cm image add` is, and uploading files into libvirt volumes.

An image is either a disk image (qcow2 or raw: one volume named like the
image) or a kernel + initrd pair for direct kernel boot (volumes
``NAME.kernel`` and ``NAME.initrd``), optionally with the root disk the
kernel boots (``NAME.disk``, each VM gets a copy-on-write overlay on it) and
its kernel command line (``NAME.cmdline``, a volume holding the text).
`cm image add NAME PATH` takes:

* a qcow2 or raw disk image file;
* ``kernel=KERNEL,initrd=INITRD[,disk=DISK][,cmdline=ARGS...]`` (cmdline last: it takes the rest);
* a directory holding one ``vmlinuz*`` (or ELF ``vmlinux*``) and one ``initrd*``/``initramfs*`` file,
  and optionally one ``*.qcow2``/``*.raw``/``*.img`` disk and a ``cmdline`` file.
"""

from __future__ import annotations

import contextlib
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
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
DISK_SUFFIX = ".disk"
CMDLINE_SUFFIX = ".cmdline"
# The volumes of a kernel image, by suffix; kernel and initrd are required.
PARTS = {KERNEL_SUFFIX: "kernel", INITRD_SUFFIX: "initrd", DISK_SUFFIX: "disk", CMDLINE_SUFFIX: "cmdline"}
DISK_NAMES = (".qcow2", ".raw", ".img")
MAX_CMDLINE = 4096
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
    """A kernel and initrd for direct kernel boot, with the root disk it boots and its command line, if any."""

    kernel: Path
    initrd: Path
    disk: DiskFile | None = None
    cmdline: str = ""


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


def _checked_cmdline(text: str) -> str:
    line = " ".join(text.split())
    if len(line) > MAX_CMDLINE:
        raise UsageError(f"the kernel command line is longer than {MAX_CMDLINE} characters")
    return line


def _pair_in_directory(directory: Path) -> KernelPair:
    files = [p for p in directory.iterdir() if p.is_file()]
    kernels = sorted(p for p in files if p.name.startswith(("vmlinuz", "vmlinux", "bzImage")))
    initrds = sorted(p for p in files if p.name.startswith(("initrd", "initramfs")))
    disks = sorted(p for p in files if p.name.endswith(DISK_NAMES) and p not in initrds)
    if len(kernels) != 1 or len(initrds) != 1 or len(disks) > 1:
        raise UsageError(f"{directory} must hold exactly one vmlinuz*/vmlinux* and one initrd*/initramfs* file, "
                         f"and at most one *.qcow2/*.raw/*.img disk (found {len(kernels)}, {len(initrds)} and "
                         f"{len(disks)}); or give kernel=PATH,initrd=PATH[,disk=PATH]")
    cmdline = directory / "cmdline"
    return KernelPair(kernels[0], initrds[0], disk_file(disks[0]) if disks else None,
                      _checked_cmdline(cmdline.read_text()) if cmdline.is_file() else "")


def _pair_from_spec(spec: str) -> KernelPair:
    spec, _, cmdline = spec.partition(",cmdline=")   # the command line has commas and '=' of its own
    parts = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if set(parts) - {"kernel", "initrd", "disk"} or not {"kernel", "initrd"} <= set(parts):
        raise UsageError("a kernel image is given as kernel=PATH,initrd=PATH[,disk=PATH][,cmdline=ARGS]")
    disk = disk_file(_existing(parts["disk"])) if "disk" in parts else None
    return KernelPair(_existing(parts["kernel"]), _existing(parts["initrd"]), disk, _checked_cmdline(cmdline))


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
    if VM_VOLUME.match(name) or name.endswith(tuple(PARTS)):
        raise UsageError(f"'{name}' looks like a volume cm makes itself; pick another image name")


def volume_xml(name: str, capacity: int, fmt: str, *, sparse: bool = False, backing: str = "",
               backing_format: str = "") -> str:
    """The XML of a new volume; ``backing`` makes it a copy-on-write overlay on that path."""
    allocation = "<allocation>0</allocation>" if sparse else ""
    chain = (f"<backingStore><path>{escape(backing)}</path><format type='{backing_format}'/></backingStore>"
             if backing else "")
    return (f"<volume><name>{escape(name)}</name><capacity>{capacity}</capacity>{allocation}"
            f"<target><format type='{fmt}'/></target>{chain}</volume>")


@contextlib.contextmanager
def _transfer(stream: libvirt.virStream) -> Iterator[libvirt.virStream]:
    """Finish the stream after the body, or abort it when the body fails."""
    try:
        yield stream
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass  # the stream is already dead; the original error says why
        raise


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: Path) -> None:
    """Copy a file into a volume through libvirt's storage API (works over qemu+ssh too)."""
    size = path.stat().st_size
    stream = conn.newStream(0)
    with open(path, "rb") as handle:
        vol.upload(stream, 0, size, 0)
        with _transfer(stream):
            stream.sendAll(lambda _stream, nbytes, fh: fh.read(min(nbytes, CHUNK)), handle)


def download_bytes(conn: libvirt.virConnect, vol: libvirt.virStorageVol, limit: int) -> bytes:
    """The first ``limit`` bytes of a volume (a small one, such as a kernel command line)."""
    stream = conn.newStream(0)
    vol.download(stream, 0, limit, 0)
    chunks: list[bytes] = []
    with _transfer(stream):
        stream.recvAll(lambda _stream, data, _opaque: chunks.append(data), None)
    return b"".join(chunks)


def upload_bytes(conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes) -> None:
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    with _transfer(stream):
        sent = 0
        while sent < len(data):  # send() may take less than it was given
            sent += stream.send(data[sent:sent + CHUNK])


# -- images in a storage pool --------------------------------------------------------------
def volume_info(vol: libvirt.virStorageVol) -> dict[str, Any]:
    root = ET.fromstring(vol.XMLDesc(0))
    fmt = root.find("target/format")
    return {"name": vol.name(), "path": vol.path(), "format": fmt.get("type", "") if fmt is not None else "",
            "capacity": int(root.findtext("capacity") or 0), "backing": root.findtext("backingStore/path") or ""}


def _kernel_image(name: str, parts: dict[str, dict[str, Any]], pool: str) -> Image:
    """A kernel image from its volumes: kernel and initrd, and maybe a root disk and a command line."""
    complete = {"kernel", "initrd"} <= set(parts)
    disk = parts.get("disk", {})
    extra = {part: parts.get(part, {}).get("path", "") for part in PARTS.values()}
    extra.update(disk_format=disk.get("format", ""), volumes=[p["name"] for p in parts.values()], pool=pool)
    return Image(name=name, id=parts.get("kernel", next(iter(parts.values()))).get("path", ""),
                 status="active" if complete else "incomplete",
                 format="kernel+initrd+disk" if disk else "kernel+initrd",
                 size=sum(p["capacity"] for part, p in parts.items() if part != "cmdline"), extra=extra)


def _as_images(infos: Iterable[dict[str, Any]], pool: str) -> dict[str, Image]:
    """Volumes as images: disk images, and the volumes of a kernel image folded into one."""
    found: dict[str, Image] = {}
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for info in infos:
        name = info["name"]
        if VM_VOLUME.match(name):
            continue
        for suffix, part in PARTS.items():
            if name.endswith(suffix):
                pairs.setdefault(name[: -len(suffix)], {})[part] = info
                break
        else:
            found[name] = Image(name=name, id=info["path"], size=info["capacity"], format=info["format"],
                                extra={"path": info["path"], "volumes": [name], "pool": pool})
    for name, parts in pairs.items():
        found[name] = _kernel_image(name, parts, pool)
    return found


def in_pool(pool: libvirt.virStoragePool) -> dict[str, Image]:
    """The pool's volumes as images: disk images, and kernel+initrd pairs folded into one."""
    return _as_images(map(volume_info, pool.listAllVolumes()), pool.name())


def named(pool: libvirt.virStoragePool, name: str) -> Image | None:
    """The image called ``name``, found by its volumes' names (not by listing a pool of thousands)."""
    infos = []
    for volume in (name, *(name + suffix for suffix in PARTS)):
        try:
            infos.append(volume_info(pool.storageVolLookupByName(volume)))
        except libvirt.libvirtError:
            continue
    return _as_images(infos, pool.name()).get(name)


def users_of(conn: libvirt.virConnect, pool: libvirt.virStoragePool, image: Image) -> list[str]:
    """The VMs whose disk or kernel is the image."""
    paths = {image.extra.get(k) for k in ("path", "kernel", "initrd", "disk")} - {None, ""}
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
