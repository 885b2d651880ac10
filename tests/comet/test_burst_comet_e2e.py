"""End to end: `cm slurm burst` grows a real Slurm cluster with the compute nodes of a Comet virtual cluster.

Everything lives in the elastic lab's network namespace (tests/e2e/elastic_lab.py): its private
libvirtd + QEMU (TCG) and NAT network, the bursting cluster's slurmctld (cm as its Resume/Suspend
programs), and the centre: a second real Slurm whose jobs are computesets, and cm's reference
Comet service (`cm comet serve`) on the namespace's loopback, powering the virtual cluster's
compute nodes on that libvirtd.  A job on the powered-down cloud node makes cm upload and attach
a NoCloud seed with the node's user-data, start a computeset; the compute node boots the slurmd
guest, its slurmd registers, the job runs inside it; idle, the computeset ends and it powers off.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.comet.nucleus import PASSWORDS, Nucleus, cancel_all, domain_template, prefix, write_config
from tests.e2e.elastic_lab import GATEWAY, NsHost, NsSlurm, burst_status, job_in_guest, lab_marks, ok, running_lab
from tests.infra.procs import wait_for

pytestmark = lab_marks("curl")
pytest.importorskip("libvirt")
pytest.importorskip("pycdlib")

PORT = 24700          # the bursting cluster's Slurm, inside the lab's namespace
CENTRE_PORT = 24710   # the centre's Slurm (its node n1 is the hypervisor host of the compute nodes)
SERVICE_PORT = 24720  # the Comet service, on the namespace's loopback
COMPUTES = "vm-vc1-[0-1]"
IDLE = 20

NETWORK = """
    <interface type='network'><mac address='$mac'/><source network='default'/><model type='virtio'/></interface>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """The lab, the centre's Slurm and the Comet service in its namespace, the comet cloud in cm; all stopped after."""
    cm_home = tmp_path_factory.mktemp("comet-burst-cmhome")
    tmp = Path(tempfile.mkdtemp(prefix="cm-comet-burst-"))  # not pytest's basetemp: concurrent runs prune it
    tmp.chmod(0o755)  # virtlogd writes the consoles here
    try:
        with running_lab("cometb", prefix("cometb-lab"), PORT, cm_home) as lab:
            host = NsHost(lab.libvirtd.netns, GATEWAY)
            template = tmp / "domain.xml"
            template.write_text(domain_template(lab.kernel, lab.initrd, NETWORK))
            with NsSlurm(prefix("cometb-ctr"), CENTRE_PORT, host) as centre:
                config = write_config(tmp / "service", SERVICE_PORT, centre.client_env, {"n1": lab.libvirtd.uri},
                                      computes=COMPUTES, compute_hosts="n1", domain_xml=template, memory=256)
                service = Nucleus(config, SERVICE_PORT, host).start()
                try:
                    ok(lab.cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}",
                              "username=alice", f"password={PASSWORDS['alice']}"))
                    ok(lab.cm("cloud", "add", "bobs", "--kind", "comet", f"base_url={service.base}",
                              "username=bob", f"password={PASSWORDS['bob']}"))
                    yield lab, centre, service
                finally:
                    cancel_all(centre)
                    service.stop()
                    for log in (cm_home / "elastic").glob("*/actions.log"):
                        print(log.read_text())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stamp(text: str) -> float:
    """A UTC time as cm's action log writes it (``2026-12-01T13:20:01Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _isos(lab, cloud: str = "comet") -> list[str]:
    return [i["name"] for i in json.loads(ok(lab.cm("comet", "iso", "list", "--cloud", cloud, "-f", "json")))]


def _plant_seed(lab, seed: str, compute: str) -> None:
    """What a cm killed mid-boot leaves: the node's seed on the service, attached to a compute node."""
    junk = lab.cm_home / "left.iso"
    junk.write_bytes(b"an older boot's seed\n")
    ok(lab.cm("comet", "iso", "upload", str(junk), "--isoname", seed.split("/", 1)[1], "--private", "--cloud", "comet"))
    ok(lab.cm("comet", "iso", "attach", seed, "vc1", compute, "--cloud", "comet"))


def test_a_job_starts_a_computeset_runs_in_the_compute_node_and_the_idle_node_powers_off(world):
    lab, centre, service = world
    cluster = lab.slurm.cluster_name
    shown = json.loads(ok(lab.cm("slurm", "burst", "enable", str(lab.slurm.conf), "--cloud", "comet", "--max", "1",
                                 "--comet-cluster", "vc1", "--walltime", "1h", "--idle", str(IDLE),
                                 "--resume-timeout", "240", "--suspend-timeout", "10",
                                 "--munge-key", str(lab.slurm.tmp / "munge" / "munge.key"),
                                 "--restart-command", f"slurmctld -f {lab.slurm.conf}", "-f", "json")))
    assert shown["nodes"] == "cloud1" and shown["comet_cluster"] == "vc1" and shown["allocation"] == "abc101"
    assert "SlurmctldParameters=idle_on_node_suspend,cloud_reg_addrs" in lab.slurm.conf.read_text()
    assert "~" in ok(lab.slurm.run(["sinfo", "-h", "-n", "cloud1", "-o", "%t"]))   # powered down
    iso = f"private/cm-seed-{cluster.replace('_', '-')}-cloud1.iso"
    _plant_seed(lab, iso, "vm-vc1-1")  # replaced by this boot, deleted when the node stops

    submitted = time.time()
    _, address, took = job_in_guest(lab, "cloud1", hostname="vm-vc1-0")
    row = burst_status(lab)["cloud1"]
    assert row["vm"] == "vc1/vm-vc1-0" and row["address"] == address
    cs_id = int(row["computeset"].split()[0])
    assert row["computeset"] == f"{cs_id} (running)"
    sets = json.loads(ok(lab.cm("comet", "computeset", str(cs_id), "--cloud", "comet", "-f", "json")))
    assert sets["state"] == "running" and sets["account"] == "abc101"
    assert ok(centre.run(["squeue", "-h", "-j", str(sets["job_id"]), "-o", "%T"])).strip() == "RUNNING"
    node = json.loads(ok(lab.cm("comet", "node", "info", "vc1", "vm-vc1-0", "--cloud", "comet", "-f", "json")))
    # the seed holds the munge key: alice's private ISO, 0600 at the service; bob (same cluster) never sees it
    assert node["iso"] == iso and iso in _isos(lab) and _isos(lab, "bobs") == []
    assert service.iso_files() == {f"private/alice/{iso.split('/')[1]}": 0o600}

    # where the time went (cm's log and Slurm's node times have whole seconds): Slurm waking cm, cm's seed, the
    # centre's computeset start, the guest's boot to slurmd registration, then Slurm starting the job
    log = (lab.cm_home / "elastic" / cluster / "actions.log").read_text()
    woke = _stamp(re.search(r"^(\S+) resume cloud1: starting a computeset", log, re.M).group(1))
    seed = float(re.search(r"seed \S+ attached in ([\d.]+) s", log).group(1))
    cs_took = float(re.search(r"computeset \d+ \(job \d+\) running ([\d.]+) s after", log).group(1))
    fields = dict(w.split("=", 1) for w in ok(lab.slurm.run(["scontrol", "-o", "show", "node", "cloud1"])).split()
                  if "=" in w)
    registered = datetime.fromisoformat(fields["SlurmdStartTime"]).timestamp()
    print(f"\nsrun to output {took:.1f} s: Slurm to cm's resume {woke - submitted:+.0f} s; cm's seed {seed:.1f} s; "
          f"computeset start (centre's Slurm + power on) {cs_took:.1f} s; guest boot to slurmd start "
          f"{registered - woke - seed - cs_took:.0f} s; slurmd start to job output {submitted + took - registered:.0f} s")

    wait_for("the idle node's computeset to end", lambda: json.loads(ok(lab.cm(
        "comet", "computeset", str(cs_id), "--cloud", "comet", "-f", "json")))["state"] in ("cancelled", "completed"),
             IDLE + 180, 2)
    assert not [d for d in lab.domains() if "vm-vc1-0" in d]   # powered off
    assert not ok(centre.run(["squeue", "-h", "-o", "%i"])).strip()
    after = burst_status(lab)["cloud1"]
    assert after["vm"] == "" and after["computeset"] == "" and after["node_hours"] > 0
    node = json.loads(ok(lab.cm("comet", "node", "info", "vc1", "vm-vc1-0", "--cloud", "comet", "-f", "json")))
    assert node["iso"] == "" and node["state"] in ("shutoff", "nostate")
    assert re.search(rf"suspend cloud1: idle; ended computeset {cs_id}; detached and deleted the seed {iso} of "
                     "vm-vc1-0,vm-vc1-1", (lab.cm_home / "elastic" / cluster / "actions.log").read_text())
    assert iso not in _isos(lab) and service.iso_files() == {}   # nothing with the key left on the service


def test_a_computeset_whose_walltime_ends_leaves_the_node_down_with_the_reason_and_nothing_running(world):
    """A one-minute walltime and a long idle time: the centre ends the computeset under the node; cm's
    watcher sets the node DOWN with the reason, detaches and deletes its seed, has Slurm power it down and
    exits; no guest, no centre job, no seed is left."""
    lab, centre, service = world
    cluster = lab.slurm.cluster_name
    ok(lab.cm("slurm", "burst", "enable", str(lab.slurm.conf), "--cloud", "comet", "--max", "1",
              "--walltime", "1m", "--idle", "600", "--resume-timeout", "240", "--suspend-timeout", "10",
              "--munge-key", str(lab.slurm.tmp / "munge" / "munge.key"),
              "--restart-command", f"slurmctld -f {lab.slurm.conf}"))
    job_in_guest(lab, "cloud1", hostname="vm-vc1-0")
    cs_id = int(burst_status(lab)["cloud1"]["computeset"].split()[0])
    reason = wait_for("cloud1 down with cm's reason", lambda: re.search(
        r"Reason=(cm: computeset \d+ ended[^\n]*)", ok(lab.slurm.run(["scontrol", "show", "node", "cloud1"]))), 180, 2)
    assert reason.group(1).startswith(f"cm: computeset {cs_id} ended: its walltime of 1 min ended"), reason.group(1)
    assert not [d for d in lab.domains() if "vm-vc1-0" in d]
    assert not ok(centre.run(["squeue", "-h", "-o", "%i"])).strip()
    # then powered down, the reason kept: the next job starts a fresh computeset
    wait_for("cloud1 powered down", lambda: ok(lab.slurm.run(["sinfo", "-h", "-n", "cloud1", "-o", "%t"])).strip()
             == "idle~", 120, 2)
    assert "cm: computeset" in ok(lab.slurm.run(["sinfo", "-h", "-n", "cloud1", "-o", "%E"]))
    row = burst_status(lab)["cloud1"]
    assert row["vm"] == "" and row["computeset"] == "" and "walltime of 1 min ended" in row["reason"]
    node = json.loads(ok(lab.cm("comet", "node", "info", "vc1", "vm-vc1-0", "--cloud", "comet", "-f", "json")))
    assert node["iso"] == "" and _isos(lab) == [] and service.iso_files() == {}
    folder = lab.cm_home / "elastic" / cluster
    wait_for("the watcher to exit", lambda: not (folder / "watch-cloud1.pid").exists(), 30)
    assert f"cloud1: computeset {cs_id} ended; node set DOWN" in (folder / "watch-cloud1.log").read_text()


def test_a_node_without_a_free_compute_node_is_down_with_the_reason_and_its_job_requeued(world):
    """Both compute nodes are in the user's own computesets: resume finds none free, the node goes DOWN
    with the reason, the batch job is requeued, and no computeset of cm's is left."""
    lab, centre, service = world
    taken = [json.loads(ok(lab.cm("comet", "start", "vc1", compute, "--walltime", "10m", "--no-wait",
                                  "--cloud", "comet", "-f", "json")))[0] for compute in ("vm-vc1-0", "vm-vc1-1")]
    before = {cs["id"] for cs in json.loads(ok(lab.cm("comet", "computeset", "--state", "all", "--cloud", "comet",
                                                      "-f", "json")))}
    job = ok(lab.slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud1", "--wrap", "hostname"])).strip()
    try:
        reason = wait_for("cloud1 down with cm's reason", lambda: re.search(
            r"Reason=(cm: boot failed[^\n]*)", ok(lab.slurm.run(["scontrol", "show", "node", "cloud1"]))), 120, 1)
        assert "virtual cluster vc1 has no free compute node" in reason.group(1)
        shown = ok(lab.slurm.run(["scontrol", "show", "job", job]))
        assert re.search(r"JobState=PENDING", shown) and re.search(r"Restarts=[1-9]|Requeue=1", shown), shown
        after = {cs["id"] for cs in json.loads(ok(lab.cm("comet", "computeset", "--state", "all", "--cloud",
                                                         "comet", "-f", "json")))}
        assert after == before   # cm started none
        row = burst_status(lab)["cloud1"]
        assert row["slurm_state"].startswith("down") and row["computeset"] == ""
    finally:
        lab.slurm.run(["scancel", job])
        for cs in taken:   # one host at the centre: the second waits in its queue until then
            ok(lab.cm("comet", "terminate", str(cs["id"]), "--cloud", "comet"))


def test_disable_deletes_a_seed_a_killed_cm_left(world):
    """A seed left on the service (cm killed between its upload and the node's record) goes with `burst disable`."""
    lab, centre, service = world
    seed = f"private/cm-seed-{lab.slurm.cluster_name.replace('_', '-')}-cloud1.iso"
    _plant_seed(lab, seed, "vm-vc1-0")
    assert _isos(lab) == [seed]
    ok(lab.cm("slurm", "burst", "disable", str(lab.slurm.conf), "--timeout", "60"))
    assert _isos(lab) == [] and service.iso_files() == {}
    node = json.loads(ok(lab.cm("comet", "node", "info", "vc1", "vm-vc1-0", "--cloud", "comet", "-f", "json")))
    assert node["iso"] == ""
