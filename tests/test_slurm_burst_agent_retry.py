"""The burst agent tries a request again while the controller host's ssh is down, within ResumeTimeout.

Real slurmctld + munged + slurmd (tests/infra/slurm.py) and a real sshd (tests/infra/sshd.py
LoginHost, stopped and started again) whose sessions do not see cm's home, so the programs spool
and the agent handles.  The cloud is the project's OpenStack API server on loopback (real
openstacksdk over HTTP), its servers on a network inside 127.0.0.0/8 (nothing listens there: no
slurmd ever registers, and nothing leaves loopback); a server stays in BUILD a few seconds, the
window in which the test takes the controller's ssh down.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("openstack")

from tests.infra.procs import wait_for  # noqa: E402
from tests.infra.slurm import SlurmCluster  # noqa: E402
from tests.infra.sshd import LoginHost  # noqa: E402
from tests.osapi import start_server  # noqa: E402
from tests.test_slurm_burst_agent import SPOOL, _stop_agent  # noqa: E402
from tests.test_slurm_burst_ssh import record_launched  # noqa: E402

pytestmark = [
    pytest.mark.e2e,   # real daemons; about two minutes (ResumeTimeout runs out once on purpose)
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sshd, slurmctld, mount namespaces)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("sshd", "slurmctld", "slurmd", "munged", "unshare")),
                       reason="run scripts/install-system-packages.sh"),
]
BUILD = 5.0            # seconds a server stays in BUILD
RESUME_TIMEOUT = 45
NO_HOST = "No valid host was found."


@pytest.fixture
def far(cm_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Slurm, an sshd whose sessions see cm's home empty (cluster 'far'), and cloud 'os' in clouds.yaml."""
    fake = start_server(build_delay=BUILD)
    try:
        fake.add_network_directly("lonet", "127.0.10.0/24")
        for name in list(os.environ):
            if name.startswith("OS_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", fake.write_clouds_yaml(str(tmp_path / "clouds.yaml"), "os"))
        with SlurmCluster("bretry-s", 23400, nodes=1) as slurm:
            # sessions skip this machine's ~/.bashrc: one killed by down() inside `pyenv rehash` would leave
            # its lock behind and stall every later shell
            with LoginHost("bretry-l", 23450, env=slurm.client_env, hide=[cm_home],
                           mask=[Path.home() / ".bashrc"]) as login:
                record_launched(cm_home, slurm, login, "far", {})
                yield slurm, login, fake
                folder = cm_home / "elastic" / slurm.cluster_name
                _stop_agent(folder)
                for log in ("agent.log", "actions.log"):
                    print(f"--- {log}", (folder / log).read_text() if (folder / log).exists() else "(none)")
                shutil.rmtree(SPOOL / slurm.cluster_name, ignore_errors=True)
    finally:
        fake.stop()


def test_a_request_is_tried_again_while_ssh_is_down_and_given_up_at_resume_timeout(cm, cm_home, far):
    slurm, login, fake = far
    cluster = slurm.cluster_name
    result = cm("slurm", "burst", "enable", str(slurm.conf), "--controller", "far", "--cloud", "os", "--max", "3",
                "--image", "cirros-0.6.2-x86_64-disk", "--flavor", "m1.tiny", "--network", "lonet", "--idle", "300",
                "--resume-timeout", str(RESUME_TIMEOUT), "--restart-command", f"slurmctld -f {slurm.conf}",
                "-f", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["agent"]
    folder = cm_home / "elastic" / cluster
    actions, agent_log = folder / "actions.log", folder / "agent.log"

    def servers(node: str) -> list[dict]:
        return [s for s in fake.servers() if s["name"] == f"{cluster}-{node}".replace("_", "-")]

    def down_while_it_boots(node: str) -> str:
        """A job for ``node``; ssh goes down while its server is in BUILD; returns the job id."""
        boots = actions.read_text().count(f"resume {node}: booting VM")
        job = slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", node, "--wrap", "hostname"]).stdout.strip()
        wait_for(f"the agent to boot {node}", lambda: actions.read_text().count(f"resume {node}: booting VM") > boots,
                 60, 0.05)
        login.down()
        return job

    jobs = []
    try:
        # 1. ssh down for a few seconds while cloud1's server boots: tried again, then Slurm gets its address
        jobs.append(down_while_it_boots("cloud1"))
        wait_for("a try again", lambda: re.search(r"resume cloud1: cannot reach the controller host .*; trying again "
                                                  r"in 1 s", agent_log.read_text()), 60, 0.2)
        login.up()
        wait_for("cloud1 handled", lambda: "resume cloud1: done" in agent_log.read_text(), 60, 0.5)
        [server] = servers("cloud1")   # the first server went with the failed try
        address = fake.fixed_addresses(server["id"])["lonet"][0]
        node = slurm.run(["scontrol", "show", "node", "cloud1"]).stdout
        assert f"NodeAddr={address} " in node, node
        log = actions.read_text()
        assert log.count("resume cloud1: booting VM") == 2
        assert "resume cloud1: controller unreachable; deleted VM" in log

        # 2. a permanent failure (the server goes to ERROR) is not tried again
        fake.fail_next_boot(NO_HOST)
        jobs.append(slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud2", "--wrap", "hostname"])
                    .stdout.strip())
        wait_for("cloud2 down with cm's reason", lambda: re.search(
            r"Reason=cm: boot failed: VM \S+ went to ERROR: " + re.escape(NO_HOST),
            slurm.run(["scontrol", "show", "node", "cloud2"]).stdout), 60, 0.5)
        assert actions.read_text().count("resume cloud2: booting VM") == 1
        assert "resume cloud2: cannot reach" not in agent_log.read_text()
        assert not servers("cloud2")

        # 3. ssh down past ResumeTimeout: the agent gives up; slurmctld's ResumeFailProgram cleans up
        jobs.append(down_while_it_boots("cloud3"))
        wait_for("the agent to give up", lambda: re.search(r"resume cloud3: giving up \(cannot reach the controller "
                                                           r"host", agent_log.read_text()), RESUME_TIMEOUT + 30, 0.5)
        tries = agent_log.read_text().count("resume cloud3: cannot reach the controller host")
        assert tries >= 3, agent_log.read_text()   # 1, 2, 4, 8... seconds apart
        login.up()
        reason = wait_for("cloud3 down at ResumeTimeout", lambda: re.search(
            r"Reason=(cm: slurmd did not register[^\n]*)", slurm.run(["scontrol", "show", "node", "cloud3"]).stdout),
            RESUME_TIMEOUT + 60, 0.5)
        assert "ResumeTimeout" in reason.group(1)
        assert not servers("cloud3")
    finally:
        if login.proc is None:
            login.up()
        for job in jobs:
            slurm.run(["scancel", job])
