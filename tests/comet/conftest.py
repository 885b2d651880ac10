"""Fixtures for the comet client and the Nucleus service: a private Slurm, the service on loopback, a comet cloud."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.comet.nucleus import PASSWORDS, Nucleus, free_ports, prefix, serving, test_driver_hosts
from tests.infra.slurm import SlurmCluster


@pytest.fixture(scope="session")
def slurm():
    """A private Slurm with three nodes (n1..n3) on loopback; no accounting (fast)."""
    with SlurmCluster(prefix("comet-a"), free_ports(4), nodes=3) as cluster:
        yield cluster


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
    return test_driver_hosts(private_dir)


@pytest.fixture
def nucleus(private_dir: Path, slurm: SlurmCluster, test_hosts: dict[str, str]):
    """The service on loopback with a fresh database, stopped after the test (and its jobs cancelled)."""
    with serving(private_dir / "service", slurm, test_hosts) as service:
        yield service


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

