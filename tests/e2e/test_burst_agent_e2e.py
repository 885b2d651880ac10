"""End-to-end: bursting a cluster whose controller host has no cm, through the agent.

The elastic lab (tests/e2e/elastic_lab.py): real slurmctld + munged + a static slurmd and a private
libvirtd + QEMU (TCG) in one namespace; the controller host is a real sshd there whose sessions see
cm's home empty (cm cannot run there), named with ``--controller``.  slurmctld's programs only
spool requests; the agent on "the user's machine" boots the busybox slurmd guest and deletes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.infra.procs import wait_for
from tests.e2e.elastic_lab import CLOUD, burst_status, job_in_guest, lab_with_head, ok
from tests.e2e.test_burst_e2e import count_while_a_job_needs_n1

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (namespaces, libvirtd)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("libvirtd", "qemu-system-x86_64", "slurmctld", "slurmd",
                                                         "munged", "dnsmasq", "unshare")),
                       reason="e2e: run scripts/install-system-packages.sh"),
]
pytest.importorskip("libvirt")
pytest.importorskip("pycdlib")

PORT = 21610
SSH_PORT = 21690
NAME = "farc"        # the lab's Slurm as a cluster cm launched: the --controller
SPOOL = Path("/var/spool/cm-burst")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    cm_home = tmp_path_factory.mktemp("bwagent-cmhome")
    with lab_with_head("bwagent", "bwagent-s", PORT, SSH_PORT, cm_home, NAME, hide=(cm_home,)) as lab:
        try:
            yield lab
        finally:
            folder = cm_home / "elastic" / lab.slurm.cluster_name
            lab.cm("slurm", "burst", "disable", str(lab.slurm.conf), "--timeout", "30")   # if the test did not
            for log in ("agent.log", "actions.log"):
                print(f"--- {log}\n" + ((folder / log).read_text() if (folder / log).exists() else "(none)"))
            shutil.rmtree(SPOOL / lab.slurm.cluster_name, ignore_errors=True)


def test_a_job_bursts_through_the_agent_and_disable_stops_it_and_restores_the_file(lab):
    cluster = lab.slurm.cluster_name
    folder = lab.cm_home / "elastic" / cluster
    before = lab.slurm.conf.read_text()
    assert lab.login.ssh(f"test -r {lab.cm_home / 'cm.yaml'}").returncode == 1   # no cm home on the controller
    shown = json.loads(ok(lab.cm("slurm", "burst", "enable", str(lab.slurm.conf), "--controller", NAME,
                                 "--cloud", CLOUD, "--max", "1", "--image", "slurmd", "--flavor", "node",
                                 "--idle", "20", "--resume-timeout", "240", "--suspend-timeout", "10",
                                 "--restart-command", f"slurmctld -f {lab.slurm.conf}",
                                 "--munge-key", str(lab.slurm.tmp / "munge" / "munge.key"), "-f", "json")))
    assert shown["agent"] and shown["controller"] == lab.login.alias
    assert burst_status(lab)["cloud1"]["agent"] == f"running (pid {shown['agent']})"
    resume = SPOOL / cluster / "resume"
    assert f"ResumeProgram={resume}" in lab.slurm.conf.read_text() and "python" not in resume.read_text()
    vm = f"{cluster}-cloud1".replace("_", "-")

    _, address, took = job_in_guest(lab, "cloud1")   # answered from inside the guest
    print(f"\njob ran in the burst VM {took:.1f} s after srun, through the spool and the agent")

    wait_for("the idle VM to be deleted", lambda: vm not in lab.domains(), 240, 1.0)
    assert not list((SPOOL / cluster / "requests").glob("*.req"))   # every request handled and removed
    log = (folder / "agent.log").read_text()
    assert re.search(r"resume cloud1: requested [\d.]+ s ago", log) and "resume cloud1: done" in log, log
    assert re.search(r"suspend cloud1: requested [\d.]+ s ago", log) and "suspend cloud1: done" in log, log
    actions = (folder / "actions.log").read_text()
    assert f"resume cloud1: VM {vm} at {address}" in actions and f"suspend cloud1: idle; deleted VM {vm}" in actions

    done = json.loads(ok(lab.cm("slurm", "burst", "disable", str(lab.slurm.conf), "-f", "json")))
    assert done["removed"] == "cloud1"
    assert lab.slurm.conf.read_text() == before   # byte for byte
    assert "agent stopped" in (folder / "agent.log").read_text()
    assert not (SPOOL / cluster).exists() and not (folder / "agent.pid").exists()
    assert ok(lab.slurm.run(["sinfo", "-h", "-N", "-o", "%N"])).split() == ["n1"]


def test_backfill_through_the_agent_checkpoints_the_virtual_node_while_a_job_needs_its_host(lab):
    """No cm on the controller host: the PrologSlurmctld only records the n1 job and waits; the agent suspends
    the low job, saves its VM and answers; the EpilogSlurmctld's record makes the agent restore both."""
    cluster = lab.slurm.cluster_name
    folder = lab.cm_home / "elastic" / cluster
    before = lab.slurm.conf.read_text()
    ok(lab.cm("slurm", "burst", "enable", str(lab.slurm.conf), "--controller", NAME, "--cloud", CLOUD, "--max", "1",
              "--image", "slurmd", "--flavor", "node", "--idle", "60", "--resume-timeout", "240",
              "--restart-command", f"slurmctld -f {lab.slurm.conf}",
              "--munge-key", str(lab.slurm.tmp / "munge" / "munge.key")))
    shown = json.loads(ok(lab.cm("slurm", "backfill", "enable", str(lab.slurm.conf), "--virtual-partition", "cloud",
                                 "--max-pause", "900", "--policy", "checkpoint", "-f", "json")))
    assert shown["prolog"] == str(SPOOL / cluster / "prolog") and "python" not in Path(shown["prolog"]).read_text()

    counts, gap, high_took = count_while_a_job_needs_n1(lab)
    assert counts == list(range(1, 26)), counts   # paused, never restarted
    assert gap >= 6, f"the low-priority job never paused (largest gap {gap:.1f} s)"
    log = (folder / "actions.log").read_text()
    assert re.search(r"backfill prolog job \d+ \(debug\) on n1: suspended job \d+ on cloud1", log), log
    assert "saved VM" in log and "restored VM" in log and re.search(r"resumed job \d+ on cloud1", log)
    agent_log = (folder / "agent.log").read_text()
    assert re.search(r"prolog n1: requested [\d.]+ s ago", agent_log) and "epilog n1: requested" in agent_log
    assert not list((SPOOL / cluster / "answers").iterdir())   # the prolog took its answer
    print(f"\nhigh-priority job took {high_took:.1f} s with the checkpoint through the agent; "
          f"low job's largest pause {gap:.1f} s")

    ok(lab.cm("slurm", "burst", "disable", str(lab.slurm.conf)))   # both blocks, one write
    assert lab.slurm.conf.read_text() == before
    assert not (SPOOL / cluster).exists()
