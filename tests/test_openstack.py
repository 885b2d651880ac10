"""OpenStack clouds through `cm`: the VM workflow, images, flavors, keys, security groups,
networks, floating IPs, quotas, limits and usage, against the local OpenStack API server
driven by the real openstacksdk over HTTP."""

from __future__ import annotations

import base64
import json

import pytest

from tests.openstack_fixtures import *
from tests.openstack_fixtures import IMAGE, one_line, peak_overlap, rows, write_clouds

# The SDK's warnings about itself (cm silences them for users; pytest resets filters per test).
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")


def by_name(records):
    return {r["name"]: r for r in records}


def test_boot_n_with_key_secgroup_network_and_user_data_then_list_show_delete(cm, cloud, tmp_path):
    user_data = tmp_path / "init.yaml"
    user_data.write_text("#cloud-config\nruncmd: [echo hi]\n")
    booted = cm("vm", "boot", "--n", "2", "--secgroup", "default", "--network", "private",
                "--user-data", str(user_data), "-f", "json")
    assert booted.code == 0, booted.err
    vms = rows(booted)
    assert [v["name"] for v in vms] == ["tester-001", "tester-002"]
    assert {v["state"] for v in vms} == {"running"} and {v["result"] for v in vms} == {"booted"}
    assert all(v["private_ips"] and v["private_ips"][0].startswith("10.0.0.") for v in vms)
    assert "booted 2 of 2" in booted.err

    # The user's ~/.ssh key was uploaded once and the VMs use it; user-data reached Nova.
    keys = rows(cm("key", "list", "--cloud", "fake", "--refresh", "-f", "json"))
    assert [k["name"] for k in keys] == ["id_ed25519"]
    server = next(s for s in cloud.servers() if s["name"] == "tester-001")
    assert server["key_name"] == "id_ed25519"
    assert base64.b64decode(server["user_data"]).decode() == user_data.read_text()
    assert server["security_groups"] == ["default"]

    listed = by_name(rows(cm("vm", "list", "-f", "json")))
    assert set(listed) == {"tester-001", "tester-002"}
    shown = rows(cm("vm", "show", "tester-001", "--refresh", "-f", "json"))[0]
    assert (shown["image"], shown["flavor"], shown["key"], shown["state"]) == (IMAGE, "m1.tiny", "id_ed25519",
                                                                             "running")

    deleted = cm("vm", "delete", "tester-[001-002]")
    assert deleted.code == 0, deleted.err
    assert "deleted 2 of 2" in deleted.err
    assert cm("vm", "list", "-f", "json").out.strip() == "[]"
    assert cloud.servers() == []


def test_boot_public_gives_a_floating_ip_that_vm_ip_release_and_assign_manage(cm, cloud):
    booted = cm("vm", "boot", "--name", "web1", "--public", "-f", "json")
    assert booted.code == 0, booted.err
    address = rows(booted)[0]["public_ips"][0]
    assert address.startswith("172.24.4.")

    ips = rows(cm("ip", "list", "--refresh", "-f", "json"))
    assert [(i["address"], i["vm"]) for i in ips] == [(address, "web1")]

    released = cm("vm", "ip", "release", "web1")
    assert released.code == 0, released.err
    assert rows(cm("vm", "ip", "show", "web1", "-f", "json"))[0]["public_ips"] == []
    assert cm("ip", "list", "--refresh", "-f", "json").out.strip() == "[]"  # cm's own IP went back

    assigned = cm("vm", "ip", "assign", "web1")
    assert assigned.code == 0, assigned.err
    assert rows(cm("vm", "ip", "show", "web1", "-f", "json"))[0]["public_ips"][0].startswith("172.24.4.")

    # Deleting the VM gives back the IP cm allocated for it.
    assert cm("vm", "delete", "web1").code == 0
    assert cm("ip", "list", "--refresh", "-f", "json").out.strip() == "[]"


def test_lifecycle_stop_start_suspend_resume_reboot_rename_resize_console_wait(cm, cloud):
    cloud.set_action_delay(0.2)
    assert cm("vm", "boot", "--name", "life").code == 0

    def state(name="life"):
        return rows(cm("vm", "status", name, "-f", "json"))[0]["state"]

    for verb, expected in (("stop", "stopped"), ("start", "running"), ("suspend", "suspended"),
                           ("resume", "running"), ("reboot", "running")):
        result = cm("vm", verb, "life", "-f", "json")
        assert result.code == 0, (verb, result.err)
        assert rows(result)[0]["state"] == expected
        assert state() == expected

    renamed = cm("vm", "rename", "life", "life2")
    assert renamed.code == 0, renamed.err
    assert set(by_name(rows(cm("vm", "list", "--refresh", "-f", "json")))) == {"life2"}

    resized = cm("vm", "resize", "life2", "--flavor", "m1.small")
    assert resized.code == 0, resized.err
    shown = rows(cm("vm", "show", "life2", "-f", "json"))[0]
    assert (shown["flavor"], shown["state"]) == ("m1.small", "running")

    console = cm("vm", "console", "life2", "--lines", "5")
    assert console.code == 0 and "login:" in console.out

    waited = cm("vm", "wait", "life2", "--state", "running", "--timeout", "10")
    assert waited.code == 0, waited.err


def test_boot_n_carries_on_past_an_error_vm_and_reports_its_fault(cm, cloud):
    cloud.fail_next_boot(DEFAULT_BOOT_FAULT)
    result = cm("vm", "boot", "--n", "3", "-f", "json")
    assert result.code == 1
    outcome = {v["name"]: v for v in rows(result)}
    failed = [v for v in outcome.values() if v["result"].startswith("failed")]
    assert len(failed) == 1 and DEFAULT_BOOT_FAULT in failed[0]["result"]
    assert sum(v["result"] == "booted" for v in outcome.values()) == 2
    assert "1 of 3 failed" in result.err
    # All three are in the mirror, the broken one in state error with its fault.
    mirrored = by_name(rows(cm("vm", "list", "-f", "json")))
    assert sorted(v["state"] for v in mirrored.values()) == ["error", "running", "running"]
    shown = rows(cm("vm", "show", failed[0]["name"], "-f", "json"))[0]
    assert shown["fault"] == DEFAULT_BOOT_FAULT


def test_boot_n_past_the_quota_boots_what_fits_and_says_quota_exceeded(cm, cloud):
    cloud.set_quota(instances=2)
    result = cm("vm", "boot", "--n", "3", "-f", "json")
    assert result.code == 1
    results = sorted(v["result"] for v in rows(result))
    assert results[:2] == ["booted", "booted"]
    assert "quota exceeded" in results[2] and "instances" in results[2]
    assert "1 of 3 failed" in result.err


def test_boot_unknown_or_ambiguous_image_or_flavor_fails_with_one_clear_reason(cm, cloud):
    result = cm("vm", "boot", "--name", "x1", "--image", "no-such-image", "-f", "json")
    assert result.code == 1
    assert "no image 'no-such-image' on cloud 'fake'" in rows(result)[0]["result"]
    result = cm("vm", "boot", "--name", "x1", "--flavor", "huge", "-f", "json")
    assert "no flavor 'huge' on cloud 'fake'" in rows(result)[0]["result"]
    result = cm("vm", "boot", "--name", "x1", "--flavor", "m1", "-f", "json")
    assert "could be any of m1.large, m1.medium, m1.small, m1.tiny" in rows(result)[0]["result"]
    assert cloud.servers() == []
    # A unique beginning of a name is enough.
    result = cm("vm", "boot", "--name", "x2", "--image", "cirros-0.6", "--flavor", "m1.sm", "-f", "json")
    assert result.code == 0, result.err
    assert (rows(result)[0]["image"], rows(result)[0]["flavor"]) == (IMAGE, "m1.small")


def test_boot_refuses_a_name_the_cloud_already_has(cm, cloud):
    cloud.add_server_directly("taken")
    result = cm("vm", "boot", "--name", "taken", "-f", "json")
    assert result.code == 1
    assert "already exists on cloud 'fake'" in rows(result)[0]["result"]
    assert len(cloud.servers()) == 1


def test_refresh_brings_in_every_vm_the_cloud_has_and_drops_gone_ones(cm, cloud):
    assert cm("vm", "boot", "--name", "mine").code == 0
    cloud.add_server_directly("outside-1")
    cloud.add_server_directly("outside-2", status="SHUTOFF")
    assert cm("refresh", "vm").code == 0
    mirrored = by_name(rows(cm("vm", "list", "-f", "json")))
    assert {n: v["state"] for n, v in mirrored.items()} == {"mine": "running", "outside-1": "running",
                                                           "outside-2": "stopped"}
    assert {s["name"] for s in cloud.servers()} == set(mirrored)
    cloud.reset()  # everything deleted behind cm's back
    assert cm("refresh", "vm").code == 0
    assert cm("vm", "list", "-f", "json").out.strip() == "[]"


def test_a_vm_deleted_behind_cms_back_is_not_found(cm, cloud):
    assert cm("vm", "boot", "--name", "ghost").code == 0
    cloud.reset()
    result = cm("vm", "stop", "ghost", "-f", "json")
    assert result.code == 1 and "no VM 'ghost' on cloud 'fake'" in rows(result)[0]["result"]
    shown = cm("vm", "show", "ghost", "--refresh")
    assert shown.code == 2 and "no VM 'ghost'" in one_line(shown.err)


def test_images_flavors_and_networks_list_from_the_mirror_after_refresh(cm, cloud):
    images = rows(cm("image", "list", "--refresh", "-f", "json"))
    assert {i["name"] for i in images} == {IMAGE, "ubuntu-22.04", "debian-12"}
    shown = rows(cm("image", "show", IMAGE, "-f", "json"))[0]
    assert (shown["status"], shown["format"]) == ("active", "qcow2")
    flavors = rows(cm("flavor", "list", "--refresh", "--sort-column", "ram", "-f", "json"))
    assert [f["name"] for f in flavors] == ["m1.tiny", "m1.small", "m1.medium", "m1.large"]
    assert (flavors[0]["vcpus"], flavors[0]["ram"], flavors[0]["disk"]) == (1, 512, 1)
    networks = by_name(rows(cm("network", "list", "--refresh", "-f", "json")))
    assert networks["private"]["external"] is False and networks["private"]["subnets"] == ["10.0.0.0/24"]
    assert networks["public"]["external"] is True
    cloud.clear_request_log()
    assert cm("network", "list", "-c", "name", "-f", "value").out.split() == ["private", "public"]
    assert cloud.request_log == []  # listing is offline


def test_keys_upload_list_delete(cm, cloud):
    uploaded = cm("key", "upload", "--cloud", "fake")
    assert uploaded.code == 0, uploaded.err
    keys = rows(cm("key", "list", "--cloud", "fake", "-f", "json"))
    assert [k["name"] for k in keys] == ["id_ed25519"] and keys[0]["fingerprint"]
    again = cm("key", "upload", "--cloud", "fake")
    assert again.code == 1 and "already exists" in one_line(again.err)
    assert cm("key", "delete", "id_ed25519", "--cloud", "fake").code == 0
    assert cm("key", "list", "--cloud", "fake", "--refresh", "-f", "json").out.strip() == "[]"
    gone = cm("key", "delete", "id_ed25519", "--cloud", "fake")
    assert gone.code == 2 and "not found" in one_line(gone.err)


def test_boot_refuses_a_cloud_key_of_the_same_name_that_is_not_the_users(cm, cloud):
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes(range(32))
    other = "ssh-ed25519 " + base64.b64encode(blob).decode() + " other@x"
    cloud.add_keypair_directly("id_ed25519", other)
    result = cm("vm", "boot", "--name", "k1", "-f", "json")
    assert result.code == 1
    assert "is not your local id_ed25519.pub" in rows(result)[0]["result"]


def test_secgroup_with_default_rules_and_rule_add_list_delete(cm, cloud):
    added = cm("secgroup", "add", "ssh-ping", "--default-rules")
    assert added.code == 0, added.err
    assert "allowing ssh (tcp 22) and ping (icmp)" in added.out
    ingress = [(r["protocol"], r["ports"], r["remote"]) for r in
               rows(cm("secgroup", "rule", "list", "ssh-ping", "-f", "json")) if r["direction"] == "ingress"]
    assert sorted(ingress) == [("icmp", "", "0.0.0.0/0"), ("tcp", "22", "0.0.0.0/0")]

    assert cm("secgroup", "rule", "add", "ssh-ping", "--protocol", "tcp", "--port", "8000-8080").code == 0
    rules = rows(cm("secgroup", "rule", "list", "ssh-ping", "-f", "json"))
    web = [r for r in rules if r["ports"] == "8000-8080"]
    assert len(web) == 1
    duplicate = cm("secgroup", "rule", "add", "ssh-ping", "--protocol", "tcp", "--port", "8000-8080")
    assert duplicate.code == 1 and "already exists" in one_line(duplicate.err)
    assert cm("secgroup", "rule", "delete", "ssh-ping", web[0]["id"][:8]).code == 0
    assert all(r["ports"] != "8000-8080" for r in rows(cm("secgroup", "rule", "list", "ssh-ping", "--refresh",
                                                          "-f", "json")))

    groups = by_name(rows(cm("secgroup", "list", "--refresh", "-f", "json")))
    assert set(groups) == {"default", "ssh-ping"} and groups["ssh-ping"]["rules"] == 4  # 2 egress + ssh + ping
    shown = rows(cm("secgroup", "show", "ssh-ping", "-f", "json"))[0]
    assert "ingress tcp 22 0.0.0.0/0 IPv4" in shown["rules"]

    booted = cm("vm", "boot", "--name", "fw", "--secgroup", "ssh-ping")
    assert booted.code == 0, booted.err
    assert next(s for s in cloud.servers() if s["name"] == "fw")["security_groups"] == ["ssh-ping"]

    taken = cm("secgroup", "add", "ssh-ping")
    assert taken.code == 1 and "already exists" in one_line(taken.err)
    assert cm("vm", "delete", "fw").code == 0
    deleted = cm("secgroup", "delete", "ssh-ping")
    assert deleted.code == 0, deleted.err
    assert set(by_name(rows(cm("secgroup", "list", "--refresh", "-f", "json")))) == {"default"}


def test_secgroup_bad_rules_are_usage_errors(cm, cloud):
    assert cm("secgroup", "add", "g1").code == 0
    for words, message in ((("--protocol", "tcp", "--port", "99999"), "65535"),
                           (("--protocol", "icmp", "--port", "22"), "--port needs --protocol tcp or udp"),
                           (("--protocol", "gre"), "invalid choice")):
        result = cm("secgroup", "rule", "add", "g1", *words)
        assert result.code == 2 and message in one_line(result.err)
    unknown = cm("secgroup", "rule", "delete", "g1", "nope")
    assert unknown.code == 2 and "has no rule 'nope'" in one_line(unknown.err)


def test_floating_ips_create_attach_detach_delete(cm, cloud):
    created = cm("ip", "create", "-f", "json")
    assert created.code == 0, created.err
    address = rows(created)[0]["address"]
    assert address.startswith("172.24.4.") and rows(created)[0]["vm"] == ""
    assert cm("vm", "boot", "--name", "box").code == 0

    attached = cm("ip", "attach", address, "box")
    assert attached.code == 0, attached.err
    assert rows(cm("vm", "list", "-f", "json"))[0]["public_ips"] == [address]
    assert rows(cm("ip", "list", "-f", "json"))[0]["vm"] == "box"

    detached = cm("ip", "detach", address)
    assert detached.code == 0 and "from box" in detached.out
    assert rows(cm("vm", "list", "-f", "json"))[0]["public_ips"] == []

    # Deleting the VM leaves an IP the user allocated alone; `ip delete` gives it back.
    assert cm("vm", "delete", "box").code == 0
    assert [i["address"] for i in rows(cm("ip", "list", "--refresh", "-f", "json"))] == [address]
    assert cm("ip", "delete", address).code == 0
    assert cm("ip", "list", "--refresh", "-f", "json").out.strip() == "[]"

    missing = cm("ip", "delete", "172.24.4.250", "-f", "json")
    assert missing.code == 1 and "no floating IP 172.24.4.250" in rows(missing)[0]["result"]
    no_vm = cm("ip", "attach", address, "nobody")
    assert no_vm.code == 2 and "unknown VM 'nobody'" in one_line(no_vm.err)


def test_quota_limits_and_usage_are_asked_live(cm, cloud):
    assert cm("vm", "boot", "--name", "q1").code == 0
    quota = {(q["service"], q["resource"]): q for q in rows(cm("quota", "-f", "json"))}
    assert (quota["compute", "instances"]["limit"], quota["compute", "instances"]["used"]) == (10, 1)
    assert quota["compute", "ram"]["used"] == 512
    assert quota["network", "floating_ips"]["limit"] == 50
    limits = {r["name"]: r["value"] for r in rows(cm("limits", "-f", "json"))}
    assert (limits["instances"], limits["instances_used"], limits["total_cores_used"]) == (10, 1, 1)
    usage = cm("usage", "-f", "json")
    assert usage.code == 0, usage.err
    assert [(u["name"], u["flavor"], u["vcpus"]) for u in rows(usage)] == [("q1", "m1.tiny", 1)]
    assert "1 VMs from" in usage.err and "VM-hours" in usage.err
    every = cm("quota", "--cloud", "all", "-f", "json")  # the local kvm cloud has no quotas: skipped
    assert every.code == 0 and {q["cloud"] for q in rows(every)} == {"fake"}
    alone = cm("quota", "--cloud", "local")
    assert alone.code == 2 and "cloud 'local' cannot show quotas" in one_line(alone.err)
    bad = cm("usage", "--start", "yesterday")
    assert bad.code == 2 and "not a date" in one_line(bad.err)


def test_quota_limits_and_usage_of_all_clouds_go_on_past_a_failing_one(cm, cloud, tmp_path):
    assert cm("vm", "boot", "--name", "q1").code == 0  # something to show usage of
    write_clouds(cloud, tmp_path / "clouds.yaml",
                 down={"auth": {"auth_url": "http://127.0.0.1:9/identity/v3"}, "connect_retries": 0})
    for noun, doing in (("quota", "read the quotas"), ("limits", "read the limits"), ("usage", "read the usage")):
        result = cm(noun, "--cloud", "all", "-f", "json")
        assert result.code == 1, (noun, result.err)
        assert {r["cloud"] for r in rows(result)} == {"fake"}, noun  # the kvm cloud has none: skipped
        failures = [line for line in result.err.splitlines() if line.startswith("cm: ")]
        assert len(failures) == 1 and failures[0].startswith(f"cm: cloud 'down' could not {doing}: cannot reach"), \
            (noun, result.err)


def test_destructive_verbs_match_names_exactly(cm, cloud):
    from cm.config import Config
    from cm.errors import NotFound
    from cm_plugins.openstack.provider import OpenStackProvider

    provider = OpenStackProvider("fake", Config.load().cloud("fake"))
    try:  # (straight to the provider: `cm image delete` first asks the mirror, which may be stale)
        with pytest.raises(NotFound, match="no image 'cirros' on cloud 'fake'"):
            provider.delete_image("cirros")  # only the beginning of IMAGE's name
    finally:
        provider.close()
    images = {i["name"]: i["id"] for i in rows(cm("image", "list", "--refresh", "-f", "json"))}
    assert IMAGE in images and cloud.request_count("DELETE", r"/images/") == 0
    cm("image", "delete", "debian-12")  # an exact name is found (this cloud then refuses: a public image)
    assert cloud.request_count("DELETE", rf"/images/{images['debian-12']}$") == 1
    assert cm("vm", "boot", "--name", "r1", "--flavor", "m1.ti").code == 0  # boot's lookups may abbreviate
    resized = cm("vm", "resize", "r1", "--flavor", "m1.sm")
    assert resized.code == 2 and "no flavor 'm1.sm' on cloud 'fake'" in one_line(resized.err)


def test_dryrun_changes_nothing_in_the_cloud(cm, cloud):
    cloud.clear_request_log()
    for words in (("vm", "boot", "--n", "2", "--public", "--dryrun"), ("secgroup", "add", "g", "--default-rules",
                                                                      "--dryrun"),
                  ("ip", "create", "--dryrun"), ("secgroup", "rule", "add", "default", "--dryrun"),
                  ("key", "upload", "--cloud", "fake", "--dryrun")):
        result = cm(*words)
        assert result.code == 0, (words, result.err)
        assert "would" in result.out or "would boot" in result.out
    # Reads only (the dry boot checks image and flavor against the cloud's lists, as the boot does);
    # logging in is no change either.
    assert [e for e in cloud.request_log if e[0] != "GET" and not e[1].endswith("/auth/tokens")] == []
    assert cloud.request_count("GET", r"/images") >= 1


def test_parallel_boot_shares_one_login_and_one_key_upload(cm, cloud, request_times):
    cloud.set_create_delay(0.5)
    cloud.set_quota(instances=-1, cores=-1, ram=-1)
    result = cm("vm", "boot", "--n", "12", "-f", "json")
    assert result.code == 0, result.err
    assert {v["state"] for v in rows(result)} == {"running"}
    assert cloud.request_count("POST", r"/auth/tokens$") == 1
    assert cloud.request_count("POST", r"/os-keypairs$") == 1
    assert cloud.request_count("POST", r"/servers$") == 12
    # The twelve creates were in flight together (serial ones would never overlap).
    creates = [(start, end) for method, path, start, end in request_times
               if method == "POST" and path.endswith("/servers")]
    assert len(creates) == 12 and peak_overlap(creates) >= 10, sorted(creates)


def test_boot_many_takes_about_as_long_as_boot_one(cm, cloud):
    """The benchmark's slow cloud: create 1 s, ACTIVE 2 s later; --n 20 within 1.5x of one VM."""
    import time

    cloud.set_create_delay(1.0)
    cloud.set_build_delay(2.0)
    cloud.set_quota(instances=-1, cores=-1, ram=-1)
    started = time.monotonic()
    assert cm("vm", "boot", "--n", "1").code == 0
    one = time.monotonic() - started
    started = time.monotonic()
    many = cm("vm", "boot", "--n", "20", "-f", "json")
    twenty = time.monotonic() - started
    assert many.code == 0 and len(rows(many)) == 20
    assert twenty <= 1.5 * one + 0.5, (one, twenty)


def test_cloud_list_shows_it_and_default_cloud_selects_it(cm, cloud):
    listed = by_name(rows(cm("cloud", "list", "-f", "json")))
    assert listed["fake"]["kind"] == "openstack" and listed["fake"]["source"] == "clouds.yaml"
    assert listed["fake"]["active"] == "*"
    assert listed["fake"]["where"].endswith("/identity/v3")
    assert json.loads(cm("vm", "list", "--refresh", "-f", "json").out) == []
