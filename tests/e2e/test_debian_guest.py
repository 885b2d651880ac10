"""End-to-end: a real Debian 12 guest, configured by real cloud-init, booted by `cm` on a private libvirtd.

The libvirtd, its NAT network and the guest live in a network namespace the
test makes (tests/infra/libvirtd_ns.py); the image is built from Debian's
packages once and cached (tests/infra/guest_image.py).  As a user would:
`cm cloud add lab --kind kvm uri=...`, `cm image add debian12 DIR`,
`cm vm boot --user-data FILE --network-config FILE --key KEY.pub`; the guest's
cloud-init writes a marker on its serial console that the test reads with
`cm vm console`; then ssh (from inside the namespace, with the key cm put in
the seed) runs `hostname` and shows the user-data arrived unchanged;
`cm vm delete` leaves no domain and no volume.  Run with
``python -m pytest -m e2e tests/e2e/test_debian_guest.py -s`` to see the timings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.infra.guest_image import debian_image  # noqa: F401  (a fixture)
from tests.infra.libvirtd_ns import private_libvirtd  # noqa: F401  (a fixture)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, debootstrap)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "qemu-system-x86_64", "ssh", "ssh-keygen")),
                       reason="e2e: libvirtd/qemu/ssh missing: run scripts/install-system-packages.sh"),
]
pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")

BOOT_TIMEOUT = 1800  # to cloud-init's final stage: 31 s idle (RUNS-HERE.md), 589 s seen here at load 12 on 2 cores
TOKEN = f"{os.getpid() % 100000}"
ADDRESS = "192.168.150.250"   # static, from the network-config; inside the test's namespace only

USER_DATA = f"""#cloud-config
# a launcher's kind of user-data: files, a command, and a readiness marker on the console
write_files:
- path: /etc/cm-e2e/token
  content: "{TOKEN}"
  permissions: '0644'
runcmd:
- [sh, -c, 'echo "cm-e2e: ready $(hostname) token=$(cat /etc/cm-e2e/token)" > /dev/ttyS0']
final_message: "cm-e2e: cloud-init final after $UPTIME s"
"""

NETWORK_CONFIG = f"""version: 2
ethernets:
  eth0:
    addresses: [{ADDRESS}/24]
    gateway4: 192.168.150.1
"""


def ok(result) -> str:
    assert result.code == 0, f"exit {result.code}\n{result.out}\n{result.err}"
    return result.out


def wait_console(cm_process, name: str, pattern: str, timeout: float) -> re.Match:
    """Poll `cm vm console` until the pattern shows; return the match."""
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = ok(cm_process("vm", "console", name, "--cloud", "lab"))
        found = re.search(pattern, text, re.M)
        if found:
            return found
        time.sleep(2)
    pytest.fail(f"no /{pattern}/ on {name}'s console within {timeout:g} s; it shows:\n{text[-4000:]}")


def ssh(daemon, key: Path, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """ssh tester@ADDRESS from inside the namespace with the key cm put in the seed."""
    return daemon.ssh(key, f"tester@{ADDRESS}", command, timeout)


def test_debian_guest_boots_configures_and_answers_ssh(cm_process, tmp_path, private_libvirtd, debian_image):
    daemon = private_libvirtd
    ok(cm_process("cloud", "add", "lab", "--kind", "kvm", *daemon.cloud_settings()))
    started = time.monotonic()
    ok(cm_process("image", "add", "debian12", str(debian_image.directory), "--cloud", "lab", timeout=600))
    print(f"\nimage add (upload {debian_image.disk.stat().st_size >> 20} MiB qcow2 + kernel + initrd): "
          f"{time.monotonic() - started:.1f} s")
    image = json.loads(ok(cm_process("image", "show", "debian12", "--cloud", "lab", "-f", "json")))
    assert image["format"] == "kernel+initrd+disk" and image["status"] == "active"

    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "user-data").write_text(USER_DATA)
    (tmp_path / "network-config").write_text(NETWORK_CONFIG)
    name = f"deb-{TOKEN}"
    boot_started = time.monotonic()
    booted = json.loads(ok(cm_process(
        "vm", "boot", "--cloud", "lab", "--name", name, "--image", "debian12", "--flavor", "small",
        "--key", f"{key}.pub", "--user-data", str(tmp_path / "user-data"),
        "--network-config", str(tmp_path / "network-config"), "-f", "json")))
    running = time.monotonic()
    assert booted[0]["state"] == "running" and booted[0]["result"] == "booted"
    try:
        conn = daemon.connect()
        try:
            xml = conn.lookupByName(name).XMLDesc(0)
        finally:
            conn.close()
        assert f"<cmdline>{debian_image.cmdline}</cmdline>" in xml and "<kernel>" in xml

        ready = wait_console(cm_process, name, r"^cm-e2e: ready (\S+) token=(\d+)", BOOT_TIMEOUT)
        marker_seen = time.monotonic()
        assert ready.groups() == (name, TOKEN)   # the hostname from cm's meta-data, the file from the user-data
        final = wait_console(cm_process, name, r"cm-e2e: cloud-init final after ([\d.]+) s", 300)
        print(f"cm vm boot returned (domain running): {running - boot_started:.1f} s; "
              f"console marker seen by `cm vm console`: {marker_seen - running:.1f} s after QEMU started; "
              f"guest uptime at cloud-init final: {float(final.group(1)):.1f} s")

        deadline = time.monotonic() + 120
        answer = ssh(daemon, key, "hostname")
        while answer.returncode != 0 and time.monotonic() < deadline:   # sshd may trail the marker a little
            time.sleep(2)
            answer = ssh(daemon, key, "hostname")
        assert answer.returncode == 0 and answer.stdout.strip() == name, answer.stderr
        arrived = ssh(daemon, key, "sudo cat /var/lib/cloud/instance/user-data.txt")
        assert arrived.returncode == 0 and arrived.stdout == USER_DATA, arrived.stderr
        status = ssh(daemon, key, "cloud-init status --long; systemctl is-system-running; systemctl --failed --no-legend")
        print(status.stdout.strip())
        assert "status: done" in status.stdout
    finally:
        deleted = cm_process("vm", "delete", name, "--cloud", "lab")
    assert deleted.code == 0 and deleted.err.strip() == "deleted 1 of 1", deleted.err
    conn = daemon.connect()
    try:
        assert name not in [d.name() for d in conn.listAllDomains()]
    finally:
        conn.close()
    assert daemon.volumes() == sorted(f"debian12.{part}" for part in ("cmdline", "disk", "initrd", "kernel"))
    assert not list(daemon.console_dir.glob(f"cm-{name}-*.console.log"))
    ok(cm_process("image", "delete", "debian12", "--cloud", "lab"))
    assert daemon.volumes() == []
