"""End to end on real libvirtd + QEMU and a real Slurm with accounting: computesets boot real guests.

Start a 2-node computeset: its Slurm job runs, both guests boot (their consoles
show the busybox guest's lines), terminate: the job leaves squeue, the guests
are gone, the usage is in `sacct -A abc101`; a one-minute walltime ends by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.comet.conftest import cancel_all, squeue
from tests.comet.nucleus import PASSWORDS, Nucleus, wait_for, write_config
from tests.e2e import guest, libvirtd
from tests.infra.slurm import SlurmCluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "virtlogd", "qemu-system-x86_64", "slurmctld",
                                                         "slurmdbd", "mariadbd")),
                       reason="e2e: run scripts/install-system-packages.sh"),
]
libvirt = pytest.importorskip("libvirt", reason="e2e: pip install libvirt-python")

SERVICE_PORT = 23504
TOKEN = f"{os.getpid() % 100000}"
NODES = f"c{TOKEN}vm-[0-1]"
BOOT_TIMEOUT = 240  # TCG on 2 shared cores

DOMAIN = """<domain type='qemu'>
  <name>$domain</name>
  <memory unit='MiB'>$memory</memory>
  <vcpu>$cpus</vcpu>
  <os><type arch='x86_64'>hvm</type><kernel>@KERNEL@</kernel><initrd>@INITRD@</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
  <features><acpi/></features>
  <on_crash>destroy</on_crash>
  <devices>
    $iso_disk
    <serial type='pty'><log file='$console_log' append='off'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


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
    template.write_text(DOMAIN.replace("@KERNEL@", str(kernel)).replace("@INITRD@", str(initrd)))
    seed = guest.build_seed_iso(tmp / "seed.iso", "comet-node", f"comet-{TOKEN}")
    slurm = SlurmCluster("comet-e", 23540, nodes=2, accounting=True, accounts={"abc101": ["root"]})
    service = None
    try:
        slurm.start()
        config = write_config(tmp / "service", SERVICE_PORT, slurm.client_env, {"n1": uri, "n2": uri},
                              computes=NODES, compute_hosts="n[1-2]", domain_xml=template)
        service = Nucleus(config, SERVICE_PORT).start()
        yield {"conn": conn, "slurm": slurm, "service": service, "seed": seed}
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
