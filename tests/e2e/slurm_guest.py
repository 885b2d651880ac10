"""A tiny real guest that becomes a Slurm node: the busybox guest of :mod:`tests.e2e.guest` plus
slurmd, slurmstepd and munged with every library and plugin they load (RUNS-HERE: "slurmd
inside a real VM").

``build_slurm_guest(cache_dir) -> (kernel, initrd)`` builds (once, cached by content) a gzip'd
initramfs whose ``/init`` mounts the cgroup v1 layout slurmd expects, finds the NoCloud seed,
takes its hostname, gets an address by DHCP (``cm-guest: ip=ADDR`` on the console), and runs
the seed's user-data when it is a script, as cloud-init does: a ``#!`` file, or the
``text/x-shellscript`` part of a MIME multipart user-data.  It prints ``cm-guest: user-data
exit=N`` after the script, and powers off on the ACPI button.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

from tests.e2e import guest

BINARIES = ["/usr/sbin/slurmd", "/usr/sbin/slurmstepd", "/usr/sbin/munged", "/usr/bin/munge", "/usr/bin/unmunge"]
PLUGIN_DIR = Path("/usr/lib/x86_64-linux-gnu/slurm-wlm")

INIT = r"""#!/bin/sh
# /init of the cm slurmd test guest (busybox, PID 1)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run /var/run /var/log /var/spool /mnt/seed /etc/slurm /etc/munge
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
echo 4 > /proc/sys/kernel/printk
say() { printf '\ncm-guest: %s\n' "$*" > /dev/console; }
off() { say "powering off"; sync; poweroff -f; }
trap off TERM USR2 INT
for m in $(cat /etc/modules); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
# the cgroup v1 layout slurmd looks for (RUNS-HERE), including name=systemd
mount -t tmpfs cgroup /sys/fs/cgroup
for c in cpuset cpu,cpuacct memory devices freezer pids; do
    mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c 2>/dev/null
done
mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
for ev in /sys/class/input/event*; do
    [ -e "$ev/device/name" ] || continue
    case "$(cat "$ev/device/name")" in
    *"Power Button"*) (dd if="/dev/input/${ev##*/}" of=/dev/null bs=24 count=1 2>/dev/null; kill -USR2 1) & ;;
    esac
done
seed=""; i=0
while [ -z "$seed" ] && [ $i -lt 300 ]; do
    for dev in /dev/sr* /dev/vd* /dev/sd*; do
        [ -b "$dev" ] || continue
        [ "$(dd if="$dev" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || continue
        case "$(dd if="$dev" bs=8 skip=4101 count=4 2>/dev/null | tr -d ' ')" in
        cidata|CIDATA) seed=$dev; break ;;
        esac
    done
    [ -n "$seed" ] || { sleep 0.1; i=$((i + 1)); }
done
mount -t iso9660 -o ro "$seed" /mnt/seed || say "error=no seed"
name=$(sed -n 's/^local-hostname: *//p' /mnt/seed/meta-data | head -n 1)
[ -n "$name" ] && hostname "$name"
echo "127.0.0.1 localhost" > /etc/hosts
say "hostname=$(hostname)"
ip link set lo up
for nic in /sys/class/net/*; do
    n=${nic##*/}; [ "$n" = lo ] && continue
    udhcpc -i "$n" -s /etc/udhcpc.sh -x "hostname:$(hostname)" -b -t 30 -T 1 -A 1 >/dev/null 2>&1
done
i=0; while ! ip -4 addr show scope global | grep -q inet && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
ud=/mnt/seed/user-data
case "$(head -c 40 $ud)" in
'#!'*) cp $ud /run/user-script ;;
Content-Type:\ multipart*)
    awk '/^--/{part=0; body=0; next} /^Content-Type: text\/x-shellscript/{part=1; next}
         part && /^$/ {body=1; next} part && body {print}' $ud | base64 -d > /run/user-script ;;
esac
if [ -s /run/user-script ]; then
    chmod 700 /run/user-script
    /run/user-script > /dev/console 2>&1 < /dev/null
    say "user-data exit=$?"
fi
(while :; do setsid cttyhack sh -l; sleep 1; done) &
while :; do sleep 3600 & wait $!; done
"""


def _ldd(paths: list[str]) -> set[str]:
    """Every shared library the binaries and plugins load (their ldd closure)."""
    found: set[str] = set()
    out = subprocess.run(["ldd", *paths], capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        for word in parts:
            if word.startswith("/") and os.path.exists(word):
                found.add(word)
    return found


def _key(modules: list[str]) -> str:
    stamps = [f"{p}:{os.stat(p).st_size}" for p in [*BINARIES, *map(str, sorted(PLUGIN_DIR.glob("*.so")))]]
    text = "\0".join([INIT, guest.UDHCPC_SCRIPT, *modules, *stamps, "v1"])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _initramfs(modules: list[tuple[str, bytes]]) -> bytes:
    c = guest._Cpio()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "etc", "lib/modules",
              "root", "var/log", "var/spool", "var/run"):
        c.dir(d)
    c.node("dev/console", stat.S_IFCHR | 0o600, 5, 1)
    c.node("dev/null", stat.S_IFCHR | 0o666, 1, 3)
    busybox = guest._static_busybox()
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    real = {b.lstrip("/") for b in BINARIES}
    for a in applets:
        if a != "bin/busybox" and a not in real:
            c.symlink(a, "/bin/busybox")
    plugins = [str(p) for p in sorted(PLUGIN_DIR.glob("*.so"))]
    for path in sorted({*BINARIES, *plugins, *_ldd([*BINARIES, *plugins])}):
        resolved = os.path.realpath(path)
        c.file(path.lstrip("/"), Path(resolved).read_bytes(), 0o755)
    c.file("lib64/ld-linux-x86-64.so.2", Path(os.path.realpath("/lib64/ld-linux-x86-64.so.2")).read_bytes(), 0o755)
    c.file("init", INIT.encode(), 0o755)
    c.file("etc/udhcpc.sh", guest.UDHCPC_SCRIPT.encode(), 0o755)
    c.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nmunge:x:0:0:munge:/run:/bin/sh\n")
    c.file("etc/group", b"root:x:0:\nmunge:x:0:\n")
    c.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nhosts: files dns\n")
    for name, data in modules:
        c.file(f"lib/modules/{name}.ko", data)
    c.file("etc/modules", "".join(f"{n}\n" for n, _ in modules).encode())
    return gzip.compress(c.finish(), compresslevel=1, mtime=0)


def build_slurm_guest(cache_dir: Path) -> tuple[Path, Path]:
    """(kernel, initrd) of the slurmd guest, built into ``cache_dir`` when not there yet."""
    cache_dir = Path(cache_dir).resolve()
    kernel, _ = guest.build_guest(cache_dir)
    info = json.loads((cache_dir / "guest.json").read_text())
    with guest._locked(cache_dir):
        key = _key(info.get("modules", []))
        initrd = cache_dir / f"initrd-cm-slurmd-{key}.img"
        if not initrd.is_file():
            _, _, modules = guest._collect_modules(cache_dir / info["deb"])
            tmp = initrd.with_name(initrd.name + ".tmp")
            tmp.write_bytes(_initramfs(modules))
            os.replace(tmp, initrd)
            for old in cache_dir.glob("initrd-cm-slurmd-*.img"):
                if old != initrd:
                    old.unlink(missing_ok=True)
    return kernel, initrd
