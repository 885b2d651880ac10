"""The shared test machinery (tests/infra) works with real daemons and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.infra.netns import Lab, in_netns, list_netns, netns_pids
from tests.infra.procs import descendants, wait_for
from tests.infra.slurm import SlurmCluster, cluster_fixture
from tests.infra.sshd import LoginHost, login_fixture

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent

# ports 21500-21999 belong to this file's fixtures
fast = cluster_fixture("infra-tf", 21500, nodes=2)
fast_login = login_fixture("infra-tfl", 21510, cluster="fast")
networked = cluster_fixture("infra-tn", 21520, nodes=2, networked=True, accounting=True,
                            accounts={"acct": ["root"]})
networked_login = login_fixture("infra-tnl", 21530, cluster="networked")


def alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_removed_host_loses_its_processes_and_a_socket_opened_in_a_namespace_listens_there():
    import socket

    with Lab("infra-tx") as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        sleeper = b.popen(["sleep", "60"])
        lab.remove_host("b")
        assert sleeper.wait(timeout=10) is not None and list_netns("infra-tx") == ["infra-tx-a", "infra-tx-lab"]
        again = lab.add_host("b", b.addr)   # the same name and address again (a new VM at a reused IP)
        assert a.run(["ping", "-c1", "-W5", again.addr]).returncode == 0
        listener = in_netns(a.ns, lambda: socket.create_server(("127.0.0.1", 0)))
        try:
            port = listener.getsockname()[1]
            probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 5)"
            assert a.run([sys.executable, "-c", probe]).returncode == 0   # a's loopback
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), 2)      # not this namespace's
        finally:
            listener.close()
    assert list_netns("infra-tx") == []


def test_two_namespaced_hosts_ping_each_other_by_name_and_address():
    with Lab("infra-tp") as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        assert a.run(["ping", "-c1", "-W5", b.addr]).returncode == 0
        assert b.run(["ping", "-c1", "-W5", "a"]).returncode == 0
        assert a.run(["hostname"]).stdout.strip() == "a"
        sleeper = b.popen(["sleep", "300"])
        assert set(list_netns("infra-tp")) == {"infra-tp-lab", "infra-tp-a", "infra-tp-b"}
    assert list_netns("infra-tp") == []
    assert sleeper.wait(timeout=5) != 0


def test_a_lab_without_name_resolution_reaches_hosts_by_address_only():
    with Lab("infra-tr", resolve_names=False) as lab:
        a, b = lab.add_host("a"), lab.add_host("b")
        assert a.run(["ping", "-c1", "-W5", b.addr]).returncode == 0
        assert a.run(["hostname"]).stdout.strip() == "a"
        for name in ("a", "b"):
            lookup = a.run(["getent", "hosts", name], timeout=10)
            assert lookup.returncode != 0 and lookup.stdout == ""
        # what a host adds to its /etc/hosts is its own
        a.run(["sh", "-c", f"echo '{a.addr} a' >> /etc/hosts"], check=True)
        assert a.run(["getent", "hosts", "a"]).stdout.split() == [a.addr, "a"]
        assert b.run(["getent", "hosts", "a"]).returncode != 0
    assert list_netns("infra-tr") == []


def test_lab_removes_what_a_crashed_run_left_behind_and_nothing_else():
    crashed = Lab("infra-tc").start()
    crashed.add_host("a")
    with Lab("infra-tc-x") as neighbour:    # a longer prefix is another user's
        neighbour.add_host("b")
        with Lab("infra-tc") as lab:        # same prefix: the old namespaces go first
            lab.add_host("a")
            assert set(list_netns("infra-tc")) == {"infra-tc-lab", "infra-tc-a", "infra-tc-x-lab",
                                                   "infra-tc-x-b"}
        assert set(list_netns("infra-tc")) == {"infra-tc-x-lab", "infra-tc-x-b"}
    assert list_netns("infra-tc") == []
    assert not crashed.tmp.exists()


def test_srun_runs_on_both_fast_nodes(fast):
    out = fast.run(["srun", "-N2", "sh", "-c", "echo $SLURMD_NODENAME"]).stdout.split()
    assert sorted(out) == ["n1", "n2"]


def test_sbatch_squeue_scancel(fast):
    sub = fast.run(["sbatch", "--parsable", "--wrap", "sleep 300"])
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.strip().split(";")[0]
    wait_for("job running", lambda: fast.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip() == "RUNNING", 60)
    assert fast.run(["scancel", job]).returncode == 0
    wait_for("job gone from squeue",
             lambda: fast.run(["squeue", "-h", "-j", job, "-o", "%T"]).stdout.strip() in ("", "CANCELLED"), 60)


def test_srun_answers_both_namespaced_hostnames(networked):
    result = networked.run(["srun", "-N2", "hostname"])
    assert sorted(result.stdout.split()) == ["n1", "n2"], result.stderr
    assert networked.run(["hostname"]).stdout.strip() == "head"


def test_sacct_shows_a_finished_job_of_the_account(networked):
    job = networked.run(["sbatch", "--parsable", "-A", "acct", "--wrap", "true"]).stdout.strip()
    assert job

    def finished() -> bool:
        out = networked.run(["sacct", "-A", "acct", "-X", "-n", "-P", "-o", "JobID,Account,State"]).stdout
        return f"{job}|acct|COMPLETED" in out.split()
    wait_for("sacct to show the job COMPLETED", finished, 90, 1)


def test_ssh_to_the_loopback_login_host_runs_sinfo_sbatch_and_scp(fast_login):
    result = subprocess.run(["ssh", "-p", str(fast_login.port), "-i", str(fast_login.key),
                             "-o", "StrictHostKeyChecking=accept-new",
                             "-o", f"UserKnownHostsFile={fast_login.known_hosts}", "-o", "BatchMode=yes",
                             "root@127.0.0.1", "sinfo -h -o '%P %D %T'"],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["debug*", "2", "idle"], result.stderr
    job = fast_login.ssh("sbatch --parsable --wrap 'echo from-the-job'").stdout.strip()
    out = fast_login.home / f"slurm-{job}.out"
    wait_for("the job's output in the login home", lambda: out.exists() and "from-the-job" in out.read_text(), 60)
    copy = fast_login.tmp / "copy"
    scp = subprocess.run(["scp", "-F", str(fast_login.ssh_config), f"{fast_login.alias}:slurm-{job}.out", str(copy)],
                         capture_output=True, text=True, timeout=60)
    assert copy.read_text() == "from-the-job\n", scp.stderr


def test_ssh_config_reaches_the_namespaced_login_host(networked_login):
    result = networked_login.ssh("hostname; sinfo -h -o '%D %T'; pwd")
    assert result.stdout.split() == ["head", "2", "idle", str(networked_login.home)], result.stderr
    assert "accept-new" in networked_login.ssh_config.read_text()


def test_stop_leaves_no_pids_namespaces_or_files():
    with SlurmCluster("infra-ts", 21540, nodes=2, networked=True, accounting=True) as cluster, \
            LoginHost("infra-tsl", 21550, env=cluster.client_env, host=cluster.head) as login:
        assert login.ssh("srun -N2 true").returncode == 0
        pids = cluster.pids + login.pids
        pids += [child for pid in pids for child in descendants(pid)]
        dirs = [cluster.tmp, login.tmp]
        assert list_netns("infra-ts")
    assert [pid for pid in pids if alive(pid)] == []
    assert list_netns("infra-ts") == []
    assert not any(d.exists() for d in dirs)


def test_a_cluster_that_fails_to_start_says_why_and_leaves_nothing():
    cluster = SlurmCluster("infra-tx", 21560, nodes=1, networked=True,
                           partitions=["PartitionName=bad Nodes=nosuchnode"])
    with pytest.raises(RuntimeError, match="slurmctld"):
        cluster.start()
    assert cluster.pids == [] and list_netns("infra-tx") == [] and not cluster.tmp.exists()


def test_fixtures_export_slurm_conf_for_clients(fast):
    assert fast.client_env["SLURM_CONF"] == str(fast.conf)
    assert "AuthInfo=socket=" in fast.conf.read_text()
    assert os.stat(fast.munge_socket.parent / "munge.key").st_mode & 0o777 == 0o600


CRASHING_RUN = """
import sys, time
from tests.infra.slurm import SlurmCluster
from tests.infra.sshd import LoginHost
c = SlurmCluster("infra-tk", 21570, nodes=1, networked=True).start()
l = LoginHost("infra-tkl", 21580, env=c.client_env, host=c.head).start()
print(" ".join(map(str, c.pids + l.pids)), flush=True)
time.sleep(600)
"""


def test_the_next_start_clears_what_a_killed_run_left_behind():
    run = subprocess.Popen([sys.executable, "-c", CRASHING_RUN], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in run.stdout.readline().split()]
    finally:
        run.kill()
        run.wait()
    assert pids and all(alive(pid) for pid in pids)
    with SlurmCluster("infra-tk", 21570, nodes=1, networked=True) as cluster, \
            LoginHost("infra-tkl", 21580, env=cluster.client_env, host=cluster.head) as login:
        assert [pid for pid in pids if alive(pid)] == []
        assert login.ssh("srun hostname").stdout.split() == ["n1"]
        assert len(list(Path(tempfile.gettempdir()).glob("infra-tk-slurm-*"))) == 1
    assert list_netns("infra-tk") == []


def test_cloud_node_is_resumed_for_a_job_and_suspended_when_idle():
    with SlurmCluster("infra-te", 21590, nodes=1, cloud_nodes=2, networked=True,
                      power={"SuspendTime": "5"}) as cluster:
        assert "c1 idle~" in cluster.run(["sinfo", "-h", "-N", "-o", "%N %T"]).stdout
        result = cluster.run(["srun", "-C", "cloud", "-N1", "hostname"])
        assert result.stdout.split() == ["c1"], result.stderr
        assert cluster.power_log() == ["resume c1"]
        wait_for("c1 suspended", lambda: "suspend c1" in cluster.power_log(), 90, 0.5)
        wait_for("c1's slurmd gone", lambda: netns_pids("infra-te-c1") == [], 30, 0.5)
    assert list_netns("infra-te") == []
