"""Guests that run known synthetic workloads, for the monitoring tests (real QEMU under TCG).

The busybox guest of :mod:`tests.e2e.guest` with a second initramfs archive
appended (the kernel unpacks both; later files win): its own ``/init`` and the
``virtio_balloon`` module, so the balloon reports the guest's memory.  The
kernel command line picks the workload, which starts at boot and runs until
the guest is destroyed:

``cm.work=cpu``   a busy loop on every online CPU (hot-added CPUs come online and get one);
``cm.work=disk``  direct-I/O writes and reads of the raw data disk ``/dev/vda``;
``cm.work=drip``  a light, steady disk load: each second 64 KiB written (direct, then flushed) and read back;
``cm.work=mem``   fills a tmpfs until 40 MiB stay free (closer, and the guest's OOM killer panics it), then idles;
``cm.work=send``  streams zeros with nc to ``cm.peer`` port 5000 (``cm.ip`` on eth0);
``cm.work=recv``  accepts those streams (``cm.ip`` on eth0);
``cm.work=idle``  nothing.

The console prints ``cm-guest: work=<kind> started`` once the workload runs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import time
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.e2e import guest

# The base guest's first lines (PATH, /proc, /sys, /dev, quiet console), then this guest's own.
PREAMBLE = guest.INIT[:guest.INIT.index("say()")]
INIT = PREAMBLE + r"""
mkdir -p /dev/shm
mount -t tmpfs -o size=95% tmpfs /dev/shm
say() { echo "cm-guest: $*" > /dev/console; }
for m in $(cat /etc/modules) virtio_balloon; do insmod "/lib/modules/$m.ko" 2>/dev/null; done
for w in $(cat /proc/cmdline); do
    case "$w" in cm.*=*) k=${w%%=*}; k=${k#cm.}; eval "cm_$k=\${w#*=}" ;; esac
done
ip link set lo up
if [ -n "$cm_ip" ]; then ip addr add "$cm_ip" dev eth0; ip link set eth0 up; fi
spin() { while :; do :; done; }
online=1
cpus() {   # bring hot-added CPUs online and give each new one a busy loop when the work is cpu
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
        [ -f "$c/online" ] && [ "$(cat "$c/online")" = 0 ] && echo 1 > "$c/online"
    done
    n=$(grep -c ^processor /proc/cpuinfo)
    while [ "$cm_work" = cpu ] && [ "$online" -lt "$n" ]; do spin & online=$((online + 1)); done
}
case "$cm_work" in
cpu)  spin & ;;
disk) (while :; do
          dd if=/dev/zero of=/dev/vda bs=256k count=64 oflag=direct 2>/dev/null
          dd if=/dev/vda of=/dev/null bs=256k count=64 iflag=direct 2>/dev/null
      done) & ;;
drip) (while :; do
          dd if=/dev/zero of=/dev/vda bs=4k count=16 oflag=direct conv=fsync 2>/dev/null
          dd if=/dev/vda of=/dev/null bs=4k count=16 iflag=direct 2>/dev/null
          sleep 1
      done) & ;;
mem)  meminfo() { sed -n "s/^$1: *\([0-9]*\).*/\1/p" /proc/meminfo; }
      last=0   # the balloon takes its share after boot: wait until the guest's memory stops shrinking
      while [ "$(meminfo MemTotal)" != "$last" ]; do last=$(meminfo MemTotal); sleep 2; done
      dd if=/dev/zero of=/dev/shm/fill bs=1M count=$(($(meminfo MemFree) / 1024 - 40)) 2>/dev/null ;;
send) (while :; do
          ping -c 1 -W 1 "$cm_peer" >/dev/null 2>&1 || continue
          dd if=/dev/zero bs=64k count=100000 2>/dev/null | nc "$cm_peer" 5000
          sleep 0.2
      done) & ;;
recv) (while :; do nc -l -p 5000 > /dev/null; done) & ;;
esac
say "work=$cm_work started"
(while :; do setsid cttyhack sh -l; sleep 1; done) &
while :; do cpus; sleep 1; done
"""
KEY = hashlib.sha256(INIT.encode() + guest.BUILD_KEY.encode()).hexdigest()[:12]
BALLOON = "virtio_balloon"


def _overlay(deb: Path) -> bytes:
    """The appended archive: /init and the balloon driver."""
    modules = guest._scan_deb(deb, {BALLOON})["modules"]
    cpio = guest._Cpio()
    cpio.file("init", INIT.encode(), 0o755)
    if BALLOON in modules:
        cpio.file(f"lib/modules/{BALLOON}.ko", modules[BALLOON])
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def build(cache: Path) -> tuple[Path, Path]:
    """(kernel, initrd) of the workload guest, built once into ``cache``."""
    kernel, base = guest.build_guest(cache)
    initrd = Path(cache) / f"initrd-cm-monitor-{KEY}.img"
    if not initrd.is_file():
        info = json.loads((Path(cache) / "guest.json").read_text())
        overlay = _overlay(Path(cache) / info["deb"])
        tmp = initrd.with_name(initrd.name + f".{os.getpid()}")
        tmp.write_bytes(base.read_bytes() + overlay)
        os.replace(tmp, initrd)
    return kernel, initrd


def data_disk(path: Path, mib: int = 64) -> Path:
    with open(path, "wb") as fh:
        fh.truncate(mib << 20)
    return path


def domain_xml(name: str, kernel: Path, initrd: Path, work: str, disk: Path, console_log: str, *,
               network: str = "", ip: str = "", peer: str = "", memory_mib: int = 256, max_memory_mib: int = 384,
               vcpus: int = 1, max_vcpus: int = 2) -> str:
    """A TCG guest running ``work``, with a balloon reporting every second and room to hot-add CPU and memory."""
    args = f"console=ttyS0 panic=-1 quiet cm.work={work}" + (f" cm.ip={ip}" if ip else "") \
        + (f" cm.peer={peer}" if peer else "")
    nic = (f"<interface type='network'><source network={quoteattr(network)}/><model type='virtio'/></interface>"
           if network else "")
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{max_memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu current='{vcpus}'>{max_vcpus}</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>{escape(str(kernel))}</kernel><initrd>{escape(str(initrd))}</initrd>
      <cmdline>{escape(args)}</cmdline></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file={quoteattr(str(disk))}/>
      <target dev='vda' bus='virtio'/></disk>
    {nic}
    <serial type='pty'><log file={quoteattr(console_log)} append='off'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='virtio'><stats period='1'/></memballoon>
  </devices>
</domain>
"""


def wait_started(log: Path, timeout: float = 240) -> float:
    """Wait for the guest to say its workload runs; return the time it was seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if "started" in log.read_text(errors="replace"):
                return time.time()
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no 'work=... started' on {log} within {timeout:g} s")
