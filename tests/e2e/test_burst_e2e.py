"""End-to-end: `cm slurm burst` grows a real Slurm cluster with real VMs running slurmd.

Real slurmctld + munged + a static slurmd, two private libvirtds + QEMU (TCG) on one network,
and cm as slurmctld's ResumeProgram/SuspendProgram/ResumeFailProgram (see
tests/e2e/elastic_lab.py).  The cluster is enabled by name as a cluster cm launched: cm reads and
writes its slurm.conf and runs Slurm's commands over ssh, through a real sshd in the namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from tests.infra.procs import wait_for
from tests.e2e.elastic_lab import CLOUD, JOB_TIMEOUT, ElasticLab, burst_status, job_in_guest, lab_with_head, ok

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, libvirtd)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "qemu-system-x86_64", "slurmctld", "slurmd",
                                                         "munged", "dnsmasq")),
                       reason="e2e: run scripts/install-system-packages.sh"),
]
libvirt = pytest.importorskip("libvirt")
pytest.importorskip("pycdlib")

PORT = 24500
SSH_PORT = 24590
NAME = "labc"       # the lab's Slurm as a cluster cm launched
SHORT = 120         # a ResumeTimeout a VM meets with its address on 2 busy cores (measured: 10-91 s)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    cm_home = tmp_path_factory.mktemp("elastic-cmhome")
    with lab_with_head("elastic", "elastic-burst", PORT, SSH_PORT, cm_home, NAME, second_host=True) as lab:
        yield lab
        for log in (cm_home / "elastic").glob("*/actions.log"):
            print(log.read_text())


def enable(lab: ElasticLab, *extra: str, target: tuple[str, ...] = (NAME,)) -> str:
    """`cm slurm burst enable` of the cluster cm launched (by its name: over ssh to its head)."""
    return ok(lab.cm("slurm", "burst", "enable", *target, "--cloud", CLOUD, "--max", "2",
                     "--image", "slurmd", "--flavor", "node", "--idle", "20", "--resume-timeout", "240",
                     "--suspend-timeout", "10", "--restart-command", f"slurmctld -f {lab.slurm.conf}", *extra))


def wait(what: str, check, timeout: float = 180):
    return wait_for(what, check, timeout, interval=1.0)


def status(lab: ElasticLab) -> dict[str, dict]:
    return burst_status(lab)


def test_a_job_boots_a_vm_runs_inside_it_and_the_idle_vm_goes(lab):
    cluster = lab.slurm.cluster_name
    shown = enable(lab, "-f", "json")
    assert json.loads(shown)["nodes"] == "cloud[1-2]" and json.loads(shown)["controller"] == lab.login.alias
    saved = json.loads((lab.cm_home / "elastic" / cluster / "state.json").read_text())
    assert saved["controller"] == lab.login.alias and saved["ssh"]["ssh_config"] == str(lab.login.ssh_config)
    key = lab.cm_home / "elastic" / cluster / "munge.key"   # from cm's secrets of the cluster it launched
    assert key.read_bytes() == (lab.slurm.tmp / "munge" / "munge.key").read_bytes()
    assert key.stat().st_mode & 0o777 == 0o600
    sinfo = ok(lab.slurm.run(["sinfo", "-h", "-p", "cloud", "-o", "%D %t"]))
    assert sinfo.split()[0] == "2" and "~" in sinfo   # two powered-down cloud nodes
    vm = f"{cluster}-cloud1".replace("_", "-")

    _, address, took = job_in_guest(lab, "cloud1")
    print(f"\nfirst job ran in the burst VM {took:.1f} s after srun")

    wait("the idle VM to be deleted", lambda: vm not in lab.domains(), timeout=240)
    after = status(lab)["cloud1"]
    assert after["vm"] == "" and after["node_hours"] > 0
    assert not [v for v in lab.volumes() if v.startswith(vm)]
    wait("the node to be powered down", lambda: "idle~" in ok(lab.slurm.run(["sinfo", "-h", "-n", "cloud1",
                                                                              "-o", "%t"])), timeout=120)

    # the same node again: a new VM, a new address, told to Slurm again; the job runs there
    _, second, _ = job_in_guest(lab, "cloud1")
    node = ok(lab.slurm.run(["scontrol", "show", "node", "cloud1"]))
    assert f"NodeAddr={second}" in node
    log = (lab.cm_home / "elastic" / cluster / "actions.log").read_text()
    assert len(re.findall(r"resume cloud1: VM \S+ at ", log)) == 2 and "suspend cloud1: idle; deleted VM" in log
    print(f"addresses: {address} then {second}")


def test_a_vm_whose_slurmd_never_registers_is_deleted_the_node_down_and_the_job_requeued(lab, tmp_path):
    """The VM boots and gets an address, but its slurmd holds a wrong munge key: ResumeTimeout passes,
    slurmctld calls cm's ResumeFailProgram, which deletes the VM and leaves the node DOWN with the reason."""
    cluster = lab.slurm.cluster_name
    # an existing cluster named by its slurm.conf on the controller host, reached by --controller (ssh)
    enable(lab, "--resume-timeout", str(SHORT), target=(str(lab.slurm.conf), "--controller", NAME))
    assert f"ResumeTimeout={SHORT}" in lab.slurm.conf.read_text()
    state = lab.cm_home / "elastic" / cluster / "state.json"
    data = json.loads(state.read_text())
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(b"w" * 1024)
    wrong.chmod(0o600)
    data["munge_key"] = str(wrong)
    state.write_text(json.dumps(data))
    vm = f"{cluster}-cloud2".replace("_", "-")
    job = ok(lab.slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud2", "--wrap", "hostname"])).strip()
    try:
        wait("the VM to boot and get its address",
             lambda: re.search(r"resume cloud2: VM \S+ at ", (state.parent / "actions.log").read_text()), timeout=SHORT)
        booted = time.monotonic()
        reason = wait("cloud2 to be marked down by cm's ResumeFailProgram",
                      lambda: re.search(r"Reason=(cm: slurmd did not register[^\n]*)",
                                        ok(lab.slurm.run(["scontrol", "show", "node", "cloud2"]))), timeout=180)
        print(f"\nnode down {time.monotonic() - booted:.1f} s after its VM had an address (ResumeTimeout={SHORT})")
        assert "ResumeTimeout" in reason.group(1)
        wait("the VM to be deleted", lambda: vm not in lab.domains(), timeout=60)
        assert not [v for v in lab.volumes() if v.startswith(vm)]
        shown = ok(lab.slurm.run(["scontrol", "show", "job", job]))
        assert re.search(r"JobState=PENDING", shown) and re.search(r"Restarts=[1-9]|Requeue=1", shown), shown
        row = status(lab)["cloud2"]
        assert row["slurm_state"].startswith("down") and row["vm"] == "" and "ResumeTimeout" in row["reason"]
    finally:
        lab.slurm.run(["scancel", job])
        enable(lab)   # the right key and the module's ResumeTimeout again


def test_a_vm_that_cannot_boot_leaves_the_node_down_the_job_requeued_and_nothing_on_the_cloud(lab):
    cluster = lab.slurm.cluster_name
    if not (lab.cm_home / "elastic" / cluster / "state.json").exists():
        enable(lab)
    state = lab.cm_home / "elastic" / cluster / "state.json"
    data = json.loads(state.read_text())
    data["flavor"] = "huge"   # the cloud has no such flavor: create_vm fails for real
    state.write_text(json.dumps(data))
    # DOWN (powered down) since the test above: an admin's resume makes it usable again at once
    ok(lab.slurm.run(["scontrol", "update", "nodename=cloud2", "state=resume"]))
    assert ok(lab.slurm.run(["sinfo", "-h", "-n", "cloud2", "-o", "%t"])).strip() == "idle~"
    try:
        job = ok(lab.slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud2", "--wrap", "hostname"])).strip()
        reason = wait("cloud2 to be marked down by cm",
                      lambda: re.search(r"Reason=(cm: boot failed[^\n]*)",
                                        ok(lab.slurm.run(["scontrol", "show", "node", "cloud2"]))), timeout=120)
        assert "unknown flavor 'huge'" in reason.group(1)
        shown = ok(lab.slurm.run(["scontrol", "show", "job", job]))
        assert re.search(r"JobState=PENDING", shown) and re.search(r"Restarts=[1-9]|Requeue=1", shown), shown
        vm = f"{cluster}-cloud2".replace("_", "-")
        assert vm not in lab.domains() and not [v for v in lab.volumes() if v.startswith(vm)]
        assert status(lab)["cloud2"]["slurm_state"].startswith("down")
    finally:
        data["flavor"] = "node"
        state.write_text(json.dumps(data))
        lab.slurm.run(["scancel", job])


BEFORE_BACKFILL: dict[str, str] = {}


def count_while_a_job_needs_n1(lab: ElasticLab) -> tuple[list[int], float, float]:
    """A low-priority job counts to 25 in virtual node cloud1 while a job runs 6 s on n1 (the same host);
    returns (the counts it printed, its largest pause in seconds, the seconds the n1 job took)."""
    import subprocess
    import threading

    lines: list[tuple[float, str]] = []
    low = subprocess.Popen(lab.slurm.ns_host.wrap(
        ["srun", "-p", "cloud", "-w", "cloud1", "sh", "-c",
         "i=0; while [ $i -lt 25 ]; do i=$((i+1)); echo $i; sleep 1; done"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.slurm.env, cwd=lab.slurm.tmp)
    reader = threading.Thread(target=lambda: [lines.append((time.monotonic(), ln.strip())) for ln in low.stdout])
    reader.start()
    try:
        wait("the low-priority job to count to 3", lambda: len(lines) >= 3, timeout=JOB_TIMEOUT)
        high_started = time.monotonic()
        high = lab.slurm.run(["srun", "-p", "debug", "-w", "n1", "sh", "-c", "echo high; sleep 6"], timeout=300)
        assert high.returncode == 0 and high.stdout.strip() == "high", high.stderr
        high_took = time.monotonic() - high_started
        assert low.wait(timeout=300) == 0, low.stderr.read()
    finally:
        if low.poll() is None:
            low.kill()
        reader.join(timeout=10)
    where = lab.cm_home / "elastic" / lab.slurm.cluster_name
    print(*((where / log).read_text()[-3000:] for log in ("actions.log", "programs.log", "agent.log")
            if (where / log).exists()))
    gap = max(b[0] - a[0] for a, b in zip(lines, lines[1:]))
    return [int(text) for _, text in lines if text.isdigit()], gap, high_took


def backfill(lab: ElasticLab, *words: str) -> dict:
    return json.loads(ok(lab.cm("slurm", "backfill", *words, "-f", "json")))


def test_backfill_checkpoints_the_virtual_node_while_a_job_needs_its_host(lab):
    """Policy checkpoint: the n1 job makes cm suspend the low job and save its VM; when it ends the VM
    is restored and the count carries on."""
    cluster = lab.slurm.cluster_name
    if not (lab.cm_home / "elastic" / cluster / "state.json").exists():
        enable(lab)
    BEFORE_BACKFILL["conf"] = lab.slurm.conf.read_text()
    shown = backfill(lab, "enable", str(lab.slurm.conf), "--virtual-partition", "cloud", "--max-pause", "900",
                     "--policy", "checkpoint")
    assert shown["slurmd_timeout"] == 900 and shown["policy"] == "checkpoint"
    assert f"PrologSlurmctld={shown['prolog']}" in lab.slurm.conf.read_text()

    counts, gap, high_took = count_while_a_job_needs_n1(lab)
    assert counts == list(range(1, 26)), counts   # every second once: paused, never restarted
    assert gap >= 6, f"the low-priority job never paused (largest gap {gap:.1f} s)"
    log = (lab.cm_home / "elastic" / cluster / "actions.log").read_text()
    assert re.search(r"backfill prolog job \d+ \(debug\) on n1: suspended job \d+ on cloud1", log), log
    assert "saved VM" in log and "restored VM" in log and re.search(r"resumed job \d+ on cloud1", log)
    rows = backfill(lab, "status", str(lab.slurm.conf))
    assert rows[0]["what"].startswith("policy checkpoint:") and any("restored VM" in r["what"] for r in rows)
    print(f"\nhigh-priority job took {high_took:.1f} s with the checkpoint; low job's largest pause {gap:.1f} s")


def test_backfill_migrates_the_virtual_node_to_a_free_host_and_its_job_runs_on(lab):
    """Policy migrate: host h2 of the cloud has no busy node, so the n1 job makes cm move cloud1's VM
    there live; the low job never stops counting.  Then backfill disable restores slurm.conf exactly."""
    cluster = lab.slurm.cluster_name
    vm = f"{cluster}-cloud1".replace("_", "-")
    shown = backfill(lab, "enable", NAME, "--virtual-partition", "cloud", "--max-pause", "900")
    assert shown["policy"] == "migrate"
    counts, gap, high_took = count_while_a_job_needs_n1(lab)
    assert counts == list(range(1, 26)), counts   # never restarted
    assert gap < 5, f"the low-priority job stood still {gap:.1f} s"
    log = (lab.cm_home / "elastic" / cluster / "actions.log").read_text()
    assert re.search(rf"backfill prolog job \d+ \(debug\) on n1: migrated VM {vm} of cloud1 from host n1 to free "
                     r"host h2", log), log
    assert vm in lab.second.domains()
    rows = backfill(lab, "status", NAME)
    assert rows[0]["what"].startswith("policy migrate:") and any("to free host h2" in r["what"] for r in rows)
    print(f"\nhigh-priority job took {high_took:.1f} s with the migration; low job's largest pause {gap:.1f} s")

    done = backfill(lab, "disable", NAME)
    assert done["backfill"] == "disabled"
    assert lab.slurm.conf.read_text() == BEFORE_BACKFILL["conf"]   # byte for byte
    config = ok(lab.slurm.run(["scontrol", "show", "config"]))   # the restarted slurmctld runs no hook
    assert re.search(r"^PrologSlurmctld\s*=\s*\(null\)", config, re.M), config


def test_disable_restores_the_static_configuration(lab):
    before_nodes = ok(lab.slurm.run(["sinfo", "-h", "-N", "-o", "%N"])).split()
    assert "cloud1" in before_nodes
    shown = ok(lab.cm("slurm", "burst", "disable", str(lab.slurm.conf), "-f", "json"))
    assert json.loads(shown)["removed"] == "cloud[1-2]"
    conf = lab.slurm.conf.read_text()
    assert "cm burst" not in conf and "cloud" not in conf.replace("Feature=cloud", "")
    nodes = wait("slurmctld without cloud nodes", lambda: ok(lab.slurm.run(["sinfo", "-h", "-N", "-o", "%N"])).split())
    assert nodes == ["n1"]
    assert not [d for d in lab.domains() if d.startswith(lab.slurm.cluster_name.replace("_", "-"))]   # both hosts
    assert ok(lab.slurm.run(["srun", "-N1", "hostname"], timeout=60)).strip()
