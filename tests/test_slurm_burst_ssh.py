"""`cm slurm burst|backfill enable|disable` on a cluster whose slurmctld cm reaches over ssh.

Real slurmctld + munged + slurmd (tests/infra/slurm.py) and a real sshd (tests/infra/sshd.py
LoginHost) on loopback; the cluster is recorded as one cm launched (a ready slurm cluster in the
mirror, its head the sshd, its munge key in cm's secrets), so `cm slurm burst enable NAME`
reads and writes its slurm.conf and restarts slurmctld through ssh.  The conf is named by a
path relative to the login session's directory: only a read over ssh finds it.  No VM boots
here (the cloud is libvirt's test driver); tests/e2e/test_burst_e2e.py boots real ones.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil

import pytest

pytest.importorskip("libvirt")

from tests.infra.slurm import SlurmCluster  # noqa: E402
from tests.infra.sshd import LoginHost  # noqa: E402
from tests.test_kvm import image, one_line  # noqa: E402,F401  (fixtures)

pytestmark = [
    pytest.mark.e2e,   # real daemons; about 45 s on 2 busy cores (each ssh round trip about 1 s)
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (sshd, slurmctld)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("sshd", "slurmctld", "slurmd", "munged")),
                       reason="run scripts/install-system-packages.sh"),
]


@pytest.fixture(scope="module")
def head():
    """A Slurm cluster and an sshd on loopback: the head of a cluster as cm reaches it."""
    with SlurmCluster("elastic-s", 21300, nodes=1) as slurm:
        with LoginHost("elastic-sl", 21350, env=slurm.client_env) as login:
            yield slurm, login


def record_launched(cm_home, slurm: SlurmCluster, login: LoginHost, name: str, outputs: dict) -> None:
    """Cluster NAME in the mirror as cm's slurm launcher leaves it, its head ``login``, its munge key in cm's
    secrets (this process's cm home)."""
    from cm.context import Context

    key = (slurm.tmp / "munge" / "munge.key").read_bytes()
    secrets = cm_home / "clusters" / "local" / f"{name}.secrets.json"
    secrets.parent.mkdir(parents=True)
    secrets.write_text(json.dumps({"munge_key": base64.b64encode(key).decode()}))
    Context().mirror.put("cluster", "local", {
        "name": name, "recipe": "slurm", "state": "ready", "cloud": "local", "params": {},
        "outputs": {"login": login.alias, "user": "root", "ssh_config": str(login.ssh_config), **outputs},
        "nodes": [{"name": f"{name}-head", "role": "head", "state": "ready", "address": "127.0.0.1"}]})


@pytest.fixture
def launched(cm_home, head):
    """Cluster 'labs' in the mirror as cm's slurm launcher leaves it, with its munge key in cm's secrets."""
    slurm, login = head
    # slurm.conf named from the login directory
    record_launched(cm_home, slurm, login, "labs", {"slurm_conf": os.path.relpath(slurm.conf, login.home)})
    before = slurm.conf.read_text()
    yield slurm, login
    slurm.conf.write_text(before)


def test_enable_and_disable_by_name_go_through_ssh_and_restore_the_file_byte_for_byte(cm, image, cm_home,
                                                                                     launched, monkeypatch):
    slurm, login = launched
    monkeypatch.chdir(cm_home)   # the relative slurm.conf exists only in the login session's directory
    before = slurm.conf.read_text()
    restart = ("--restart-command", f"slurmctld -f {slurm.conf}")
    result = cm("slurm", "burst", "enable", "labs", "--cloud", "local", "--max", "2", "--idle", "60", *restart,
                "-f", "json")
    assert result.code == 0, result.err
    shown = json.loads(result.out)
    assert shown["controller"] == login.alias and shown["nodes"] == "cloud[1-2]"
    conf = slurm.conf.read_text()
    assert "NodeName=cloud[1-2]" in conf and f"ResumeProgram={cm_home / 'elastic' / slurm.cluster_name / 'resume'}" \
        in conf
    sinfo = slurm.run(["sinfo", "-h", "-p", "cloud", "-o", "%D %t"]).stdout   # the restarted slurmctld has them
    assert sinfo.split()[0] == "2" and "~" in sinfo
    key = cm_home / "elastic" / slurm.cluster_name / "munge.key"
    assert key.read_bytes() == (slurm.tmp / "munge" / "munge.key").read_bytes() and key.stat().st_mode & 0o777 == 0o600
    status = json.loads(cm("slurm", "burst", "status", "labs", "-f", "json").out)
    assert [r["node"] for r in status] == ["cloud1", "cloud2"] and status[0]["slurm_state"].startswith("idle")

    with_burst = slurm.conf.read_text()
    result = cm("slurm", "backfill", "enable", "labs", "--virtual-partition", "cloud", "--max-pause", "600",
                "-f", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["policy"] == "migrate"
    config = slurm.run(["scontrol", "show", "config"]).stdout
    assert re.search(r"^PrologSlurmctld\s*=\s*\S+/prolog$", config, re.M), config
    rows = json.loads(cm("slurm", "backfill", "status", "labs", "-f", "json").out)
    assert rows[0]["what"].startswith("policy migrate:")
    result = cm("slurm", "backfill", "disable", "labs", "-f", "json")
    assert result.code == 0, result.err
    assert slurm.conf.read_text() == with_burst   # byte for byte
    assert re.search(r"^PrologSlurmctld\s*=\s*\(null\)", slurm.run(["scontrol", "show", "config"]).stdout, re.M)
    again = cm("slurm", "backfill", "disable", "labs")
    assert again.code == 2 and "backfill is not enabled for cluster" in one_line(again)

    # both blocks in the file: --dryrun shows the very file disable then writes, and changes nothing
    assert cm("slurm", "backfill", "enable", "labs", "--virtual-partition", "cloud", "--max-pause", "600").code == 0
    both = slurm.conf.read_text()
    assert "# BEGIN cm backfill" in both and "# BEGIN cm burst" in both
    shown = cm("slurm", "burst", "disable", "labs", "--dryrun")
    assert shown.code == 0, shown.err
    assert shown.out == before and slurm.conf.read_text() == both   # byte for byte, over ssh
    result = cm("slurm", "burst", "disable", "labs", "-f", "json")
    assert result.code == 0, result.err
    assert slurm.conf.read_text() == before   # byte for byte: both blocks gone in one write
    assert slurm.run(["sinfo", "-h", "-N", "-o", "%N"]).stdout.split() == ["n1"]


def test_an_unreachable_controller_or_missing_conf_is_one_line(cm, image, cm_home, launched):
    slurm, login = launched
    result = cm("slurm", "burst", "enable", "/nowhere/slurm.conf", "--controller", "labs", "--cloud", "local",
                "--max", "1")
    assert result.code == 1 and "/nowhere/slurm.conf" in one_line(result) and "Traceback" not in result.err
    before = slurm.conf.read_text()
    result = cm("slurm", "burst", "enable", "/nowhere/slurm.conf", "--controller", "ssh://root@127.0.0.1:1",
                "--cloud", "local", "--max", "1")
    assert result.code == 1 and "cannot reach the controller host ssh://root@127.0.0.1:1" in one_line(result)
    result = cm("slurm", "burst", "enable", str(slurm.conf), "--controller", "labs", "--cloud", "local",
                "--max", "1", "--munge-key", "/nowhere/munge.key")
    assert result.code == 2 and "cannot read the cluster's munge key /nowhere/munge.key on elastic-sl" in \
        one_line(result)
    result = cm("slurm", "burst", "enable", "nosuch", "--cloud", "local", "--max", "1")
    assert result.code == 2 and "no cluster 'nosuch' with bursting enabled or launched by cm" in one_line(result)
    assert slurm.conf.read_text() == before
