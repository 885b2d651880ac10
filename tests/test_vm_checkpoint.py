"""`cm vm save|restore|migrate` on libvirt's test hypervisor, and their refusals on other clouds.

The real checkpoint (a guest that continues where it stopped) and live migration between two
libvirt daemons are in tests/e2e/test_vm_checkpoint_e2e.py.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("libvirt")

from tests.test_kvm import image, node, one_line, rows, set_cloud  # noqa: E402,F401  (fixtures)


@pytest.fixture
def two(cm, image: str) -> list[str]:
    result = cm("vm", "boot", "--name", "ck[1-2]", "-f", "json")
    assert result.code == 0, result.err
    return ["ck1", "ck2"]


def test_save_a_hostlist(cm, cm_home, two):
    """Save stops each VM (its memory kept by libvirt); restore is proven on a real daemon (e2e):
    the test hypervisor's state file does not keep managed-save images between processes."""
    saved = rows(cm("vm", "save", "ck[1-2]", "-f", "json"))
    assert [(r["name"], r["state"], r["result"]) for r in saved] == [("ck1", "stopped", "saved"),
                                                                     ("ck2", "stopped", "saved")]
    conn = node(cm_home)
    assert all(conn.lookupByName(n).state()[0] == 5 for n in two)   # VIR_DOMAIN_SHUTOFF
    shown = json.loads(cm("vm", "show", "ck1", "-f", "json").out)
    assert shown["state"] == "stopped"


def test_save_refuses_a_stopped_vm_and_restore_one_never_saved(cm, two):
    assert cm("vm", "stop", "ck1").code == 0
    result = cm("vm", "save", "ck1", "ck2")
    assert result.code == 1
    assert "ck1 is stopped, so it has no memory to save" in result.out
    assert "1 of 2 failed" in result.err
    result = cm("vm", "restore", "ck1")
    assert result.code == 1 and "ck1 has no saved state to restore" in result.out


def test_dryrun_and_unknown_names_change_nothing(cm, cm_home, two):
    result = cm("vm", "save", "ck[1-2]", "--dryrun")
    assert result.code == 0 and "would save ck1 on local" in result.out
    assert node(cm_home).lookupByName("ck1").isActive()
    result = cm("vm", "save", "nope")
    assert result.code == 2 and "unknown VM 'nope'" in one_line(result)
    result = cm("vm", "migrate", "ck1")
    assert result.code == 2 and "--to" in one_line(result)


def test_migrate_names_the_hosts_the_cloud_has(cm, cm_home, two):
    result = cm("vm", "migrate", "ck1", "--to", "h2")
    assert result.code == 1 and "cloud 'local' has no host 'h2' (hosts: none" in result.out
    set_cloud(cm_home, hosts={"h1": "test:///default", "h2": {"uri": "qemu+tcp://127.0.0.1:24599/system"}})
    result = cm("vm", "migrate", "ck1", "--to", "h3")
    assert result.code == 1 and "no host 'h3' (hosts: h1, h2)" in result.out
    set_cloud(cm_home, hosts=["qemu:///system"])
    result = cm("vm", "migrate", "ck1", "--to", "h2")
    assert result.code == 1 and "hosts must map host names to libvirt URIs" in result.out


def test_migrate_to_a_host_that_does_not_answer_is_one_line_per_vm(cm, cm_home, two):
    set_cloud(cm_home, hosts={"h2": "qemu+tcp://127.0.0.1:24599/system"})
    result = cm("vm", "migrate", "ck[1-2]", "--to", "h2", "-f", "json")
    assert result.code == 1
    for row in json.loads(result.out):
        assert row["result"].startswith("failed: migrating ck")
    assert node(cm_home).lookupByName("ck1").isActive()   # still where it was


def test_other_clouds_refuse_in_one_line(cm, cm_home):
    from cm.provider import Provider

    with pytest.raises(Exception) as caught:
        Provider("plain", {}).require("save_vm")
    assert str(caught.value) == "cloud 'plain' cannot save VMs"
    for verb in ("restore_vm", "migrate_vm"):
        with pytest.raises(Exception, match=f"cannot {verb.split('_')[0]} VMs"):
            Provider("plain", {}).require(verb)


def test_the_kvm_cloud_lists_the_new_verbs(cm):
    verbs = json.loads(cm("cloud", "show", "local", "-f", "json").out)["verbs"]
    assert {"save_vm", "restore_vm", "migrate_vm"} <= set(verbs)
