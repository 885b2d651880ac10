"""End to end on real libvirtd + QEMU and a real Slurm with accounting: computesets boot real guests.

Start a 2-node computeset: its Slurm job runs, both guests boot (their consoles
show the busybox guest's lines), terminate: the job leaves squeue, the guests
are gone, the usage is in `sacct -A abc101`; a one-minute walltime ends by itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.comet.conftest import squeue
from tests.comet.nucleus import (PASSWORDS, Nucleus, cancel_all, domain_template, free_ports, prefix, wait_for,
                                 write_config)
from tests.e2e import guest, libvirtd
from tests.infra.slurm import SlurmCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64", "slurmctld",
                                                         "slurmdbd", "mariadbd")),
                       reason="e2e: run scripts/install-system-packages.sh"),
]
libvirt = pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")

TOKEN = f"{os.getpid() % 100000}"
NODES = f"c{TOKEN}vm-[0-1]"
BOOT_TIMEOUT = 240  # TCG on 2 shared cores



@pytest.fixture(scope="module")
def world():
    """libvirtd, the guest, Slurm with slurmdbd + MariaDB (account abc101) and the service; all stopped after."""
    cache = Path(os.environ.get("CM_E2E_CACHE", Path.home() / ".cache" / "cm-e2e"))
    kernel, initrd = guest.build_guest(cache)
    uri = libvirtd.start_libvirtd()
    conn = libvirt.open(uri)
    tmp = Path(tempfile.mkdtemp(prefix="cm-comet-e2e-"))  # not pytest's basetemp: concurrent runs prune it
    tmp.chmod(0o755)
    template = tmp / "domain.xml"
    template.write_text(domain_template(kernel, initrd))
    seed = guest.build_seed_iso(tmp / "seed.iso", "comet-node", f"comet-{TOKEN}")
    slurm = SlurmCluster(prefix("comet-e"), free_ports(5), nodes=2, accounting=True, accounts={"abc101": ["root"]})
    service = None
    try:
        slurm.start()
        port = free_ports()
        config = write_config(tmp / "service", port, slurm.client_env, {"n1": uri, "n2": uri},
                              computes=NODES, compute_hosts="n[1-2]", domain_xml=template)
        service = Nucleus(config, port).start()
        yield {"conn": conn, "slurm": slurm, "service": service, "seed": seed, "tmp": tmp, "uri": uri}
    finally:
        if slurm.procs:
            cancel_all(slurm)
        if service:
            service.stop()
        slurm.stop()
        for dom in conn.listAllDomains():
            if f"c{TOKEN}vm-" in dom.name() and dom.isActive():
                dom.destroy()
        conn.close()
        libvirtd.stop_libvirtd()
        shutil.rmtree(tmp, ignore_errors=True)


def _running(conn, name: str) -> bool:
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def _json(result):
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_computeset_boots_real_guests_and_terminate_ends_them(cm, world):
    conn, slurm, service = world["conn"], world["slurm"], world["service"]
    assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}", "username=alice",
              f"password={PASSWORDS['alice']}").code == 0
    assert cm("default", "cloud=comet").code == 0
    assert cm("comet", "iso", "upload", str(world["seed"])).code == 0
    assert cm("comet", "iso", "attach", "seed.iso", "vc1", NODES).code == 0
    cs = _json(cm("comet", "start", "vc1", "--count", "2", "--walltime", "30m", "-f", "json"))[0]
    assert cs["state"] == "running" and squeue(slurm) == {cs["job_id"]: "RUNNING"}
    names = [f"c{TOKEN}vm-0", f"c{TOKEN}vm-1"]
    assert all(_running(conn, f"vc1-{n}") for n in names)
    for name in names:  # each console shows its guest booting and ready
        try:
            wait_for(f"{name} ready on its console",
                       lambda n=name: "cm-guest: ready" in cm("comet", "console", "vc1", n).out, BOOT_TIMEOUT, 2)
        except TimeoutError:
            shown = cm("comet", "console", "vc1", name)
            logs = {p.name: p.stat().st_size for p in (service.config.parent / "state" / "consoles").iterdir()}
            raise AssertionError(f"console of {name}: {shown.code} {shown.out[-500:]!r} {shown.err!r}; logs {logs}")
        assert "cm-guest: hostname=comet-node" in cm("comet", "console", "vc1", name).out
    # both nodes were powered on at once: each began before either was done (QEMU starts take seconds)
    log = service.log.read_text()
    began = [log.index(f"computeset {cs['id']}: powering on {n}") for n in names]
    done = [log.index(f"computeset {cs['id']}: {n} powered on in") for n in names]
    assert max(began) < min(done), log[-2000:]
    assert cm("comet", "terminate", str(cs["id"])).code == 0
    wait_for("the job gone from squeue", lambda: cs["job_id"] not in squeue(slurm), 60)
    assert not any(_running(conn, f"vc1-{n}") for n in names)
    wait_for("cancelled", lambda: _json(cm("comet", "computeset", str(cs["id"]), "-f", "json"))["state"]
               == "cancelled", 60)

    def usage() -> str:
        out = slurm.run(["sacct", "-A", "abc101", "-X", "-n", "-P", "-o", "JobID,Account,State,NNodes"]).stdout
        return next((ln for ln in out.splitlines() if ln.startswith(cs["job_id"] + "|") and "RUNNING" not in ln), "")

    job_id, account, state, nodes = wait_for("usage in sacct -A abc101", usage, 60).split("|")
    assert account == "abc101" and state.startswith("CANCELLED") and nodes == "2"


def test_a_one_minute_walltime_ends_by_itself(cm, world):
    conn, slurm, service = world["conn"], world["slurm"], world["service"]
    assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}", "username=alice",
              f"password={PASSWORDS['alice']}").code == 0
    cs = _json(cm("comet", "start", "vc1", f"c{TOKEN}vm-0", "--walltime", "1m", "--cloud", "comet", "-f", "json"))[0]
    assert cs["state"] == "running" and _running(conn, f"vc1-c{TOKEN}vm-0")
    done = wait_for("the walltime to end the computeset",
                      lambda: (c := _json(cm("comet", "computeset", str(cs["id"]), "--cloud", "comet", "-f",
                                             "json")))["state"] in ("completed", "failed", "cancelled") and c, 240, 3)
    assert done["state"] == "completed"
    assert not _running(conn, f"vc1-c{TOKEN}vm-0")
    assert cs["job_id"] not in squeue(slurm)
    assert "JobState=TIMEOUT" in slurm.run(["scontrol", "-o", "show", "job", cs["job_id"]]).stdout


def test_after_kill_9_no_guest_runs_without_its_job(cm, world):
    """The service dies; the job is cancelled meanwhile; the restarted service powers the orphaned guest off."""
    conn, slurm, service = world["conn"], world["slurm"], world["service"]
    assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}", "username=alice",
              f"password={PASSWORDS['alice']}").code == 0
    cs = _json(cm("comet", "start", "vc1", f"c{TOKEN}vm-1", "--walltime", "20m", "--cloud", "comet", "-f", "json"))[0]
    domain = f"vc1-c{TOKEN}vm-1"
    assert cs["state"] == "running" and _running(conn, domain)
    service.kill9()
    slurm.run(["scancel", cs["job_id"]])
    wait_for("the job gone", lambda: cs["job_id"] not in squeue(slurm), 60)
    assert _running(conn, domain)  # nobody was there to power it off
    service.start()
    wait_for("the orphaned guest powered off", lambda: not _running(conn, domain), 60)
    final = _json(cm("comet", "computeset", str(cs["id"]), "--cloud", "comet", "-f", "json"))
    assert final["state"] == "cancelled"


def cdrom(uri: str, domain: str) -> str:
    """The running domain's CD-ROM source as libvirt reports it (`virsh domblklist`; '-' when empty)."""
    out = subprocess.run(["virsh", "-c", uri, "domblklist", domain, "--details"], capture_output=True, text=True,
                         check=True).stdout
    return next(line.split()[-1] for line in out.splitlines() if line.split()[1:2] == ["cdrom"])


def console_shows(cm, node: str, text: str, timeout: float = 60) -> None:
    """Wait until `cm comet console` of the node shows ``text``; fail with what it shows."""
    try:
        wait_for(f"{text!r} on the console of {node}", lambda: text in cm("comet", "console", "vc1", node).out,
                 timeout, 2)
    except TimeoutError:
        raise AssertionError(f"{text!r} not on the console of {node}:\n"
                             f"{cm('comet', 'console', 'vc1', node).out[-1500:]}") from None


def type_on_console(conn, domain: str, line: str) -> None:
    """Type a line into the guest's serial console (its root shell): into the pty libvirt gave its serial port."""
    import xml.etree.ElementTree as ET

    pty = ET.fromstring(conn.lookupByName(domain).XMLDesc()).find("devices/serial/source").get("path")
    fd = os.open(pty, os.O_RDWR | os.O_NOCTTY)
    try:
        time.sleep(1.5)  # QEMU reads a pty only once it noticed someone opened it (it looks every second)
        os.write(fd, line.encode() + b"\r")
        time.sleep(1)
    finally:
        os.close(fd)


def answered(cm, conn, domain: str, node: str, line: str, answer: str, timeout: float = 90) -> None:
    """Type ``line`` until the console shows ``answer`` (the shell may drop what comes while it asks the terminal)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        type_on_console(conn, domain, line)
        try:
            return console_shows(cm, node, answer, 4)
        except AssertionError:
            continue
    console_shows(cm, node, answer, 0)


def test_an_iso_swaps_live_on_a_running_node_and_the_guest_reads_it(cm, world):
    conn, slurm, service = world["conn"], world["slurm"], world["service"]
    node, domain = f"c{TOKEN}vm-0", f"vc1-c{TOKEN}vm-0"
    assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}", "username=alice",
              f"password={PASSWORDS['alice']}").code == 0
    assert cm("default", "cloud=comet").code == 0
    assert cm("comet", "iso", "upload", str(world["seed"])).code == 0
    assert cm("comet", "iso", "attach", "seed.iso", "vc1", node).code == 0
    cs = _json(cm("comet", "start", "vc1", node, "--walltime", "30m", "-f", "json"))[0]
    assert cs["state"] == "running" and _running(conn, domain)
    console_shows(cm, node, "cm-guest: ready", BOOT_TIMEOUT)
    shown = cm("vm", "console", node, "--lines", "400")  # the provider contract's console: the same text
    assert shown.code == 0 and "cm-guest: hostname=comet-node" in shown.out, (shown.out[-500:], shown.err)
    public = service.config.parent / "state" / "iso" / "public"
    assert cdrom(world["uri"], domain) == str(public / "seed.iso")
    # the guest mounted its seed at boot (the tray is locked): the swap must still reach the running domain
    swap = guest.build_seed_iso(world["tmp"] / "swap.iso", "swapped-node", f"swap-{TOKEN}")
    uploaded = cm("comet", "iso", "upload", str(swap))
    assert uploaded.code == 0 and uploaded.out.strip() == "uploaded public/swap.iso (md5 checked by the service)"
    assert hashlib.md5((public / "swap.iso").read_bytes()).digest() == hashlib.md5(swap.read_bytes()).digest()
    attached = cm("comet", "iso", "attach", "swap.iso", "vc1", node, "-f", "json")
    assert attached.code == 0, (attached.out, attached.err)
    assert cdrom(world["uri"], domain) == str(public / "swap.iso")
    assert _json(cm("comet", "node", "info", "vc1", node, "-f", "json"))["iso"] == "public/swap.iso"
    answered(cm, conn, domain, node, "umount /mnt/seed 2>/dev/null; mkdir -p /mnt/swap && mount -t iso9660 -o ro "
             "/dev/sr0 /mnt/swap && echo swap-seen=$(sed -n 's/^local-hostname: //p' /mnt/swap/meta-data); "
             "umount /mnt/swap", "swap-seen=swapped-node")
    detached = cm("comet", "iso", "detach", "vc1", node, "-f", "json")
    assert detached.code == 0, (detached.out, detached.err)
    assert cdrom(world["uri"], domain) == "-"
    assert _json(cm("comet", "node", "info", "vc1", node, "-f", "json"))["iso"] == ""
    answered(cm, conn, domain, node, "mount -t iso9660 -o ro /dev/sr0 /mnt/swap 2>/dev/null || echo no-media-$((1+1))",
             "no-media-2")
    assert cm("comet", "terminate", str(cs["id"])).code == 0
    wait_for("the job gone from squeue", lambda: cs["job_id"] not in squeue(slurm), 60)
    assert not _running(conn, domain)


def _free_nodes(service, auth: dict[str, str]) -> None:
    """End the computesets earlier tests left running, and wait until their nodes are free."""
    import requests

    def active() -> list[dict]:
        return requests.get(f"{service.base}/v1/computeset/", headers=auth, timeout=30,
                            params={"state": ["created", "submitted", "running", "ending"]}).json()

    for cs in active():
        if cs["state"] in ("submitted", "running"):
            requests.put(f"{service.base}/v1/computeset/{cs['id']}/shutdown", headers=auth, timeout=30)
    wait_for("no active computeset", lambda: not active(), 60)


def _log_position(text: str, line: str) -> int:
    assert line in text, f"{line!r} not in the service log:\n{text[-3000:]}"
    return text.index(line)


def test_two_computesets_started_together_power_on_at_the_same_time(world):
    import threading

    import requests

    service, conn = world["service"], world["conn"]
    token = service.token()
    auth = {"Authorization": f"Token {token}"}
    _free_nodes(service, auth)
    names = [f"c{TOKEN}vm-0", f"c{TOKEN}vm-1"]
    created: dict[str, dict] = {}

    def start(name: str) -> None:
        created[name] = requests.post(f"{service.base}/v1/computeset/", headers=auth, timeout=60,
                                      json={"cluster": "vc1", "computes": name, "walltime_mins": "30"}).json()

    threads = [threading.Thread(target=start, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    def state(cs_id: int) -> str:
        return requests.get(f"{service.base}/v1/computeset/{cs_id}/", headers=auth, timeout=30).json()["state"]

    ids = [created[n]["id"] for n in names]
    wait_for("both computesets running", lambda: all(state(i) == "running" for i in ids), BOOT_TIMEOUT)
    assert all(_running(conn, f"vc1-{n}") for n in names)
    log = service.log.read_text()
    began = [_log_position(log, f"computeset {i}: powering on {n}") for i, n in zip(ids, names)]
    done = [_log_position(log, f"computeset {i}: {n} powered on in") for i, n in zip(ids, names)]
    assert max(began) < min(done), log[-3000:]  # each began before the other was done: they overlapped
    for cs_id in ids:
        assert requests.put(f"{service.base}/v1/computeset/{cs_id}/shutdown", headers=auth,
                            timeout=30).status_code == 200
    wait_for("both cancelled", lambda: all(state(i) == "cancelled" for i in ids), 60)
    assert not any(_running(conn, f"vc1-{n}") for n in names)


def test_a_computeset_cancelled_while_its_node_powers_on_leaves_no_guest_and_the_next_gets_the_node(world):
    import requests

    service, conn = world["service"], world["conn"]
    auth = {"Authorization": f"Token {service.token()}"}
    _free_nodes(service, auth)
    name = f"c{TOKEN}vm-0"

    def start() -> dict | str:
        return requests.post(f"{service.base}/v1/computeset/", headers=auth, timeout=60,
                             json={"cluster": "vc1", "computes": name, "walltime_mins": "30"}).json()

    def shown(cs_id: int) -> dict:
        return requests.get(f"{service.base}/v1/computeset/{cs_id}/", headers=auth, timeout=30).json()

    first = start()
    wait_for("the first power-on under way", lambda: f"computeset {first['id']}: powering on {name}"
             in service.log.read_text(), 60, 0.02)
    # the service's lock is free while QEMU starts (seconds under TCG): the cancel is answered meanwhile
    assert requests.put(f"{service.base}/v1/computeset/{first['id']}/shutdown", headers=auth,
                        timeout=30).json()["state"] == "ending"
    # its power-on, checked again once libvirt was done, found it ended: it powered the new guest off again, or
    # (the cancel destroyed the guest while QEMU started) recorded that the guest never came up
    ended = (f"computeset {first['id']} is ending: powering {name} off again",
             f"computeset {first['id']} is ending: {name} did not power on")
    wait_for("the first power-on's outcome", lambda: any(line in service.log.read_text() for line in ended), 60)
    wait_for("the first cancelled", lambda: shown(first["id"])["state"] == "cancelled", 60)
    log = service.log.read_text()
    assert not _running(conn, f"vc1-{name}")
    assert shown(first["id"])["computes"][0]["state"] == "shutoff"
    second = start()  # the node is free again, and powers on once, for the new computeset
    assert isinstance(second, dict), second
    wait_for("the second running", lambda: shown(second["id"])["state"] == "running", BOOT_TIMEOUT)
    assert _running(conn, f"vc1-{name}") and shown(second["id"])["computes"][0]["state"] == "active"
    assert service.log.read_text().count(f"powering on {name}") == log.count(f"powering on {name}") + 1
    assert requests.put(f"{service.base}/v1/computeset/{second['id']}/shutdown", headers=auth,
                        timeout=30).status_code == 200
    wait_for("the second cancelled", lambda: shown(second["id"])["state"] == "cancelled", 60)
    assert not _running(conn, f"vc1-{name}")
