"""The vm noun's shared behaviour (targets, groups, dry runs, several clouds), on the kvm test hypervisor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("libvirt")

from tests.test_kvm import qcow2_file  # noqa: E402


@pytest.fixture
def booted(cm, tmp_path: Path) -> list[str]:
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    result = cm("vm", "boot", "--n", "3", "--group", "exp", "-f", "json")
    assert result.code == 0, result.err
    return [r["name"] for r in json.loads(result.out)]


def test_dryrun_boot_uses_no_counter_numbers_and_changes_nothing(cm, tmp_path):
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    planned = json.loads(cm("vm", "boot", "--n", "2", "--dryrun", "-f", "json").out)
    assert [(r["name"], r["result"]) for r in planned] == [("tester-001", "would boot"), ("tester-002", "would boot")]
    assert json.loads(cm("vm", "list", "--refresh", "-f", "json").out) == []
    booted = json.loads(cm("vm", "boot", "-f", "json").out)
    assert booted[0]["name"] == "tester-001"


def test_group_targets_a_bulk_verb_and_names_are_not_repeated(cm, booted):
    stopped = cm("vm", "stop", "--group", "exp", booted[0], "-f", "json")
    assert stopped.code == 0, stopped.err
    assert sorted(r["name"] for r in json.loads(stopped.out)) == booted  # each VM once
    assert stopped.err.strip() == "stopped 3 of 3"
    states = {r["name"]: r["state"] for r in json.loads(cm("vm", "list", "-f", "json").out)}
    assert set(states.values()) == {"stopped"}


def test_deleting_every_vm_keeps_an_empty_group_that_says_so(cm, booted):
    assert cm("vm", "delete", "--group", "exp").code == 0
    groups = json.loads(cm("group", "list", "-f", "json").out)
    assert {"name": "exp", "count": 0, "members": []} in groups
    result = cm("vm", "start", "--group", "exp")
    assert result.code == 2 and "group 'exp' has no VMs on cloud 'local'" in result.err


def test_show_several_vms_is_one_json_document(cm, booted):
    shown = json.loads(cm("vm", "show", "tester-00[1-2]", "-f", "json").out)
    assert [r["name"] for r in shown] == ["tester-001", "tester-002"]
    single = json.loads(cm("vm", "show", "tester-003", "-f", "json").out)
    assert single["name"] == "tester-003" and single["cloud"] == "local"


def test_show_and_status_across_all_clouds(cm, booted):
    assert cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default").code == 0
    shown = json.loads(cm("vm", "show", "tester-002", "--cloud", "all", "-f", "json").out)
    assert shown["cloud"] == "local"
    status = cm("vm", "status", "--cloud", "all", "--group", "exp", "-f", "json")
    assert status.code == 0, status.err
    assert {(r["name"], r["cloud"], r["state"]) for r in json.loads(status.out)} == \
        {(n, "local", "running") for n in booted}
    missing = cm("vm", "status", "ghost", "--cloud", "all")
    assert missing.code == 2 and "unknown VM 'ghost' on any cloud" in missing.err


def test_unknown_names_stop_a_bulk_verb_before_it_touches_anything(cm, booted):
    result = cm("vm", "stop", booted[0], "ghost")
    assert result.code == 2 and "unknown VM 'ghost'" in result.err
    assert json.loads(cm("vm", "show", booted[0], "-f", "json").out)["state"] == "running"


def test_lifecycle_dryrun_changes_nothing(cm, booted):
    result = cm("vm", "delete", "--group", "exp", "--dryrun")
    assert result.code == 0 and result.out.count("would delete") == 3
    assert len(json.loads(cm("vm", "list", "--refresh", "-f", "json").out)) == 3


def test_an_image_or_flavor_the_mirror_knows_is_missing_is_refused_before_booting(cm, tmp_path):
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    assert cm("flavor", "list", "--refresh").code == 0
    for words, message in ((["--image", "ubuntu"], "unknown image 'ubuntu' on cloud 'local' (known: cirros); "
                                                    "add it with `cm image add ubuntu PATH`"),
                           (["--flavor", "huge", "--dryrun"], "unknown flavor 'huge' on cloud 'local'")):
        result = cm("vm", "boot", "--n", "2", *words)
        assert result.code == 2 and message in result.err
    assert json.loads(cm("vm", "boot", "-f", "json").out)[0]["name"] == "tester-001"  # no name was used up


def test_ssh_logs_in_at_the_vms_address(cm, booted):
    record = json.loads(cm("vm", "show", booted[0], "-f", "json").out)
    address = (record["public_ips"] or record["private_ips"])[0]
    result = cm("vm", "ssh", booted[0], "--user", "ubuntu", "--command", "uptime", "--dryrun")
    assert result.code == 0
    assert result.out.strip() == f"ssh -o StrictHostKeyChecking=accept-new ubuntu@{address} uptime"


def test_a_bad_output_column_is_refused_before_anything_changes(cm, tmp_path):
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    result = cm("vm", "boot", "--name", "colbug", "-c", "nope")
    assert result.code == 2 and "unknown column 'nope'" in result.err
    assert json.loads(cm("vm", "list", "--refresh", "-f", "json").out) == []


def test_vms_gone_from_the_cloud_leave_their_groups_and_deleting_them_again_succeeds(cm, cm_home, booted):
    saved = (cm_home / "mirror.json").read_bytes()
    assert cm("vm", "delete", booted[0]).code == 0
    (cm_home / "mirror.json").write_bytes(saved)  # a stale mirror: the cloud lost booted[0] behind cm's back
    again = cm("vm", "delete", booted[0])
    assert again.code == 0 and "deleted 1 of 1" in again.err
    (cm_home / "mirror.json").write_bytes(saved)
    assert cm("refresh", "vm").code == 0
    groups = {g["name"]: g["members"] for g in json.loads(cm("group", "list", "-f", "json").out)}
    assert sorted(groups["exp"]) == [f"local:{n}" for n in booted[1:]]
    assert cm("vm", "status", "--group", "exp").code == 0


@pytest.mark.parametrize("words, message", [
    (["vm", "boot", "--n", "99999999999"], "--n must be between 1 and 10000"),
    (["vm", "boot", "--name", ""], "no names given"),
    (["vm", "boot", "--name", "x[1-99999]"], "at most 10000 at once"),
    (["vm", "rename", "tester-001", "a,b"], "bad VM name 'a,b'"),
    (["vm", "ssh", "a,b"], "unknown VM 'a,b'"),
])
def test_names_cm_could_not_address_later_are_refused(cm, booted, words, message):
    result = cm(*words)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err
    assert json.loads(cm("vm", "boot", "--dryrun", "-f", "json").out)[0]["name"] == "tester-004"


def test_removing_a_cloud_forgets_its_records(cm, cm_home, booted):
    from cm.mirror import Mirror

    assert cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default").code == 0
    mirror = Mirror(cm_home / "mirror.json")
    mirror.put("vm", "lab", {"name": "labvm", "id": "1", "state": "running"})
    assert cm("group", "add", "exp", "labvm", "--cloud", "lab").code == 0
    assert cm("default", "flavor=tiny", "--cloud", "lab").code == 0
    assert cm("cloud", "remove", "lab").code == 0
    assert mirror.records("vm", "lab") == []
    assert "lab:labvm" not in json.loads(cm("group", "list", "exp", "-f", "json").out)[0]["members"]
    assert mirror.get_default("flavor", "lab") is None
    assert sorted(v["name"] for v in json.loads(cm("vm", "list", "--cloud", "all", "-f", "json").out)) == booted
    assert cm("default", "cloud=lab").code == 2
    assert cm("cloud", "remove", "local").code == 2  # the active cloud, and defined in cm.yaml
    assert cm("cloud", "add", "all", "--kind", "kvm").code == 2
