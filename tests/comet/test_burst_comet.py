"""`cm slurm burst enable --cloud COMET`: the cloud nodes are a Comet virtual cluster's compute nodes.

Fast: the real service (its hypervisors libvirt's test driver) answers the checks; --dryrun prints
the slurm.conf cm would write.  Booting a real node is tests/comet/test_burst_comet_e2e.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_slurm_burst import STATIC, conf, key  # noqa: F401  (fixtures: the site's slurm.conf, a munge key)

def burst(cm, conf: Path, key: Path, *extra: str):
    return cm("slurm", "burst", "enable", str(conf), "--munge-key", str(key), "--dryrun", *extra)


def test_dryrun_backs_the_cloud_nodes_with_the_virtual_cluster(cm, comet, conf, key):
    """alice sees one virtual cluster (vc1, four computes, allocation abc101): it is the default."""
    result = burst(cm, conf, key, "--cloud", "comet", "--max", "4", "--walltime", "2h")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "NodeName=cloud[1-4] CPUs=1 State=CLOUD Feature=cloud,cm-burst" in lines
    assert "SuspendExcNodes=n[1-4]" in lines
    # the service knows no guest addresses: Slurm takes each from the node's registration
    assert "SlurmctldParameters=idle_on_node_suspend,cloud_reg_addrs" in lines
    assert conf.read_text() == STATIC


@pytest.mark.parametrize("words, message", [
    (("--cloud", "comet", "--max", "5"), "virtual cluster vc1 has 4 compute nodes; --max 5 needs as many"),
    (("--cloud", "comet", "--max", "1", "--comet-cluster", "vc9"), "vc9"),
    (("--cloud", "comet", "--max", "1", "--allocation", "xyz202"),
     "allocation 'xyz202' is not one of cluster vc1's: abc101"),
    (("--cloud", "comet", "--max", "1", "--walltime", "0"), "bad walltime '0': it must be at least one minute"),
    (("--cloud", "comet", "--max", "1", "--walltime", "5x"), "bad walltime '5x'"),
    (("--cloud", "comet", "--max", "1", "--image", "cirros"),
     "--image is for VMs; the compute nodes of cloud 'comet' boot their virtual cluster's own disk"),
    (("--cloud", "local", "--max", "1", "--comet-cluster", "vc1"),
     "--comet-cluster is for a Comet virtual cluster; cloud 'local' is of kind kvm"),
    (("--cloud", "local", "--max", "1", "--walltime", "2h"),
     "--walltime is for a Comet virtual cluster; cloud 'local' is of kind kvm"),
])
def test_bad_options_are_one_line_and_change_nothing(cm, comet, conf, key, cm_home, words, message):
    result = burst(cm, conf, key, *words)
    assert result.code != 0 and message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert conf.read_text() == STATIC
    assert not (cm_home / "elastic" / "lab" / "state.json").exists()


def test_several_virtual_clusters_need_comet_cluster(cm, comet, conf, key):
    """bob sees vc1 and vc2: cm will not guess which one backs the nodes."""
    from tests.comet.nucleus import PASSWORDS

    assert cm("cloud", "add", "bobs", "--kind", "comet", f"base_url={comet.base}", "username=bob",
              f"password={PASSWORDS['bob']}").code == 0
    result = burst(cm, conf, key, "--cloud", "bobs", "--max", "1")
    assert result.code != 0
    assert result.err.strip() == "cm: cloud 'bobs' has 2 virtual clusters (vc1, vc2): name one with --comet-cluster"
    chosen = burst(cm, conf, key, "--cloud", "bobs", "--max", "1", "--comet-cluster", "vc2", "--allocation", "xyz202")
    assert chosen.code == 0, chosen.err
    assert "NodeName=cloud1 CPUs=1 State=CLOUD Feature=cloud,cm-burst" in chosen.out.splitlines()
