"""Allocations are real Slurm accounts: usage lands in `sacct -A ALLOCATION`; an account Slurm refuses changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.comet.conftest import squeue
from tests.comet.nucleus import Nucleus, cancel_all, free_ports, prefix, wait_for, write_config
from tests.infra.slurm import SlurmCluster


@pytest.fixture(scope="module")
def accounted():
    """Slurm with slurmdbd + MariaDB, enforcing associations: only abc101 exists as an account (for root)."""
    with SlurmCluster(prefix("comet-b"), free_ports(5), nodes=2, accounting=True, accounts={"abc101": ["root"]},
                      extra_conf=["AccountingStorageEnforce=associations"]) as cluster:
        yield cluster


@pytest.fixture
def service(private_dir: Path, accounted: SlurmCluster):
    hosts = {}
    for name in ("n1", "n2"):
        (private_dir / f"{name}.xml").write_text("<node></node>\n")
        hosts[name] = f"test://{private_dir / name}.xml"
    port = free_ports()
    config = write_config(private_dir / "service", port, accounted.client_env, hosts,
                          computes="vm-vc1-[0-1]", compute_hosts="n[1-2]")
    nucleus = Nucleus(config, port).start()
    yield nucleus
    cancel_all(accounted)
    nucleus.stop()


def test_usage_of_a_computeset_appears_in_sacct(cm, service, accounted):
    assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}", "username=alice",
              "password=alice-secret-1").code == 0
    result = cm("comet", "start", "vc1", "--count", "2", "--walltime", "10m", "--cloud", "comet", "-f", "json")
    assert result.code == 0, result.err
    cs = json.loads(result.out)[0]
    assert cs["state"] == "running"
    assert cm("comet", "terminate", str(cs["id"]), "--cloud", "comet").code == 0
    wait_for("job gone", lambda: cs["job_id"] not in squeue(accounted) or None, 60)

    def usage() -> str:
        out = accounted.run(["sacct", "-A", "abc101", "-X", "-n", "-P", "-o", "JobID,Account,State,NNodes"]).stdout
        return next((line for line in out.splitlines() if line.startswith(cs["job_id"] + "|")
                     and "RUNNING" not in line), "")

    line = wait_for("the job in sacct -A abc101", usage, 60)
    job_id, account, state, nodes = line.split("|")
    assert account == "abc101" and state.startswith("CANCELLED") and nodes == "2"


def test_an_account_slurm_refuses_changes_nothing(service, accounted):
    token = service.token("bob")
    auth = {"Authorization": f"Token {token}"}
    answer = requests.post(f"{service.base}/v1/computeset/", headers=auth, timeout=60,
                           json={"cluster": "vc1", "count": "1", "allocation": "xyz202"})
    assert answer.status_code == 400
    assert answer.json().startswith("Slurm refused the computeset:") and "account" in answer.json().lower()
    assert requests.get(f"{service.base}/v1/computeset/", headers=auth, timeout=30).json() == []
    assert squeue(accounted) == {}
