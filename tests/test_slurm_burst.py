"""`cm slurm burst`: the slurm.conf it writes, what it refuses, and the boot script of a node.

Fast: no daemon (the local cloud is libvirt's test hypervisor; --dryrun prints the file).
The real thing (slurmctld calling cm, VMs running slurmd) is tests/e2e/test_burst_e2e.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from tests.test_kvm import image, one_line  # noqa: E402,F401  (fixtures)

STATIC = """ClusterName=lab
SlurmctldHost=head(10.0.0.1)
AuthInfo=socket=/run/lab/munge.sock
SlurmdSpoolDir=/var/spool/slurmd-%n
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
SlurmctldPidFile=/run/slurmctld.pid
CommunicationParameters=block_null_hash
SuspendTime=600   # the site's own value
NodeName=DEFAULT CPUs=2
NodeName=n[1-4] NodeAddr=10.0.0.[11-14]
PartitionName=debug Nodes=ALL Default=YES
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "slurm.conf"
    path.write_text(STATIC)
    return path


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "munge.key"
    path.write_bytes(b"k" * 1024)
    path.chmod(0o600)
    return path


def burst(cm, conf: Path, key: Path, *extra: str):
    return cm("slurm", "burst", "enable", str(conf), "--cloud", "local", "--max", "3", "--munge-key", str(key),
              *extra)


def test_dryrun_shows_the_cloud_nodes_and_power_settings_and_changes_nothing(cm, conf, key, image, cm_home):
    result = burst(cm, conf, key, "--idle", "120", "--suspend-timeout", "15", "--partition", "burst", "--dryrun")
    assert result.code == 0, result.err
    text = result.out
    assert "NodeName=burst[1-3] CPUs=1 State=CLOUD Feature=cloud,cm-burst" in text
    assert "PartitionName=burst Nodes=burst[1-3] MaxTime=INFINITE State=UP" in text
    for line in ("SuspendTime=120", "SuspendTimeout=15", "TreeWidth=65533", "SuspendExcNodes=n[1-4]", "ResumeRate=0",
                 "CommunicationParameters=block_null_hash,NoAddrCache", "SlurmctldParameters=idle_on_node_suspend",
                 f"ResumeProgram={cm_home / 'elastic' / 'lab' / 'resume'}",
                 f"ResumeFailProgram={cm_home / 'elastic' / 'lab' / 'resume-fail'}"):
        assert line in text.splitlines(), line
    assert "#cm-burst-was# SuspendTime=600   # the site's own value" in text
    assert "#cm-burst-was# CommunicationParameters=block_null_hash" in text
    assert conf.read_text() == STATIC


def test_the_programs_slurmctld_runs_call_cm_with_its_home(cm, conf, key, image, cm_home):
    assert burst(cm, conf, key, "--dryrun").code == 0
    program = (cm_home / "elastic" / "lab" / "resume").read_text()
    assert program.startswith("#!/bin/sh\n")
    assert f"CM_HOME={cm_home}" in program and "-m cm.main slurm burst resume lab" in program
    assert "< /dev/null" in program   # slurmctld runs it with stdin closed
    assert (cm_home / "elastic" / "lab" / "resume").stat().st_mode & 0o777 == 0o700


def test_removing_the_block_gives_back_the_file_exactly(conf, key):
    from cm.elastic import slurmconf

    before = slurmconf.read(conf)
    text = slurmconf.with_block(before, {"SuspendTime": "60", "TreeWidth": "65533"}, ["NodeName=c1 State=CLOUD"], "t")
    conf.write_text(text)
    again = slurmconf.read(conf)
    assert again.has_block and again.get("SuspendTime") == "60" and again.nodes[-1] == "c1"
    assert slurmconf.without_block(again) == STATIC
    # writing the block twice keeps one block
    assert slurmconf.with_block(again, {"SuspendTime": "30"}, [], "t").count(slurmconf.BEGIN) == 1


@pytest.mark.parametrize("words, message", [
    (("--max", "0"), "--max must be between 1 and 1024"),
    (("--idle", "0"), "--idle must be at least 1 second"),
    (("--suspend-timeout", "2"), "--suspend-timeout between 5 and 3600"),
    (("--partition", "bad name!"), "bad partition name 'bad name!'"),
    (("--partition", "debug"), "already has a partition 'debug'"),
    (("--partition", "n"), "already has nodes named n1"),
    (("--flavor", "nope"), "unknown flavor 'nope' on cloud 'local'"),
    (("--image", "nope"), "unknown image 'nope' on cloud 'local'"),
    (("--cloud", "nowhere"), "nowhere"),
])
def test_bad_input_is_one_line_and_changes_nothing(cm, conf, key, image, words, message):
    args = ["slurm", "burst", "enable", str(conf), "--cloud", "local", "--max", "3", "--munge-key", str(key)]
    for i in range(0, len(words), 2):
        if words[i] in args:
            args[args.index(words[i]) + 1] = words[i + 1]
        else:
            args += [words[i], words[i + 1]]
    result = cm(*args)
    assert result.code in (1, 2)
    assert message in one_line(result)
    assert "Traceback" not in result.err
    assert conf.read_text() == STATIC


def test_a_missing_conf_key_or_cluster_is_one_line(cm, conf, key, tmp_path, image):
    result = cm("slurm", "burst", "enable", str(tmp_path / "none.conf"), "--cloud", "local", "--max", "1")
    assert result.code == 2 and "no slurm.conf at" in one_line(result)
    result = burst(cm, conf, tmp_path / "nokey")
    assert result.code == 2 and "cannot read the cluster's munge key" in one_line(result)
    (tmp_path / "odd.conf").write_text("NodeName=a\n")
    result = cm("slurm", "burst", "enable", str(tmp_path / "odd.conf"), "--cloud", "local", "--max", "1")
    assert result.code == 2 and "has no ClusterName" in one_line(result)
    result = cm("slurm", "burst", "status", "lab")
    assert result.code == 2 and "no cluster 'lab' with bursting enabled" in one_line(result)
    result = cm("slurm", "burst", "enable", str(conf), "--cloud", "local")
    assert result.code == 2 and "--max" in one_line(result)


def test_the_boot_script_makes_the_vm_node_of_this_cluster(conf):
    from cm.elastic import slurmconf, userdata

    script = userdata.script(slurmconf.read(conf), "cloud2", b"secret-key-bytes")
    assert script.startswith("#!/bin/sh\n")
    assert base64.b64encode(b"secret-key-bytes").decode() in script and "secret-key-bytes" not in script
    assert "slurmd -b -N cloud2 -f /etc/slurm/slurm.conf" in script
    assert "--socket=/run/lab/munge.sock" in script
    assert "/var/spool/slurmd-cloud2" in script and "/var/log/slurm" in script
    assert STATIC.strip() in script


def test_a_node_is_reached_at_its_fixed_address_on_the_network_named_first():
    """A Nova server on two networks, one with a floating IP: Slurm gets the fixed IP on the burst network."""
    from cm.elastic.nodesource import node_address
    from cm_plugins.openstack.convert import to_vm

    def entry(addr: str, kind: str = "fixed") -> dict:
        return {"version": 4, "addr": addr, "OS-EXT-IPS:type": kind}

    server = {"id": "s1", "name": "lab-cloud1", "status": "ACTIVE",
              "addresses": {"storage": [entry("10.9.0.5")],
                            "slurmnet": [entry("10.1.0.7"), entry("203.0.113.10", "floating")]}}
    vm = to_vm(server, {}, {})
    assert vm.public_ips == ["203.0.113.10"]
    assert node_address(vm, ["slurmnet", "storage"]) == "10.1.0.7"
    assert node_address(vm, []) == "10.9.0.5"   # no network named: a fixed address, never the floating one
    booting = to_vm({**server, "addresses": {"storage": [entry("10.9.0.5")]}}, {}, {})
    assert node_address(booting, ["slurmnet"]) == ""   # not on the named network yet: cm waits for it


def test_resume_file_jobs_by_node(tmp_path):
    from cm.elastic.power import jobs_by_node

    path = tmp_path / "resume.json"
    path.write_text('{"all_nodes": "c[1-3]", "jobs": [{"job_id": 7, "nodes": "c[1-2]"}, {"job_id": 9, "nodes": "c3"}]}')
    assert jobs_by_node({"SLURM_RESUME_FILE": str(path)}) == {"c1": ["7"], "c2": ["7"], "c3": ["9"]}
    assert jobs_by_node({}) == {}


def test_the_spool_program_records_a_request_the_agent_reads(tmp_path):
    """The program slurmctld runs on a host without cm, run by sh as slurmctld would (its spool moved to
    tmp): one complete file per request, the resume file's jobs kept; damaged files are named, not guessed."""
    import subprocess

    from cm.elastic import agent

    requests = tmp_path / "requests"
    requests.mkdir()
    text = agent.script("c", "resume").replace(str(agent.spool("c") / "requests"), str(requests))
    resume = tmp_path / "resume.json"
    resume.write_text('{"all_nodes": "cloud[1-2]", "jobs": [{"job_id": 7, "nodes": "cloud[1-2]"}]}')
    ran = subprocess.run(["sh", "-c", text, "resume", "cloud[1-2]"], env={"SLURM_RESUME_FILE": str(resume),
                         "PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert ran.returncode == 0 and not ran.stdout + ran.stderr
    suspend = agent.script("c", "suspend").replace(str(agent.spool("c") / "requests"), str(requests))
    assert subprocess.run(["sh", "-c", suspend, "suspend", "cloud2"], env={"PATH": "/usr/bin:/bin"},
                          timeout=10).returncode == 0
    files = sorted(requests.iterdir())
    assert [f.suffix for f in files] == [".req", ".req"] and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    listing = "".join(f"\n{agent.MARK}{f.name}\n{f.read_text()}" for f in files)
    listing += f"\n{agent.MARK}zz.req\nresume cloud[1- 17\n"
    found = agent.parse(listing)
    assert [(r.action, r.nodes, r.jobs) for r in found] == [
        ("resume", "cloud[1-2]", {"cloud1": ["7"], "cloud2": ["7"]}), ("suspend", "cloud2", {}),
        ("damaged", "resume cloud[1- 17", {})]
    assert found[0].at > 1.7e9 and found[0].name == files[0].name


def test_backfill_needs_the_burst_partition_and_good_host_maps(cm, conf, key, image, cm_home):
    import json

    result = cm("slurm", "backfill", "enable", str(conf), "--virtual-partition", "cloud")
    assert result.code == 2 and "bursting is not enabled for cluster 'lab'" in one_line(result)
    from cm.elastic import state

    with state.changing(cm_home, "lab", {"partition": "cloud", "conf": str(conf), "nodes": {}}):
        pass
    result = cm("slurm", "backfill", "enable", str(conf), "--virtual-partition", "low")
    assert result.code == 2 and "partition 'low' is not the cloud partition of cluster 'lab' ('cloud')" in \
        one_line(result)
    result = cm("slurm", "backfill", "enable", str(conf), "--virtual-partition", "cloud", "--host-map", "n1")
    assert result.code == 2 and "bad --host-map entry 'n1'" in one_line(result)
    result = cm("slurm", "backfill", "enable", str(conf), "--virtual-partition", "cloud", "--dryrun")
    assert result.code == 0, result.err
    assert "PrologSlurmctld=" in result.out and "SlurmdTimeout=3600" in result.out
    assert "# BEGIN cm backfill" in result.out and conf.read_text() == STATIC
    result = cm("slurm", "backfill", "status", str(conf))
    assert result.code == 2 and "backfill is not enabled for cluster 'lab'" in one_line(result)
    assert json.loads((cm_home / "elastic" / "lab" / "state.json").read_text())["partition"] == "cloud"


def test_the_prolog_ignores_jobs_of_the_virtual_partition(cm_home, conf):
    from cm.elastic import backfill, state

    with state.changing(cm_home, "lab", {"partition": "cloud", "conf": str(conf), "nodes": {},
                                         "backfill": {"partition": "cloud", "host_map": {}, "saved": {}}}):
        pass

    class Ctx:
        home = cm_home

    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_PARTITION": "cloud", "SLURM_JOB_NODELIST": "cloud1"}
    assert backfill.prolog(Ctx(), "lab", env) == []
    assert backfill.epilog(Ctx(), "lab", {"SLURM_JOB_ID": "5"}) == []


def test_backfill_disable_refuses_while_vms_are_saved_and_dryrun_shows_the_file_as_before(cm, conf, cm_home):
    from cm.elastic import slurmconf, state

    hooked = slurmconf.with_block(slurmconf.read(conf), {"PrologSlurmctld": "/p", "SuspendTime": "9"}, [], "t",
                                  block="backfill")
    conf.write_text(hooked)
    saved = {"7": [{"node": "cloud1", "vm": "lab-cloud1", "jobs": ["3"]}]}
    with state.changing(cm_home, "lab", {"partition": "cloud", "conf": str(conf), "nodes": {},
                                         "backfill": {"partition": "cloud", "host_map": {}, "saved": saved}}):
        pass
    result = cm("slurm", "backfill", "disable", str(conf))
    assert result.code == 1 and "VMs are saved for job 7" in one_line(result)
    with state.changing(cm_home, "lab") as now:
        now["backfill"]["saved"] = {}
    result = cm("slurm", "backfill", "disable", str(conf), "--dryrun")
    assert result.code == 0 and result.out == STATIC   # byte for byte, and nothing changed
    assert conf.read_text() == hooked


def test_the_spooled_prolog_records_the_job_and_waits_for_the_agents_answer(tmp_path):
    """The backfill prolog on a host without cm, run by sh as slurmctld would (its spool in tmp): the job is
    recorded as a request the agent reads, and the prolog returns only once the answer is there."""
    import subprocess
    import time

    from cm.elastic import agent, spool_hooks
    from cm.elastic.slurmctl import Controller

    (tmp_path / "requests").mkdir()
    spool_hooks.answers(tmp_path).mkdir()
    text = spool_hooks.script(tmp_path, "prolog", "cloud")
    job = {"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": "12", "SLURM_JOB_PARTITION": "debug", "SLURM_JOB_NODELIST": "n1"}
    low = subprocess.run(["sh", "-c", text], env={**job, "SLURM_JOB_PARTITION": "cloud"}, timeout=10)
    assert low.returncode == 0 and not list((tmp_path / "requests").iterdir())   # the virtual partition's own
    prolog = subprocess.Popen(["sh", "-c", text], env=job, stdin=subprocess.DEVNULL)
    try:
        from tests.infra.procs import wait_for

        [request] = wait_for("the request", lambda: list((tmp_path / "requests").glob("*.req")), 10, 0.05)
        [found] = agent.parse(f"\n{agent.MARK}{request.name}\n{request.read_text()}")
        assert (found.action, found.nodes, found.env) == ("prolog", "n1", {
            "SLURM_JOB_ID": "12", "SLURM_JOB_PARTITION": "debug", "SLURM_JOB_NODELIST": "n1"})
        time.sleep(0.5)
        assert prolog.poll() is None   # the job waits
        spool_hooks.answer(Controller(tmp_path / "slurm.conf"), tmp_path, request.name)   # as the agent answers
        assert prolog.wait(timeout=5) == 0 and not list(spool_hooks.answers(tmp_path).iterdir())
    finally:
        prolog.kill()


def test_a_hook_whose_job_got_no_nodes_never_acts_on_the_agents_own_job(cm_home, conf, monkeypatch):
    """The agent may run inside a Slurm allocation (SLURM_JOB_* in its environment, its job's VMs saved): a
    spooled prolog or epilog of a job given no nodes (``none``) acts on that job alone: here, nothing."""
    from cm.elastic import agent, state

    saved = {"99": [{"node": "cloud1", "vm": "lab-cloud1", "jobs": ["3"]}]}
    with state.changing(cm_home, "lab", {"partition": "cloud", "conf": str(conf), "nodes": {},
                                         "backfill": {"partition": "cloud", "host_map": {}, "saved": saved}}):
        pass
    for name, value in (("SLURM_JOB_ID", "99"), ("SLURM_JOB_PARTITION", "debug"), ("SLURM_JOB_NODELIST", "n1")):
        monkeypatch.setenv(name, value)   # the agent's own job

    class Ctx:
        home = cm_home

    listing = "".join(f"\n{agent.MARK}17000000000000000{n}.1.req\n{hook} none 17000000000000000{n} 12 debug\n"
                      for n, hook in ((10, "prolog"), (11, "epilog")))
    requests = agent.parse(listing)
    assert [r.action for r in requests] == ["prolog", "epilog"]
    for request in requests:
        assert [(o.name, o.ok) for o in agent.handle(Ctx(), "lab", request)] == [("job 12", True)]
    assert state.load(cm_home, "lab")["backfill"]["saved"] == saved   # job 99's VMs stay saved, its jobs suspended
    assert not [line for line in state.actions(cm_home, "lab") if "backfill" in line]
