"""A real Debian 12 guest image, built offline from Debian's packages with debootstrap and cached.

``ensure_image() -> GuestImage``
    Returns the cached image for the current recipe, building it first when
    missing.  Concurrent test runs build it once: the build holds a lock
    file and publishes the finished directory with one rename.  The
    directory (``~/.cache/cm-tests/guest/debian12-<recipe hash>/``) holds:

    * ``disk.qcow2``: an ext4 filesystem with no partition table (``/dev/vda``);
    * ``vmlinuz`` and ``initrd.img``, for direct kernel boot with ``cmdline``;
    * ``cmdline``: ``root=/dev/vda rw console=ttyS0 net.ifnames=0``;
    * ``build.json``: how long the build took and how big the results are.

    So ``cm image add NAME DIRECTORY`` takes the directory as it is.

``debian_image`` (pytest fixture, session scope): ``ensure_image()``, or a
skip naming what is missing (not root, no debootstrap).

The guest: debootstrap's ``minbase`` plus systemd, udev, cloud-init (NoCloud
only), openssh-server, sudo, dbus (systemd-logind handles the ACPI power
button, so `cm vm stop` works), Slurm (slurmd, slurmctld, slurm-client),
munge, the NFS server and client, iproute2 and ifupdown.  Trimmed for speed
under software emulation (see RUNS-HERE.md): only the kernel modules a
virtio guest needs, a small initramfs, no docs/man/locales/package cache,
no periodic timers, ds-identify told NoCloud is the source, and the Slurm, munge and NFS services disabled with their SysV
scripts removed (a launcher starts them from cloud-init's ``bootcmd`` with
``systemctl enable --now --no-block``).  cloud-init makes fresh ed25519 ssh
host keys on first boot.  The image's munge key is shared by every guest
built from it: clusters must write their own.

The downloaded packages are cached separately (``debs-<hash>.tgz``, keyed
by the package list only), so a change to the trimming rebuilds in seconds
rather than minutes.  ``CM_TESTS_CACHE`` moves the whole cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
PACKAGES = (
    "systemd-sysv", "udev", "dbus", "cloud-init", "python3-cffi-backend", "openssh-server", "sudo",
    "slurmd", "slurmctld", "slurm-client", "munge", "nfs-kernel-server", "nfs-common",
    "iproute2", "ifupdown", "linux-image-amd64",
)
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0"

# Kernel modules kept (with what they depend on): virtio devices, the root
# filesystem, the seed CD-ROM, NFS, the power button, binfmt_misc and a few
# that containers and clusters use.  Everything else goes.
KEEP_MODULES = (
    "virtio_pci", "virtio_blk", "virtio_net", "virtio_rng", "virtio_balloon", "virtio_console",
    "ext4", "isofs", "sr_mod", "ahci", "ata_piix", "sd_mod", "loop", "squashfs", "overlay", "fuse",
    "nfs", "nfsv3", "nfsv4", "nfsd", "binfmt_misc", "autofs4", "button", "evdev", "e1000", "bridge", "veth", "tun",
    "crc32c_generic", "crc32c_intel", "sch_fq_codel", "af_packet", "rpcsec_gss_krb5",
)
# Modules the initramfs needs to mount /dev/vda.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")

CLOUD_CFG = """\
# cm test image: NoCloud seeds only, and what makes cloud-init fast under emulation
datasource_list: [NoCloud, None]
ssh_genkeytypes: [ed25519]
ssh_quiet_keygen: true
ssh:
  emit_keys_to_console: false
no_ssh_fingerprints: true
grub_dpkg:
  enabled: false
locale: C.UTF-8
"""

NODOC = """\
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
"""

# ds-identify (a long shell script under emulation) need not guess: NoCloud is always the source.
DS_IDENTIFY = "policy: enabled\n"

# Run inside the new root (chroot) after debootstrap; $KVER is the kernel version.
CONFIGURE = r"""
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo '/dev/vda / ext4 rw,relatime,errors=remount-ro 0 1' > /etc/fstab
echo debian > /etc/hostname
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > /etc/hosts
printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' > /etc/network/interfaces
mkdir -p /etc/network/interfaces.d
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id /etc/ssh/ssh_host_*
rm -rf /var/lib/cloud/*

# services a launcher starts itself (SysV scripts make `systemctl enable` slow)
for svc in slurmd slurmctld munge nfs-kernel-server nfs-common rpcbind; do
    systemctl disable "$svc" >/dev/null 2>&1 || true
    update-rc.d -f "$svc" remove >/dev/null 2>&1 || true
    rm -f "/etc/init.d/$svc"
done
systemctl disable nfs-server.service rpcbind.service rpcbind.socket >/dev/null 2>&1 || true
# periodic jobs that only cost time in a short-lived test guest
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer dpkg-db-backup.timer fstrim.timer \
            e2scrub_all.timer e2scrub_reap.service logrotate.timer nfs-blkmap.service \
            modprobe@drm.service modprobe@efi_pstore.service modprobe@dm_mod.service; do
    systemctl mask "$unit" >/dev/null 2>&1 || true
done

# a small initramfs: only what mounts /dev/vda
printf 'MODULES=list\nCOMPRESS=zstd\n' > /etc/initramfs-tools/conf.d/cm-test-image.conf
printf '%s\n' $INITRAMFS_MODULES > /etc/initramfs-tools/modules
depmod -a "$KVER"
update-initramfs -u -k "$KVER" >/dev/null

rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /var/cache/apt/*.bin /var/lib/apt/lists/* \
       /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/* /usr/lib/udev/hwdb.d/* \
       /var/cache/debconf/*-old /var/log/*.log /var/log/apt/* /tmp/* /root/.bash_history
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
"""


class GuestImageError(RuntimeError):
    pass


@dataclass(frozen=True)
class GuestImage:
    """A built image: the files cm needs, and how it was built."""

    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str
    build: dict


def cache_root() -> Path:
    """``$CM_TESTS_CACHE``/guest, else ~/.cache/cm-tests/guest of the real user (tests change HOME)."""
    base = os.environ.get("CM_TESTS_CACHE") or str(Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "cm-tests")
    return Path(base) / "guest"


def _hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def recipe_key() -> str:
    """What decides the image's contents; any change builds a new one."""
    return _hash(SUITE, PACKAGES, CMDLINE, KEEP_MODULES, INITRAMFS_MODULES, CLOUD_CFG, NODOC, DS_IDENTIFY, CONFIGURE,
                 "disk-v1")


def debian_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb.debian.org when none is configured)."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in sources:
        with contextlib.suppress(OSError):
            text = path.read_text()
            m = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", text, re.M) or \
                re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s+\w+", text, re.M)
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(argv: list[str], what: str, timeout: float = 1800, **kwargs) -> str:
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                          **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise GuestImageError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def _contained(argv: list[str]) -> list[str]:
    """Run in fresh mount, pid and uts namespaces: chroot mounts and stray daemons die with it."""
    return ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", *argv]


def _debootstrap_args() -> list[str]:
    return ["--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE]


def _package_tarball(root: Path) -> Path:
    """Debian's packages for the recipe, downloaded once (debootstrap --make-tarball)."""
    tarball = root / f"debs-{_hash(SUITE, PACKAGES)}.tgz"
    with _locked(root / "debs.lock"):
        if tarball.exists():
            return tarball
        work = root / f"debs-work-{os.getpid()}"
        partial = tarball.with_suffix(f".partial-{os.getpid()}")
        try:
            _run(["debootstrap", f"--make-tarball={partial}", *_debootstrap_args(), str(work), debian_mirror()],
                 "debootstrap --make-tarball (downloading Debian packages)")
            os.replace(partial, tarball)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            partial.unlink(missing_ok=True)
    return tarball


def _bootstrap(tree: Path, tarball: Path) -> None:
    _run(_contained(["debootstrap", f"--unpack-tarball={tarball}", *_debootstrap_args(), str(tree),
                     debian_mirror()]), "debootstrap")


def _kernel_version(tree: Path) -> str:
    versions = sorted(p.name for p in (tree / "lib/modules").iterdir())
    if len(versions) != 1:
        raise GuestImageError(f"expected one kernel in the image, found {versions}")
    return versions[0]


def _module_closure(moddir: Path, wanted: tuple[str, ...]) -> set[str]:
    """Relative paths of the wanted modules and everything they depend on (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(p).name).replace("-", "_"): p for p in deps}
    keep: set[str] = set()
    todo = [by_name[n] for n in wanted if n in by_name]   # a built-in module has no file: nothing to keep
    while todo:
        path = todo.pop()
        if path not in keep:
            keep.add(path)
            todo.extend(deps.get(path, []))
    return keep


def _trim_modules(tree: Path, kver: str) -> None:
    moddir = tree / "lib/modules" / kver
    keep = _module_closure(moddir, KEEP_MODULES)
    for path in (moddir / "kernel").rglob("*.ko*"):
        if str(path.relative_to(moddir)) not in keep:
            path.unlink()
    for directory in sorted((moddir / "kernel").rglob("*"), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def _configure(tree: Path, kver: str) -> None:
    (tree / "etc/cloud/cloud.cfg.d/90-cm-test-image.cfg").write_text(CLOUD_CFG)
    (tree / "etc/dpkg/dpkg.cfg.d/01-cm-nodoc").write_text(NODOC)
    (tree / "etc/cloud/ds-identify.cfg").write_text(DS_IDENTIFY)
    _trim_modules(tree, kver)
    script = (f"KVER={kver}\nINITRAMFS_MODULES='{' '.join(INITRAMFS_MODULES)}'\n"
              "mount -t proc proc /proc\n" + CONFIGURE + "umount /proc\n")
    _run(_contained(["chroot", str(tree), "/bin/sh", "-c", script]), "configuring the image (chroot)")


def _tree_bytes(tree: Path) -> int:
    return int(_run(["du", "-sb", "--one-file-system", str(tree)], "du").split()[0])


def _make_disk(tree: Path, out: Path) -> int:
    """An ext4 filesystem holding the tree (no partition table), as qcow2; returns the tree's size."""
    used = _tree_bytes(tree)
    size_mib = (int(used * 1.25) >> 20) + 512           # room for logs, keys and small installs
    raw = out.with_suffix(".raw")
    try:
        _run(["mkfs.ext4", "-q", "-F", "-L", "cmroot", "-d", str(tree), str(raw), f"{size_mib}M"], "mkfs.ext4 -d")
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)], "qemu-img convert")
    finally:
        raw.unlink(missing_ok=True)
    return used


def _build(target: Path, root: Path) -> dict:
    started = time.monotonic()
    tarball = _package_tarball(root)
    downloaded = time.monotonic()
    tree = target / "tree"
    try:
        _bootstrap(tree, tarball)
        bootstrapped = time.monotonic()
        kver = _kernel_version(tree)
        _configure(tree, kver)
        shutil.copyfile(tree / f"boot/vmlinuz-{kver}", target / "vmlinuz")
        shutil.copyfile(tree / f"boot/initrd.img-{kver}", target / "initrd.img")
        tree_bytes = _make_disk(tree, target / "disk.qcow2")
    finally:
        # /proc or /dev may still be mounted if a step died: umount, never delete through them
        for sub in ("proc", "sys", "dev/pts", "dev"):
            subprocess.run(["umount", "-l", str(tree / sub)], capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    (target / "cmdline").write_text(CMDLINE + "\n")
    done = time.monotonic()
    return {"recipe": recipe_key(), "suite": SUITE, "kernel_version": kver,
            "seconds": {"download": round(downloaded - started, 1), "debootstrap": round(bootstrapped - downloaded, 1),
                        "configure_and_disk": round(done - bootstrapped, 1), "total": round(done - started, 1)},
            "bytes": {"packages": tarball.stat().st_size, "tree": tree_bytes,
                      "qcow2": (target / "disk.qcow2").stat().st_size,
                      "vmlinuz": (target / "vmlinuz").stat().st_size,
                      "initrd": (target / "initrd.img").stat().st_size},
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _image(directory: Path) -> GuestImage:
    return GuestImage(directory=directory, disk=directory / "disk.qcow2", kernel=directory / "vmlinuz",
                      initrd=directory / "initrd.img", cmdline=(directory / "cmdline").read_text().strip(),
                      build=json.loads((directory / "build.json").read_text()))


def missing_tools() -> list[str]:
    return [t for t in ("debootstrap", "mkfs.ext4", "qemu-img", "unshare", "chroot") if shutil.which(t) is None]


def ensure_image(root: Path | None = None) -> GuestImage:
    """The cached image of the current recipe, built (once, under a lock) when missing."""
    if os.geteuid() != 0:
        raise GuestImageError("building the Debian guest image needs root (debootstrap, chroot)")
    if missing_tools():
        raise GuestImageError(f"missing {', '.join(missing_tools())}: run scripts/install-system-packages.sh")
    root = root or cache_root()
    final = root / f"debian12-{recipe_key()}"
    with _locked(root / f"debian12-{recipe_key()}.lock"):
        if (final / "build.json").exists():
            return _image(final)
        work = root / f"debian12-{recipe_key()}.building-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            info = _build(work, root)
            (work / "build.json").write_text(json.dumps(info, indent=2) + "\n")
            shutil.rmtree(final, ignore_errors=True)      # a half-published one from a killed run
            os.replace(work, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _prune(root, keep=final)
    return _image(final)


def _prune(root: Path, keep: Path, spare: int = 1) -> None:
    """Drop images of older recipes (the newest ``spare`` stay, for runs of an older checkout)."""
    built = sorted((p for p in root.glob("debian12-*") if p.is_dir() and p != keep and (p / "build.json").exists()),
                   key=lambda p: (p / "build.json").stat().st_mtime, reverse=True)
    for old in built[spare:]:
        shutil.rmtree(old, ignore_errors=True)


try:
    import pytest
except ImportError:  # the module also runs outside pytest (benchmarks, by hand)
    pytest = None

if pytest is not None:
    @pytest.fixture(scope="session")
    def debian_image() -> GuestImage:
        """The cached Debian 12 guest image (built on first use: several minutes)."""
        if os.geteuid() != 0 or missing_tools():
            pytest.skip("the Debian guest image needs root and " + " ".join(missing_tools() or ["root"]))
        return ensure_image()


if __name__ == "__main__":
    image = ensure_image()
    print(json.dumps({"directory": str(image.directory), **image.build}, indent=2))
