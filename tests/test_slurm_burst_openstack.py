"""`cm slurm burst` onto OpenStack: real openstacksdk over HTTP, real slurmctld/slurmd/munge.

The cluster: tests/infra/slurm.py in networked mode (slurmctld in host ``head`` of a network
namespace lab, static node n1).  The cloud: the project's OpenStack API server (tests/osapi),
listening on the loopback of ``head``'s namespace, where cm runs as slurmctld's programs run it;
its project has a network ``slurmnet`` whose subnet is the lab's (an operator's allocation pool
from .100).  The cloud runs no guest, so tests/infra/cloud_guests.py plays them: a server that
goes ACTIVE gets a lab host at its fixed slurmnet address, where its user-data (and only that)
runs in fresh /run, /etc/slurm and /etc/munge; a deleted server's host goes, with its slurmd.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("openstack")

from tests.infra.cloud_guests import CloudGuests  # noqa: E402
from tests.infra.netns import in_netns  # noqa: E402
from tests.infra.procs import wait_for  # noqa: E402
from tests.infra.slurm import SlurmCluster  # noqa: E402
from tests.osapi import FakeOpenStack  # noqa: E402

pytestmark = [
    pytest.mark.e2e,   # real daemons, no VM: about a minute
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, slurmctld)"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("slurmctld", "slurmd", "munged", "nsenter", "unshare")),
                       reason="run scripts/install-system-packages.sh"),
]
ROOT = Path(__file__).resolve().parents[1]
PORT = 23300
CLOUD = "os"
IMAGE, FLAVOR = "cirros-0.6.2-x86_64-disk", "m1.tiny"
NO_HOST = "No valid host was found. There are not enough hosts available."


class OsLab:
    """The cluster, the cloud, the guests, and cm run where slurmctld runs (``head``)."""

    def __init__(self, slurm: SlurmCluster, fake: FakeOpenStack, guests: CloudGuests, tmp: Path) -> None:
        self.slurm, self.fake, self.guests = slurm, fake, guests
        self.cm_home, self.clouds = tmp / "cmhome", tmp / "clouds.yaml"
        fake.write_clouds_yaml(str(self.clouds), CLOUD)
        self.clouds.chmod(0o600)

    def cm(self, *words: str, timeout: float = 120):
        """`cm WORDS` as a user on the controller host runs it (clouds.yaml named by OS_CLIENT_CONFIG_FILE)."""
        env = {**os.environ, "CM_HOME": str(self.cm_home), "OS_CLIENT_CONFIG_FILE": str(self.clouds),
               "SLURM_CONF": str(self.slurm.conf), "PYTHONPATH": str(ROOT)}
        return self.slurm.head.run([sys.executable, "-m", "cm.main", *words], timeout=timeout, env=env,
                                   cwd=self.slurm.tmp)

    def vm(self, name: str) -> dict | None:
        """The server ``name`` as `cm vm list --refresh` shows it (asked of the cloud), or None."""
        rows = json.loads(ok(self.cm("vm", "list", "--cloud", CLOUD, "--refresh", "-f", "json")) or "[]")
        return next((r for r in rows if r["name"] == name), None)

    def vm_name(self, node: str) -> str:
        return f"{self.slurm.cluster_name}-{node}".replace("_", "-")

    def node(self, node: str) -> str:
        return ok(self.slurm.run(["scontrol", "show", "node", node]))


def ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("burst-openstack")
    with SlurmCluster("osburst-s", PORT, nodes=1, networked=True) as slurm:
        fake = in_netns(slurm.head.ns, lambda: FakeOpenStack("127.0.0.1", 0, build_delay=1.0)).start()
        try:
            net = slurm.lab.subnet
            fake.add_network_directly("slurmnet", str(net), str(net.network_address + 100),
                                      str(net.network_address + 200))
            with CloudGuests(fake, slurm.lab, "slurmnet", private=[slurm.munge_socket.parent]) as guests:
                lab = OsLab(slurm, fake, guests, tmp)
                yield lab
                for log in (lab.cm_home / "elastic").glob("*/*.log"):
                    print(f"--- {log.name}\n{log.read_text()[-3000:]}")
                assert not guests.errors, guests.errors
        finally:
            fake.stop()


def test_a_job_creates_a_server_runs_on_it_at_its_fixed_ip_and_the_idle_server_goes(lab):
    slurm = lab.slurm
    # what slurmctld and srun need to reach slurmd on the nodes (slurmd's default port)
    ok(lab.cm("secgroup", "add", "slurmd", "--cloud", CLOUD))
    ok(lab.cm("secgroup", "rule", "add", "slurmd", "--protocol", "tcp", "--port", "6818",
              "--cidr", str(slurm.lab.subnet), "--cloud", CLOUD))
    shown = json.loads(ok(lab.cm(
        "slurm", "burst", "enable", str(slurm.conf), "--cloud", CLOUD, "--max", "2", "--image", IMAGE,
        "--flavor", FLAVOR, "--idle", "10", "--resume-timeout", "90", "--suspend-timeout", "10", "--network", "slurmnet", "--network", "private",
        "--secgroup", "slurmd", "--munge-key", str(slurm.munge_socket.parent / "munge.key"),
        "--restart-command", f"slurmctld -f {slurm.conf}", "-f", "json")))
    assert shown["nodes"] == "cloud[1-2]" and shown["cloud"] == CLOUD
    sinfo = ok(slurm.run(["sinfo", "-h", "-p", "cloud", "-o", "%D %t"]))
    assert sinfo.split()[0] == "2" and "~" in sinfo   # two powered-down cloud nodes, no server yet
    vm = lab.vm_name("cloud1")
    assert lab.vm(vm) is None

    started = time.monotonic()
    job = slurm.run(["srun", "-p", "cloud", "-w", "cloud1", "sh", "-c", 'echo "$SLURMD_NODENAME"; hostname'],
                    timeout=180)
    print(f"\nsrun answered from the new server's guest {time.monotonic() - started:.1f} s after it was run")
    assert job.returncode == 0, job.stderr + slurm.log("slurmctld")[-2000:]
    assert job.stdout.split() == ["cloud1", vm]   # ran on the node, inside the server's guest

    server = lab.vm(vm)
    assert server and server["state"] == "running"
    fixed = lab.fake.fixed_addresses(next(s["id"] for s in lab.fake.servers() if s["name"] == vm))
    on_slurmnet, on_private = fixed["slurmnet"][0], fixed["private"][0]
    assert sorted(server["private_ips"]) == sorted([on_slurmnet, on_private])   # two networks, two fixed IPs
    assert f"NodeAddr={on_slurmnet} " in lab.node("cloud1")   # Slurm talks on the network named first
    assert f"NodeHostName={vm} " in lab.node("cloud1")
    shown = json.loads(ok(lab.cm("vm", "show", vm, "--cloud", CLOUD, "--refresh", "-f", "json")))
    assert shown["extra"]["security_groups"] == ["slurmd"]   # the group that lets slurmctld and srun in
    assert shown["extra"]["networks"] == ["private", "slurmnet"]
    assert lab.guests.booted == [vm] and "cm-burst: slurmd cloud1 started" in lab.guests.output(vm)

    wait_for("the idle server to be deleted", lambda: lab.vm(vm) is None, 120, 1.0)
    wait_for("its guest (slurmd) to stop", lambda: vm not in lab.guests.running(), 30, 0.5)
    # powering down (idle%) lasts SuspendTimeout (--suspend-timeout 10) after the SuspendProgram
    wait_for("cloud1 to be powered down", lambda: "idle~" in ok(slurm.run(["sinfo", "-h", "-n", "cloud1", "-o", "%t"])),
             120, 1.0)
    rows = {r["node"]: r for r in json.loads(ok(lab.cm("slurm", "burst", "status", str(slurm.conf), "-f", "json")))}
    assert rows["cloud1"]["vm"] == "" and rows["cloud1"]["node_hours"] > 0
    log = (lab.cm_home / "elastic" / slurm.cluster_name / "actions.log").read_text()
    assert f"resume cloud1: VM {vm} at {on_slurmnet}" in log and f"suspend cloud1: idle; deleted VM {vm}" in log


def test_a_server_that_goes_to_error_leaves_the_node_down_the_job_requeued_and_no_server(lab):
    slurm = lab.slurm
    vm = lab.vm_name("cloud2")
    lab.fake.fail_next_boot(NO_HOST)
    job = ok(slurm.run(["sbatch", "--parsable", "-p", "cloud", "-w", "cloud2", "--wrap", "hostname"])).strip()
    try:
        reason = wait_for("cloud2 to be marked down by cm",
                          lambda: re.search(r"Reason=(cm: boot failed[^\n]*)", lab.node("cloud2")), 90, 0.5)
        assert f"VM {vm} went to ERROR: {NO_HOST}"[:150] in reason.group(1), reason.group(1)
        shown = ok(slurm.run(["scontrol", "show", "job", job]))
        assert re.search(r"JobState=PENDING", shown) and re.search(r"Restarts=[1-9]|Requeue=1", shown), shown
        assert lab.vm(vm) is None   # the ERROR server was deleted
        assert vm not in lab.guests.booted   # it never ran anything
        rows = {r["node"]: r for r in json.loads(ok(lab.cm("slurm", "burst", "status", str(slurm.conf), "-f", "json")))}
        assert rows["cloud2"]["slurm_state"].startswith("down") and "went to ERROR" in rows["cloud2"]["reason"]
    finally:
        slurm.run(["scancel", job])


def test_disable_restores_the_static_conf_and_leaves_no_server(lab):
    slurm = lab.slurm
    ok(lab.cm("slurm", "burst", "disable", str(slurm.conf), "--timeout", "60"))
    assert "cm burst" not in slurm.conf.read_text()
    rows = json.loads(ok(lab.cm("vm", "list", "--cloud", CLOUD, "--refresh", "-f", "json")) or "[]")
    assert not [r for r in rows if r["name"].startswith(lab.vm_name(""))]
    assert wait_for("slurmctld without cloud nodes",
                    lambda: ok(slurm.run(["sinfo", "-h", "-N", "-o", "%N"])).split() == ["n1"], 60, 1.0)


def test_a_network_the_cloud_lacks_is_refused_at_enable(lab):
    before = lab.slurm.conf.read_text()
    result = lab.cm("slurm", "burst", "enable", str(lab.slurm.conf), "--cloud", CLOUD, "--max", "1", "--image", IMAGE,
                    "--flavor", FLAVOR, "--network", "nosuch", "--munge-key", str(lab.slurm.munge_socket.parent /
                                                                                  "munge.key"))
    assert result.returncode != 0 and result.stderr.strip() == \
        f"cm: unknown network 'nosuch' on cloud '{CLOUD}' (see `cm network list --refresh`)"
    assert lab.slurm.conf.read_text() == before
