"""`cm slurm burst` on a controller host without cm: spooled requests and the agent that handles them.

Real slurmctld + munged + slurmd (tests/infra/slurm.py) and a real sshd (tests/infra/sshd.py) on
loopback whose sessions do not see cm's home (so cm cannot run there); the controller is named with
``--controller``.  slurmctld runs the spool programs, the agent handles the request through ssh.
The cloud is libvirt's test driver, asked for a flavor it lacks: the boot fails for real (no VM, no
address for slurmctld to try), so the request's effect is the failure path: node DOWN with cm's
reason, set over ssh.
tests/e2e/test_burst_agent_e2e.py boots real VMs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from tests.infra.procs import wait_for  # noqa: E402
from tests.infra.slurm import SlurmCluster  # noqa: E402
from tests.infra.sshd import LoginHost  # noqa: E402
from tests.test_kvm import image, one_line  # noqa: E402,F401  (fixtures)
from tests.test_slurm_burst_ssh import record_launched  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sshd, slurmctld, mount namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("sshd", "slurmctld", "slurmd", "munged", "unshare")),
                       reason="run scripts/install-system-packages.sh"),
]
SPOOL = Path("/var/spool/cm-burst")


@pytest.fixture
def controller(cm_home):
    """Slurm and an sshd on loopback whose sessions see cm's home empty; recorded as cluster 'far'."""
    with SlurmCluster("bwatch-s", 21600, nodes=1) as slurm:
        with LoginHost("bwatch-l", 21650, env=slurm.client_env, hide=[cm_home]) as login:
            record_launched(cm_home, slurm, login, "far", {})
            yield slurm, login
            folder = cm_home / "elastic" / slurm.cluster_name
            _stop_agent(folder)
            for log in ("agent.log", "actions.log"):
                print(f"--- {log}", (folder / log).read_text() if (folder / log).exists() else "(none)")
            shutil.rmtree(SPOOL / slurm.cluster_name, ignore_errors=True)


def _stop_agent(folder: Path) -> None:
    try:
        os.kill(int((folder / "agent.pid").read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass


def agent_pid(cm, name: str) -> int | None:
    rows = json.loads(cm("slurm", "burst", "status", name, "-f", "json").out)
    found = re.fullmatch(r"running \(pid (\d+)\)", rows[0]["agent"])
    return int(found.group(1)) if found else None


def test_spooled_requests_survive_a_killed_agent_and_are_handled_once(cm, image, cm_home, controller):
    slurm, login = controller
    cluster = slurm.cluster_name
    before = slurm.conf.read_text()
    assert login.ssh(f"test -r {cm_home / 'cm.yaml'}").returncode == 1   # cm's home is not there: no cm on that host
    result = cm("slurm", "burst", "enable", str(slurm.conf), "--controller", "far", "--cloud", "local", "--max", "2",
                "--idle", "60", "--resume-timeout", "60", "--restart-command", f"slurmctld -f {slurm.conf}",
                "-f", "json")
    assert result.code == 0, result.err
    pid = json.loads(result.out)["agent"]
    assert pid and agent_pid(cm, cluster) == pid
    again = json.loads(cm("slurm", "burst", "agent", cluster, "-f", "json").out)   # one agent per cluster
    assert again["started"] is False and again["agent"] == pid
    conf = slurm.conf.read_text()
    program = SPOOL / cluster / "resume"
    assert f"ResumeProgram={program}" in conf and f"SuspendProgram={SPOOL / cluster / 'suspend'}" in conf
    text = program.read_text()
    assert text.startswith("#!/bin/sh") and "python" not in text and "cm.main" not in text   # dependency-free
    requests = SPOOL / cluster / "requests"
    assert (SPOOL / cluster).stat().st_mode & 0o777 == 0o700 and (SPOOL / cluster).stat().st_uid == 0

    # a flavor the cloud lacks: the boot fails for real, before any VM (or address) exists
    saved = cm_home / "elastic" / cluster / "state.json"
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "flavor": "nosuch"}))
    os.kill(pid, signal.SIGKILL)   # the agent dies; slurmctld's requests must wait for the next one
    wait_for("the agent to be gone", lambda: agent_pid(cm, cluster) is None, 10, 0.1)
    job = slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud1", "--wrap", "hostname"]).stdout.strip()
    try:
        spooled = wait_for("slurmctld's ResumeProgram to spool the request", lambda: list(requests.glob("*.req")),
                           30, 0.2)
        recorded = spooled[0].read_text()
        assert re.match(r"resume cloud1 \d{19}\n", recorded) and f'"job_id":{job}' in recorded.replace(" ", "")
        assert spooled[0].stat().st_mode & 0o777 == 0o600

        result = cm("slurm", "burst", "agent", cluster, "-f", "json")   # a new agent finds it pending
        assert result.code == 0 and json.loads(result.out)["started"] is True, result.err
        reason = wait_for("the agent to handle it (the node DOWN with cm's reason, set over ssh)",
                          lambda: re.search(r"Reason=(cm: boot failed[^\n]*)",
                                            slurm.run(["scontrol", "show", "node", "cloud1"]).stdout), 60, 0.5)
        assert "unknown flavor 'nosuch'" in reason.group(1), reason.group(1)
        wait_for("the handled request to leave the spool", lambda: not list(requests.glob("*.req")), 30, 0.2)
        actions = (cm_home / "elastic" / cluster / "actions.log").read_text()
        assert actions.count("resume cloud1: booting VM") == 1 and "fail cloud1: boot failed" in actions
        # every poll and scontrol of the agent (and cm's own commands) went over one ssh connection
        established = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{login.port} )"],
                                     capture_output=True, text=True, timeout=10).stdout.splitlines()
        assert len(established) == 1, established
        log = (cm_home / "elastic" / cluster / "agent.log").read_text()
        assert re.search(r"resume cloud1: requested [\d.]+ s ago", log) and "resume cloud1: " in log

        # killed after handling but before the spool lost it: the next agent only removes it
        os.kill(agent_pid(cm, cluster), signal.SIGKILL)
        wait_for("the agent to be gone", lambda: agent_pid(cm, cluster) is None, 10, 0.1)
        spooled[0].write_text(recorded)
        result = cm("slurm", "burst", "agent", cluster, "-f", "json")
        assert result.code == 0 and json.loads(result.out)["started"] is True, result.err
        wait_for("the restarted agent to drop the handled request", lambda: not spooled[0].exists(), 30, 0.2)
        actions = (cm_home / "elastic" / cluster / "actions.log").read_text()
        assert actions.count("resume cloud1: booting VM") == 1, actions

        # the SuspendProgram as slurmctld runs it (no SLURM_RESUME_FILE, stdin closed): recorded at once
        ran = subprocess.run(["env", "-i", str(SPOOL / cluster / "suspend"), "cloud2"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=10)
        assert ran.returncode == 0 and not ran.stdout + ran.stderr
        wait_for("the agent to handle the suspend", lambda: "suspend cloud2: done" in (cm_home / "elastic" / cluster
                                                                                      / "agent.log").read_text(), 30, 0.2)
    finally:
        slurm.run(["scancel", job])

    result = cm("slurm", "burst", "disable", cluster, "-f", "json")
    assert result.code == 0, result.err
    assert slurm.conf.read_text() == before   # byte for byte
    assert not (SPOOL / cluster).exists()
    assert "agent stopped" in (cm_home / "elastic" / cluster / "agent.log").read_text()


def test_the_agent_of_an_unknown_cluster_is_one_line(cm, cm_home):
    result = cm("slurm", "burst", "agent", "nosuch")
    assert result.code == 2 and "no cluster 'nosuch'" in one_line(result)
