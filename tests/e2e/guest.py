"""A tiny real guest for end-to-end tests of the KVM provider.

``build_guest(cache_dir) -> (kernel, initrd)``
    Downloads the current Debian ``linux-image-*-amd64`` package with
    ``apt-get download`` (cached in ``cache_dir``), extracts ``vmlinuz`` and
    the few kernel modules the guest needs, and builds a gzip'd busybox
    initramfs (newc cpio, written in Python; about 2 MB).  A second call
    with the same ``cache_dir`` returns the cached files without running
    apt at all.

The guest's ``/init`` (see ``INIT``) mounts proc/sys/dev, loads the
modules, looks for a NoCloud seed (an ISO9660 filesystem labelled
``cidata`` on a CD-ROM or a virtio disk), and prints on the serial console::

    cm-guest: hostname=<local-hostname from meta-data>
    cm-guest: instance-id=<instance-id from meta-data>
    cm-guest: user-data-sha256=<sha256 of user-data>   (if present)
    cm-guest: ready

then, if it has a NIC (virtio-net), ``cm-guest: ip=<address>`` once DHCP
answers.  It runs a root shell on the console (``virsh console`` or
``dom.openConsole`` can type into it) and stays up.  Pressing the ACPI
power button (``dom.shutdown()``) prints ``cm-guest: power button`` and
powers off; so does SIGTERM/SIGUSR2/SIGINT sent to init.

``build_seed_iso(path, hostname, instance_id, user_data)`` writes a
NoCloud seed with pycdlib, and ``domain_xml(...)`` returns domain XML
known to work under TCG here.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import stat
import struct
import subprocess
import tarfile
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HOSTNAME_PREFIX = "cm-guest: hostname="
INSTANCE_PREFIX = "cm-guest: instance-id="
READY_LINE = "cm-guest: ready"

# Modules to put in the initramfs (their dependencies are added from the
# modules' own .modinfo).  CD-ROM: ata_piix (IDE on the i440fx 'pc'
# machine) or ahci (SATA on q35) + sr_mod; virtio: virtio_pci + virtio_blk
# (+ virtio_net for DHCP); isofs for the seed; button + evdev for the ACPI
# power button.
MODULES = ["ata_piix", "ahci", "sr_mod", "virtio_pci", "virtio_blk", "virtio_net",
           "isofs", "button", "evdev"]
# Dependencies known on Debian 12, fetched in the same pass as MODULES.
KNOWN_DEPS = ["libata", "libahci", "scsi_mod", "scsi_common", "cdrom", "virtio",
              "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
              "net_failover", "failover"]

INIT = r"""#!/bin/sh
# /init of the cm e2e test guest (busybox, PID 1)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run /mnt/seed
mount -t devpts devpts /dev/pts
echo 4 > /proc/sys/kernel/printk          # keep driver chatter off the console

say() { echo "cm-guest: $*" > /dev/console; }

off() {
    say "powering off"
    sync
    umount /mnt/seed 2>/dev/null
    poweroff -f
}
trap off TERM USR2 INT

for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m.ko" 2>/dev/null
done

# ACPI power button -> poweroff (any event from a "Power Button" input device)
for ev in /sys/class/input/event*; do
    [ -e "$ev/device/name" ] || continue
    case "$(cat "$ev/device/name")" in
    *"Power Button"*)
        (dd if="/dev/input/${ev##*/}" of=/dev/null bs=24 count=1 2>/dev/null
         printf '\n'; say "power button"; kill -USR2 1) &
        ;;
    esac
done

# Find the NoCloud seed: an iso9660 filesystem labelled cidata.
seed=""
i=0
while [ -z "$seed" ] && [ $i -lt 300 ]; do
    for dev in /dev/sr* /dev/vd* /dev/sd* /dev/hd*; do
        [ -b "$dev" ] || continue
        # ISO9660 primary volume descriptor: "CD001" at 32769, volume id at 32808
        # (busybox findfs misses ISOs smaller than ~100 KB, so read it directly)
        [ "$(dd if="$dev" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || continue
        case "$(dd if="$dev" bs=8 skip=4101 count=4 2>/dev/null | tr -d ' ')" in
        cidata|CIDATA) seed=$dev; break ;;
        esac
    done
    [ -n "$seed" ] || { sleep 0.1; i=$((i + 1)); }
done

meta() {   # meta KEY: value of a top-level "KEY: value" line of meta-data
    sed -n "s/^[[:space:]]*[\"']\{0,1\}$1[\"']\{0,1\}[[:space:]]*:[[:space:]]*//p" /mnt/seed/meta-data \
        | head -n 1 | sed -e 's/[[:space:]]*,\{0,1\}[[:space:]]*$//' -e "s/^[\"']//" -e "s/[\"']$//"
}

if [ -z "$seed" ]; then
    say "error=no cidata seed found"
    { cat /proc/partitions; lsmod; } > /dev/console 2>&1
elif ! mount -t iso9660 -o ro "$seed" /mnt/seed; then
    say "error=cannot mount $seed"
else
    say "seed=$seed"
    name=$(meta local-hostname)
    [ -n "$name" ] || name=$(meta hostname)
    iid=$(meta instance-id)
    [ -n "$name" ] && hostname "$name"
    say "hostname=$(hostname)"
    say "instance-id=$iid"
    if [ -f /mnt/seed/user-data ]; then
        say "user-data-sha256=$(sha256sum /mnt/seed/user-data | cut -d' ' -f1)"
    fi
fi
say "ready"

# DHCP on every ethernet interface (udhcpc calls /etc/udhcpc.sh)
ip link set lo up
for nic in /sys/class/net/*; do
    n=${nic##*/}
    [ "$n" = lo ] && continue
    udhcpc -i "$n" -s /etc/udhcpc.sh -x "hostname:$(hostname)" -b -t 20 -T 1 -A 1 \
        >/dev/null 2>&1 &
done

# a root shell on the console, respawned
(while :; do setsid cttyhack sh -l; sleep 1; done) &

while :; do
    sleep 3600 &
    wait $!
done
"""

UDHCPC_SCRIPT = r"""#!/bin/sh
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    # own line even if the console shell's prompt is already there
    printf '\ncm-guest: ip=%s\n' "$ip" > /dev/console
    ;;
esac
exit 0
"""

PROFILE = 'export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1="$(hostname) # "\n'

# Anything that changes the initramfs must change this key.
BUILD_KEY = hashlib.sha256(
    "\0".join([INIT, UDHCPC_SCRIPT, PROFILE, " ".join(MODULES), "v2"]).encode()
).hexdigest()[:16]


class GuestBuildError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# apt
# --------------------------------------------------------------------------

def _run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def kernel_package() -> str:
    """Name of the package linux-image-amd64 depends on (e.g. linux-image-6.1.0-56-amd64)."""
    for attempt in range(2):
        r = _run(["apt-cache", "depends", "linux-image-amd64"])
        m = re.search(r"Depends:\s*<?(linux-image-[^\s<>]+)>?", r.stdout)
        if m:
            return m.group(1)
        if attempt == 0:
            _run(["apt-get", "update", "-qq"])
    raise GuestBuildError(f"cannot resolve linux-image-amd64: {r.stdout} {r.stderr}")


def _download(package: str, dest_dir: Path) -> Path:
    for attempt in range(2):
        with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".dl-") as tmp:
            r = _run(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", package],
                     cwd=tmp)
            debs = list(Path(tmp).glob("*.deb"))
            if r.returncode == 0 and len(debs) == 1:
                final = dest_dir / debs[0].name
                os.replace(debs[0], final)
                return final
        if attempt == 0:       # stale package lists: the mirror no longer has that version
            _run(["apt-get", "update", "-qq"])
    raise GuestBuildError(f"apt-get download {package} failed: {r.stderr.strip()}")


# --------------------------------------------------------------------------
# kernel package contents
# --------------------------------------------------------------------------

def _modname(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", base)
    return base.replace("-", "_")


def _ko_bytes(name: str, data: bytes) -> bytes:
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        r = subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True)
        return r.stdout
    return data


def _module_deps(ko: bytes) -> list[str]:
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", ko)
    if not m or not m.group(1):
        return []
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d]


def _scan_deb(deb: Path, want: set[str]) -> dict:
    """One pass over the package's data tarball: vmlinuz, modules.builtin, wanted .ko files."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    found = {"vmlinuz": None, "kver": None, "builtin": None, "modules": {}}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:
                name = member.name
                if not member.isfile():
                    continue
                if re.search(r"(^|/)boot/vmlinuz-", name):
                    found["vmlinuz"] = tar.extractfile(member).read()
                    found["kver"] = name.rsplit("vmlinuz-", 1)[1]
                elif name.endswith("/modules.builtin"):
                    found["builtin"] = tar.extractfile(member).read().decode()
                elif "/modules/" in name and re.search(r"\.ko(\.xz|\.zst|\.gz)?$", name):
                    mod = _modname(name)
                    if mod in want:
                        found["modules"][mod] = _ko_bytes(name, tar.extractfile(member).read())
    finally:
        proc.stdout.close()
        if proc.wait() != 0:
            raise GuestBuildError(f"dpkg-deb --fsys-tarfile {deb} failed")
    if not found["vmlinuz"]:
        raise GuestBuildError(f"no boot/vmlinuz-* in {deb}")
    return found


def _collect_modules(deb: Path) -> tuple[bytes, str, list[tuple[str, bytes]]]:
    """Return (vmlinuz, kernel version, [(module, .ko bytes)] in load order)."""
    want = {m.replace("-", "_") for m in MODULES + KNOWN_DEPS}
    found = _scan_deb(deb, want)
    builtin = {_modname(ln) for ln in (found["builtin"] or "").split()}
    mods: dict[str, bytes] = dict(found["modules"])
    for _ in range(5):                              # fetch deps we did not expect
        missing = set()
        for data in mods.values():
            missing |= {d for d in _module_deps(data) if d not in mods and d not in builtin}
        if not missing:
            break
        more = _scan_deb(deb, missing)["modules"]
        if not more:
            raise GuestBuildError(f"modules not found in {deb}: {sorted(missing)}")
        mods.update(more)
    order: list[str] = []

    def visit(m: str, stack: tuple = ()) -> None:
        if m in order or m in builtin:
            return
        if m not in mods:
            raise GuestBuildError(f"module {m} neither in {deb.name} nor builtin")
        if m in stack:
            raise GuestBuildError(f"module dependency cycle at {m}")
        for d in _module_deps(mods[m]):
            visit(d, stack + (m,))
        order.append(m)

    for m in MODULES:
        m = m.replace("-", "_")
        if m not in builtin:
            visit(m)
    return found["vmlinuz"], found["kver"], [(m, mods[m]) for m in order]


def _has_pvh_note(elf: bytes) -> bool:
    """True if an x86-64 ELF kernel has the Xen PVH entry note (QEMU can boot it directly)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        return False
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        ptype, _flags, off, _va, _pa, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
        if ptype != 4:                                        # PT_NOTE
            continue
        pos, end = off, off + filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:                 # XEN_ELFNOTE_PHYS32_ENTRY
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


def _vmlinux_from_bzimage(bz: bytes) -> bytes | None:
    """The uncompressed ELF kernel inside a bzImage (xz or gzip payload), if it has a PVH note.

    QEMU boots such an ELF through its PVH entry point, which skips the
    in-guest decompression: under TCG that saves 5-8 s per boot.
    """
    import zlib

    candidates = []
    off = bz.find(b"\xfd7zXZ\x00")
    if off >= 0:
        candidates.append(("xz", off))
    off = bz.find(b"\x1f\x8b\x08")
    while off >= 0 and len(candidates) < 8:
        candidates.append(("gzip", off))
        off = bz.find(b"\x1f\x8b\x08", off + 1)
    for kind, off in candidates:
        try:
            if kind == "xz":
                out = lzma.LZMADecompressor().decompress(bz[off:])
            else:
                out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bz[off:])
        except (lzma.LZMAError, zlib.error, EOFError):
            continue
        if _has_pvh_note(out):
            return out
    return None


# --------------------------------------------------------------------------
# initramfs (newc cpio, gzip)
# --------------------------------------------------------------------------

class _Cpio:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1
        self.dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1) -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b)
        self.buf.write(b"\0" * (-(110 + len(name_b)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self._entry(d, stat.S_IFDIR | 0o755, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def node(self, name: str, mode: int, major: int, minor: int) -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self.ino, mode, 0, 0, 1, 0, 0, 0, 0, major, minor, len(name_b), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + name_b + b"\0" * (-(110 + len(name_b)) % 4))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def _static_busybox() -> Path:
    for cand in ("/bin/busybox", "/usr/bin/busybox"):
        p = Path(cand)
        if p.exists() and not _elf_has_interp(p.read_bytes()):
            return p
    raise GuestBuildError("no static busybox: apt-get install busybox-static")


def _elf_has_interp(data: bytes) -> bool:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return True
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return any(struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 3   # PT_INTERP
               for i in range(phnum))


def _build_initramfs(modules: list[tuple[str, bytes]]) -> bytes:
    busybox = _static_busybox()
    applets = _run([str(busybox), "--list-full"], check=True).stdout.split()
    c = _Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run",
              "mnt/seed", "etc", "lib/modules", "root"):
        c.dir(d)
    c.node("dev/console", stat.S_IFCHR | 0o600, 5, 1)
    c.node("dev/null", stat.S_IFCHR | 0o666, 1, 3)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    for a in applets:
        if a != "bin/busybox":
            c.symlink(a, "/bin/busybox")
    c.file("init", INIT.encode(), 0o755)
    c.file("etc/udhcpc.sh", UDHCPC_SCRIPT.encode(), 0o755)
    c.file("etc/profile", PROFILE.encode())
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\n")
    for name, data in modules:
        c.file(f"lib/modules/{name}.ko", data)
    c.file("etc/modules", "".join(f"{n}\n" for n, _ in modules).encode())
    return gzip.compress(c.finish(), compresslevel=6, mtime=0)


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(cache_dir: Path):
    with open(cache_dir / ".guest.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(cache_dir: Path, pvh: bool) -> tuple[Path, Path] | None:
    try:
        info = json.loads((cache_dir / "guest.json").read_text())
    except (OSError, ValueError):
        return None
    name = (pvh and info.get("pvh_kernel")) or info.get("kernel") or "-"
    kernel, initrd = cache_dir / name, cache_dir / info.get("initrd", "-")
    if info.get("key") == BUILD_KEY and kernel.is_file() and initrd.is_file():
        return kernel, initrd
    return None


def build_guest(cache_dir: Path, *, pvh: bool = True) -> tuple[Path, Path]:
    """Return (kernel, initrd) for the test guest, building them into cache_dir if needed.

    With ``pvh`` (the default) the kernel is the uncompressed ELF
    ``vmlinux-<kver>`` taken out of the bzImage: QEMU boots it through its
    PVH entry, which under TCG reaches /init 5-8 s sooner than the
    compressed ``vmlinuz-<kver>`` (returned with ``pvh=False``, or when
    the kernel has no PVH note).  Both go into ``<kernel>`` unchanged.
    """
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    hit = _cached(cache_dir, pvh)
    if hit:
        return hit
    with _locked(cache_dir):
        hit = _cached(cache_dir, pvh)
        if hit:
            return hit
        package = kernel_package()
        debs = sorted(cache_dir.glob(f"{package}_*.deb"))
        deb = debs[-1] if debs else _download(package, cache_dir)
        vmlinuz, kver, modules = _collect_modules(deb)
        kernel = cache_dir / f"vmlinuz-{kver}"
        initrd = cache_dir / f"initrd-cm-guest-{kver}-{BUILD_KEY}.img"
        files = [(kernel, vmlinuz), (initrd, _build_initramfs(modules))]
        elf = _vmlinux_from_bzimage(vmlinuz)
        vmlinux = cache_dir / f"vmlinux-{kver}" if elf else None
        if elf:
            files.append((vmlinux, elf))
        for path, data in files:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        info = {"package": package, "deb": deb.name, "kver": kver, "kernel": kernel.name,
                "pvh_kernel": vmlinux.name if vmlinux else None,
                "initrd": initrd.name, "key": BUILD_KEY, "modules": [m for m, _ in modules]}
        tmp = cache_dir / "guest.json.tmp"
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        os.replace(tmp, cache_dir / "guest.json")
        # drop stale builds of older keys/kernels (keep the .deb of the current package only)
        for old in cache_dir.iterdir():
            if (old.name.startswith(("initrd-cm-guest-", "vmlinuz-", "vmlinux-"))
                    and old not in (kernel, initrd, vmlinux)):
                old.unlink(missing_ok=True)
            elif old.suffix == ".deb" and old != deb:
                old.unlink(missing_ok=True)
        return (vmlinux if pvh and vmlinux else kernel), initrd


def build_seed_iso(path: Path, hostname: str, instance_id: str,
                   user_data: str = "#cloud-config\n{}\n",
                   network_config: str | None = None) -> Path:
    """Write a NoCloud seed ISO (volume label ``cidata``, Rock Ridge + Joliet names)."""
    import pycdlib

    meta = f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"
    files = [("METADATA.;1", "meta-data", meta), ("USERDATA.;1", "user-data", user_data)]
    if network_config is not None:
        files.append(("NETCONF.;1", "network-config", network_config))
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="cidata", joliet=3, rock_ridge="1.09")
    for iso_name, long_name, text in files:
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), "/" + iso_name, rr_name=long_name,
                   joliet_path="/" + long_name)
    path = Path(path)
    iso.write(str(path))
    iso.close()
    return path


def seed_disk_xml(seed: str, transport: str = "cdrom", *, pool: str | None = None) -> str:
    """Disk XML for the seed. ``seed`` is a file path, or a volume name when ``pool`` is given.

    transport: ``cdrom`` (SATA CD-ROM, works on i440fx and q35), ``ide-cdrom``
    (i440fx only) or ``virtio`` (read-only virtio disk).
    """
    if pool:
        source = f"<source pool={quoteattr(pool)} volume={quoteattr(seed)}/>"
        dtype = "volume"
    else:
        source = f"<source file={quoteattr(str(seed))}/>"
        dtype = "file"
    device, target = {
        "cdrom": ("cdrom", "<target dev='sda' bus='sata'/>"),
        "ide-cdrom": ("cdrom", "<target dev='hdc' bus='ide'/>"),
        "virtio": ("disk", "<target dev='vdb' bus='virtio'/>"),
    }[transport]
    return (f"<disk type='{dtype}' device='{device}'><driver name='qemu' type='raw'/>"
            f"{source}{target}<readonly/></disk>")


def domain_xml(name: str, kernel: Path, initrd: Path, seed_disk: str, console_log: Path, *,
               memory_mib: int = 128, vcpus: int = 1, network: str | None = None,
               cmdline: str = "console=ttyS0 panic=-1 quiet") -> str:
    """A TCG domain that boots kernel+initrd directly, with the seed disk and a logged serial console."""
    nic = (f"<interface type='network'><source network={quoteattr(network)}/>"
           f"<model type='virtio'/></interface>") if network else ""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{escape(str(kernel))}</kernel>
    <initrd>{escape(str(initrd))}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    {seed_disk}
    {nic}
    <serial type='pty'>
      <log file={quoteattr(str(console_log))} append='off'/>
      <target port='0'/>
    </serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""
