"""The mirror tells the truth about OpenStack VMs: deletes that take time, VMs gone behind cm's
back, two VMs of one name, and the floating IPs a boot made."""

from __future__ import annotations

import json
import time

import pytest

from tests.openstack_fixtures import *  # noqa: F403
from tests.openstack_fixtures import one_line, rows

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")


def _listed(cm, *extra: str) -> dict[str, dict]:
    return {v["name"]: v for v in json.loads(cm("vm", "list", *extra, "-f", "json").out)}


def test_delete_waits_until_the_cloud_no_longer_has_the_vm(cm, cloud):
    assert cm("vm", "boot", "--n", "2").code == 0
    cloud.set_action_delay(1.5)  # Nova keeps the server ACTIVE, task "deleting", meanwhile
    started = time.monotonic()
    deleted = cm("vm", "delete", "tester-00[1-2]", "-f", "json")
    assert deleted.code == 0, deleted.err
    assert time.monotonic() - started >= 1.5
    assert {r["result"] for r in rows(deleted)} == {"deleted"}
    assert cloud.servers() == []
    assert _listed(cm, "--refresh") == {}
    assert json.loads(cm("group", "list", "default", "-f", "json").out)[0]["members"] == []


def test_a_delete_the_cloud_has_not_finished_is_recorded_as_deleted_and_a_refresh_never_shows_it_running(cm, cloud):
    assert cm("vm", "boot", "--name", "slowgone").code == 0
    cloud.set_action_delay(30)
    deleted = cm("vm", "delete", "slowgone", "--timeout", "1", "-f", "json")
    assert deleted.code == 0, deleted.err
    assert rows(deleted)[0]["result"].startswith("deleting")
    assert _listed(cm)["slowgone"]["state"] == "deleted"
    refreshed = _listed(cm, "--refresh")  # Nova still says ACTIVE, task deleting
    assert refreshed["slowgone"]["state"] == "deleted"
    shown = json.loads(cm("vm", "show", "slowgone", "--refresh", "-f", "json").out)
    assert shown["state"] == "deleted"
    nowait = cm("vm", "boot", "--name", "quick").code == 0 and cm("vm", "delete", "quick", "--no-wait", "-f", "json")
    assert nowait.code == 0 and rows(nowait)[0]["state"] == "deleted"


def test_status_updates_the_mirror_with_what_it_learned(cm, cloud):
    assert cm("vm", "boot", "--n", "2").code == 0
    gone = next(s["id"] for s in cloud.servers() if s["name"] == "tester-001")
    cloud.reset()  # both deleted behind cm's back ...
    cloud.add_server_directly("tester-002", status="SHUTOFF")  # ... and one made again, stopped
    status = cm("vm", "status", "tester-00[1-2]", "-f", "json")
    assert status.code == 0, status.err
    assert {r["name"]: (r["state"], r["result"]) for r in rows(status)} == {
        "tester-001": ("deleted", "gone from the cloud (removed from the mirror)"),
        "tester-002": ("stopped", "ok")}
    listed = _listed(cm)
    assert set(listed) == {"tester-002"} and listed["tester-002"]["state"] == "stopped"
    assert json.loads(cm("group", "list", "default", "-f", "json").out)[0]["members"] == ["fake:tester-002"]
    assert gone not in cm("vm", "show", "tester-002", "-f", "json").out


AMBIGUOUS_VERBS = [("show",), ("status",), ("stop",), ("start",), ("reboot",), ("suspend",), ("resume",),
                   ("delete",), ("wait",), ("console",), ("ssh", "--dryrun"), ("rename", "NEW"),
                   ("resize", "--flavor", "m1.small"), ("ip", "assign"), ("ip", "release")]


def test_every_verb_refuses_a_name_two_vms_share_and_says_how_to_pick_by_id(cm, cloud):
    first = cloud.add_server_directly("twin")
    second = cloud.add_server_directly("twin")
    assert cm("refresh", "vm").code == 0
    messages = set()
    for verb, *rest in AMBIGUOUS_VERBS:
        words = ["vm", verb, *(["twin", *rest] if verb not in ("ip",) else [rest[0], "twin"])]
        result = cm(*words)
        assert result.code == 2, (words, result.err)
        messages.add(one_line(result.err))
    assert len(messages) == 1  # the very same words from every verb
    message = messages.pop()
    assert "2 VMs on cloud 'fake' are named 'twin'" in message and first in message and second in message
    assert "name one by its id" in message
    # By id each can be acted on, and the mirror keeps both apart.
    stopped = cm("vm", "stop", first, "-f", "json")
    assert stopped.code == 0, stopped.err
    assert rows(stopped)[0]["state"] == "stopped"
    states = {json.loads(cm("vm", "show", i, "-f", "json").out)["state"] for i in (first, second)}
    assert states == {"stopped", "running"}
    assert cm("vm", "delete", second).code == 0
    assert [s["id"] for s in cloud.servers()] == [first]
    assert json.loads(cm("vm", "show", "twin", "-f", "json").out)["id"] == first  # one left: its name works again


def test_a_name_two_vms_share_in_the_cloud_but_not_yet_in_the_mirror_is_refused_the_same_way(cm, cloud):
    assert cm("vm", "boot", "--name", "twin").code == 0
    cloud.add_server_directly("twin")  # behind cm's back
    result = cm("vm", "stop", "twin", "-f", "json")
    assert result.code == 1
    assert "2 VMs on cloud 'fake' are named 'twin'" in rows(result)[0]["result"]
    assert "name one by its id" in rows(result)[0]["result"]


def test_ip_list_has_the_floating_ips_of_a_public_boot_without_a_refresh(cm, cloud):
    booted = cm("vm", "boot", "--n", "2", "--public", "-f", "json")
    assert booted.code == 0, booted.err
    addresses = {v["name"]: v["public_ips"][0] for v in rows(booted)}
    listed = rows(cm("ip", "list", "-f", "json"))
    assert {(i["address"], i["vm"]) for i in listed} == {(a, n) for n, a in addresses.items()}
    assert cm("vm", "delete", "tester-001").code == 0
    assert [i["vm"] for i in rows(cm("ip", "list", "-f", "json"))] == ["tester-002"]
