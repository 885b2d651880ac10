"""Fixtures for the comet client and the Nucleus service: a private Slurm, the service on loopback, a comet cloud."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.comet.nucleus import PASSWORDS, Nucleus, write_config
from tests.infra.slurm import SlurmCluster

# this helper's port range is 23500-23999
SERVICE_PORT = 23501
SLURM_PORT = 23510  # slurmctld, then 3 slurmd


@pytest.fixture(scope="session")
def slurm():
    """A private Slurm with three nodes (n1..n3) on loopback; no accounting (fast)."""
    with SlurmCluster("comet-a", SLURM_PORT, nodes=3) as cluster:
        yield cluster


def cancel_all(slurm: SlurmCluster) -> None:
    """Cancel every job and wait until the queue is empty (COMPLETING ones included)."""
    from tests.comet.nucleus import wait_for

    jobs = slurm.run(["squeue", "-h", "-o", "%i"]).stdout.split()
    if jobs:
        slurm.run(["scancel", *jobs])
    wait_for("an empty Slurm queue", lambda: not slurm.run(["squeue", "-h", "-o", "%i"]).stdout.strip(), 60)


@pytest.fixture
def private_dir():
    """A temp dir of this helper's own: pytest's shared basetemp is pruned by concurrent runs on this machine."""
    path = Path(tempfile.mkdtemp(prefix="cm-comet-"))
    path.chmod(0o755)  # libvirtd's virtlogd (root) writes console logs here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def test_hosts(private_dir: Path) -> dict[str, str]:
    """Each Slurm node's hypervisor: its own instance of libvirt's test driver in the service's process."""
    hosts = {}
    for name in ("n1", "n2", "n3"):
        node = private_dir / f"{name}.xml"
        node.write_text("<node></node>\n")
        hosts[name] = f"test://{node}"
    return hosts


@pytest.fixture
def nucleus(private_dir: Path, slurm: SlurmCluster, test_hosts: dict[str, str]):
    """The service on loopback with a fresh database, stopped after the test (and its jobs cancelled)."""
    config = write_config(private_dir / "service", SERVICE_PORT, slurm.client_env, test_hosts)
    service = Nucleus(config, SERVICE_PORT).start()
    yield service
    cancel_all(slurm)  # first, while the service answers the jobs' last callbacks (else they retry until killed)
    service.stop()


@pytest.fixture
def comet(cm, nucleus: Nucleus):
    """A comet cloud named 'comet' (alice, token login) made the active cloud."""
    assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={nucleus.base}", "username=alice",
              f"password={PASSWORDS['alice']}").code == 0
    assert cm("default", "cloud=comet").code == 0
    return nucleus


def squeue(slurm: SlurmCluster) -> dict[str, str]:
    """Job id -> state of the jobs Slurm has now."""
    out = slurm.run(["squeue", "-h", "-o", "%i %T"]).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())

