"""End-to-end: `cm slurm burst` grows a real Slurm cluster with real VMs running slurmd.

Real slurmctld + munged + a static slurmd, a private libvirtd + QEMU (TCG), and cm as
slurmctld's ResumeProgram/SuspendProgram/ResumeFailProgram (see tests/e2e/elastic_lab.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from tests.infra.procs import wait_for
from tests.e2e.elastic_lab import CLOUD, ElasticLab, running_lab

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
JOB_TIMEOUT = 300   # submission to output under TCG on 2 busy cores


def ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    cm_home = tmp_path_factory.mktemp("elastic-cmhome")
    with running_lab("elastic", "elastic-burst", PORT, cm_home) as lab:
        yield lab
        for log in (cm_home / "elastic").glob("*/actions.log"):
            print(log.read_text())


def enable(lab: ElasticLab, *extra: str) -> str:
    key = lab.slurm.tmp / "munge" / "munge.key"
    return ok(lab.cm("slurm", "burst", "enable", str(lab.slurm.conf), "--cloud", CLOUD, "--max", "2",
                     "--image", "slurmd", "--flavor", "node", "--idle", "20", "--resume-timeout", "240",
                     "--munge-key", str(key), "--restart-command", f"slurmctld -f {lab.slurm.conf}", *extra))


def wait(what: str, check, timeout: float = 180):
    return wait_for(what, check, timeout, interval=1.0)


def status(lab: ElasticLab) -> dict[str, dict]:
    rows = json.loads(ok(lab.cm("slurm", "burst", "status", str(lab.slurm.conf), "-f", "json")))
    return {r["node"]: r for r in rows}


def test_a_job_boots_a_vm_runs_inside_it_and_the_idle_vm_goes(lab):
    cluster = lab.slurm.cluster_name
    shown = enable(lab)
    assert "cloud[1-2]" in shown
    sinfo = ok(lab.slurm.run(["sinfo", "-h", "-p", "cloud", "-o", "%D %t"]))
    assert sinfo.split()[0] == "2" and "~" in sinfo   # two powered-down cloud nodes
    vm = f"{cluster}-cloud1".replace("_", "-")

    started = time.monotonic()
    first = lab.slurm.run(["srun", "-p", "cloud", "-N1", "-w", "cloud1", "sh", "-c", "hostname; ip -4 -o addr"],
                          timeout=JOB_TIMEOUT)
    took = time.monotonic() - started
    assert first.returncode == 0, first.stderr + lab.slurm.log("slurmctld")[-2000:]
    assert first.stdout.split()[0] == vm, first.stdout   # answered from inside the guest
    address = status(lab)["cloud1"]["address"]
    assert address and address in first.stdout
    print(f"\nfirst job ran in the burst VM {took:.1f} s after srun")

    wait("the idle VM to be deleted", lambda: vm not in lab.domains(), timeout=240)
    after = status(lab)["cloud1"]
    assert after["vm"] == "" and after["node_hours"] > 0
    assert not [v for v in lab.volumes() if v.startswith(vm)]
    wait("the node to be powered down", lambda: "idle~" in ok(lab.slurm.run(["sinfo", "-h", "-n", "cloud1",
                                                                              "-o", "%t"])), timeout=120)

    # the same node again: a new VM, a new address, told to Slurm again; the job runs there
    again = lab.slurm.run(["srun", "-p", "cloud", "-w", "cloud1", "sh", "-c", "hostname; ip -4 -o addr"],
                          timeout=JOB_TIMEOUT)
    assert again.returncode == 0, again.stderr + lab.slurm.log("slurmctld")[-2000:]
    second = status(lab)["cloud1"]["address"]
    assert second in again.stdout and again.stdout.split()[0] == vm
    node = ok(lab.slurm.run(["scontrol", "show", "node", "cloud1"]))
    assert f"NodeAddr={second}" in node
    log = (lab.cm_home / "elastic" / cluster / "actions.log").read_text()
    assert len(re.findall(r"resume cloud1: VM \S+ at ", log)) == 2 and "suspend cloud1: idle; deleted VM" in log
    print(f"addresses: {address} then {second}")


def test_a_vm_that_cannot_boot_leaves_the_node_down_the_job_requeued_and_nothing_on_the_cloud(lab):
    cluster = lab.slurm.cluster_name
    if not (lab.cm_home / "elastic" / cluster / "state.json").exists():
        enable(lab)
    state = lab.cm_home / "elastic" / cluster / "state.json"
    data = json.loads(state.read_text())
    data["flavor"] = "huge"   # the cloud has no such flavor: create_vm fails for real
    state.write_text(json.dumps(data))
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


def test_backfill_checkpoints_the_virtual_node_while_a_job_needs_its_host(lab):
    """A low-priority job counts in virtual node cloud1; a job for n1 (the same host) makes cm
    suspend it and save its VM; when that job ends the VM is restored and the count carries on."""
    import subprocess
    import threading

    cluster = lab.slurm.cluster_name
    if not (lab.cm_home / "elastic" / cluster / "state.json").exists():
        enable(lab)
    shown = json.loads(ok(lab.cm("slurm", "backfill", "enable", str(lab.slurm.conf), "--virtual-partition", "cloud",
                                 "--max-pause", "900", "-f", "json")))
    assert shown["slurmd_timeout"] == 900
    assert f"PrologSlurmctld={shown['prolog']}" in lab.slurm.conf.read_text()

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
    where = lab.cm_home / "elastic" / cluster
    print((where / "actions.log").read_text()[-3000:], (where / "programs.log").read_text()[-3000:])
    counts = [int(text) for _, text in lines if text.isdigit()]
    assert counts == list(range(1, 26)), counts   # every second once: paused, never restarted
    gap = max(b[0] - a[0] for a, b in zip(lines, lines[1:]))
    assert gap >= 6, f"the low-priority job never paused (largest gap {gap:.1f} s)"
    log = (lab.cm_home / "elastic" / cluster / "actions.log").read_text()
    assert re.search(r"backfill prolog job \d+ \(debug\) on n1: suspended job \d+ on cloud1", log), log
    assert "saved VM" in log and "restored VM" in log and re.search(r"resumed job \d+ on cloud1", log)
    rows = json.loads(ok(lab.cm("slurm", "backfill", "status", str(lab.slurm.conf), "-f", "json")))
    assert rows[0]["what"].startswith("policy:") and any("restored VM" in r["what"] for r in rows)
    print(f"\nhigh-priority job took {high_took:.1f} s with the checkpoint; low job's largest pause {gap:.1f} s")


def test_disable_restores_the_static_configuration(lab):
    before_nodes = ok(lab.slurm.run(["sinfo", "-h", "-N", "-o", "%N"])).split()
    assert "cloud1" in before_nodes
    shown = ok(lab.cm("slurm", "burst", "disable", str(lab.slurm.conf), "-f", "json"))
    assert json.loads(shown)["removed"] == "cloud[1-2]"
    conf = lab.slurm.conf.read_text()
    assert "cm burst" not in conf and "cloud" not in conf.replace("Feature=cloud", "")
    nodes = wait("slurmctld without cloud nodes", lambda: ok(lab.slurm.run(["sinfo", "-h", "-N", "-o", "%N"])).split())
    assert nodes == ["n1"]
    assert not [d for d in lab.domains() if d.startswith(lab.slurm.cluster_name.replace("_", "-"))]
    assert ok(lab.slurm.run(["srun", "-N1", "hostname"], timeout=60)).strip()
