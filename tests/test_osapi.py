"""The local OpenStack API server (tests/osapi) driven by the real openstacksdk.

Everything goes through ``openstack.connect(cloud=...)`` over HTTP; raw
``requests`` calls are used only where the SDK cannot express the check.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import struct
import threading
import time

import pytest

openstack = pytest.importorskip("openstack")
from keystoneauth1 import exceptions as ks_exc  # noqa: E402
from openstack import exceptions as os_exc  # noqa: E402

try:
    from tests.osapi import DEFAULT_BOOT_FAULT, PROJECT_ID, start_server
except ImportError:  # plain `pytest` does not put the repo root on sys.path
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from tests.osapi import DEFAULT_BOOT_FAULT, PROJECT_ID, start_server

BUILD = 0.2
PRIVATE = ipaddress.ip_network("10.0.0.0/24")
PUBLIC = ipaddress.ip_network("172.24.4.0/24")


@pytest.fixture(scope="module")
def fake():
    srv = start_server(0, build_delay=BUILD)
    yield srv
    srv.stop()


def _write_clouds(fake, tmp_path, monkeypatch, **extra):
    doc = fake.clouds_yaml("fake")
    bad = json.loads(json.dumps(doc["clouds"]["fake"]))
    bad["auth"]["password"] = "not-the-password"
    doc["clouds"]["fake-badpw"] = bad
    retry = json.loads(json.dumps(doc["clouds"]["fake"]))
    retry.update(status_code_retries=2, connect_retries=2)
    doc["clouds"]["fake-retry"] = retry
    doc["clouds"]["fake"].update(extra)
    path = tmp_path / "clouds.yaml"
    path.write_text(json.dumps(doc))
    import os
    for k in list(os.environ):
        if k.startswith("OS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    return path


@pytest.fixture
def conn(fake, tmp_path, monkeypatch):
    fake.reset()
    fake.set_build_delay(BUILD)
    fake.set_create_delay(0)
    fake.set_action_delay(0)
    _write_clouds(fake, tmp_path, monkeypatch)
    c = openstack.connect(cloud="fake")
    yield c
    c.close()


def _boot(conn, name="vm1", flavor="m1.tiny", image="cirros-0.6.2-x86_64-disk", wait=True, **kw):
    img = conn.image.find_image(image, ignore_missing=False)
    fl = conn.compute.find_flavor(flavor, ignore_missing=False)
    net = conn.network.find_network("private", ignore_missing=False)
    kw.setdefault("networks", [{"uuid": net.id}])
    server = conn.compute.create_server(name=name, image_id=img.id, flavor_id=fl.id, **kw)
    if wait:
        server = conn.compute.wait_for_server(server, status="ACTIVE", interval=0.1, wait=10)
    return server


def _ed25519_pub(seed: bytes) -> tuple[str, str]:
    raw = hashlib.sha256(seed).digest()
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + raw
    fp = hashlib.md5(blob).hexdigest()  # noqa: S324
    return ("ssh-ed25519 " + base64.b64encode(blob).decode() + " test@cm",
            ":".join(fp[i:i + 2] for i in range(0, 32, 2)))


# ---------------------------------------------------------------- identity

def test_auth_and_catalog(conn, fake):
    assert conn.authorize()  # a token
    assert conn.current_project_id == PROJECT_ID
    access = conn.session.auth.get_access(conn.session)
    types = {s["type"] for s in access.service_catalog.catalog}
    assert {"identity", "compute", "image", "network"} <= types
    assert access.project_name == "demo" and access.username == "demo"
    assert conn.compute.get_endpoint() == f"{fake.base_url}/compute/v2.1"
    assert conn.network.get_endpoint().startswith(f"{fake.base_url}/networking")
    # negotiated compute microversion is the server's max (SDK supports more)
    r = conn.compute.get("/servers", microversion="2.79")
    assert r.headers["OpenStack-API-Version"] == "compute 2.79"


def test_wrong_password_is_rejected(fake, tmp_path, monkeypatch):
    _write_clouds(fake, tmp_path, monkeypatch)
    bad = openstack.connect(cloud="fake-badpw")
    with pytest.raises(ks_exc.Unauthorized) as ei:
        list(bad.compute.flavors())
    assert ei.value.http_status == 401
    assert "requires authentication" in str(ei.value)


def test_expired_token_is_renewed_transparently(conn, fake):
    list(conn.compute.flavors())
    before = fake.request_count("POST", r"/auth/tokens$")
    fake.expire_tokens()
    assert len(list(conn.compute.flavors())) == 4
    assert fake.request_count("POST", r"/auth/tokens$") == before + 1


# ---------------------------------------------------------------- catalog data

def test_flavors_images_networks(conn):
    flavors = {f.name: f for f in conn.compute.flavors()}
    assert set(flavors) == {"m1.tiny", "m1.small", "m1.medium", "m1.large"}
    assert (flavors["m1.small"].ram, flavors["m1.small"].vcpus, flavors["m1.small"].disk) == \
        (2048, 1, 20)
    assert conn.compute.get_flavor("3").name == "m1.medium"

    images = {i.name: i for i in conn.image.images()}
    assert {"cirros-0.6.2-x86_64-disk", "ubuntu-22.04", "debian-12"} <= set(images)
    ub = images["ubuntu-22.04"]
    assert (ub.status, ub.disk_format, ub.container_format, ub.visibility) == \
        ("active", "qcow2", "bare", "public")
    assert ub.size > 0 and ub.min_disk == 3
    assert conn.image.get_image(ub.id).name == "ubuntu-22.04"

    nets = {n.name: n for n in conn.network.networks()}
    assert set(nets) == {"private", "public"}
    assert nets["public"].is_router_external and not nets["private"].is_router_external
    sub = conn.network.get_subnet(nets["private"].subnet_ids[0])
    assert sub.cidr == "10.0.0.0/24" and sub.gateway_ip == "10.0.0.1"
    assert [n.name for n in conn.network.networks(name="public")] == ["public"]


def test_image_pagination_is_followed(conn, fake):
    fake.clear_request_log()
    names = [i.name for i in conn.image.images(limit=1)]
    assert len(names) == 3 and len(set(names)) == 3
    assert fake.request_count("GET", r"^/image/v2/images$") >= 3


# ---------------------------------------------------------------- keypairs

def test_keypair_import_list_get_delete(conn):
    pub, fingerprint = _ed25519_pub(b"cm-test")
    kp = conn.compute.create_keypair(name="cm-key", public_key=pub)
    assert kp.fingerprint == fingerprint and kp.private_key is None
    assert [k.name for k in conn.compute.keypairs()] == ["cm-key"]
    got = conn.compute.get_keypair("cm-key")
    assert got.public_key == pub and got.type == "ssh"
    with pytest.raises(os_exc.ConflictException, match="already exists"):
        conn.compute.create_keypair(name="cm-key", public_key=pub)
    with pytest.raises(os_exc.BadRequestException, match="fingerprint"):
        conn.compute.create_keypair(name="junk", public_key="not a key")
    conn.compute.delete_keypair("cm-key")
    with pytest.raises(os_exc.NotFoundException):
        conn.compute.get_keypair("cm-key")


def test_keypair_generated_when_no_public_key(conn):
    kp = conn.compute.create_keypair(name="gen")
    assert kp.private_key and "PRIVATE KEY" in kp.private_key
    assert kp.public_key.startswith("ssh-")
    assert len(kp.fingerprint.split(":")) == 16


# ---------------------------------------------------------------- servers

def test_server_create_wait_and_show(conn, fake):
    pub, _ = _ed25519_pub(b"k")
    conn.compute.create_keypair(name="k", public_key=pub)
    ud = base64.b64encode(b"#cloud-config\npackages: [htop]\n").decode()
    t0 = time.monotonic()
    server = _boot(conn, "web-1", key_name="k", user_data=ud, metadata={"group": "cm"},
                   wait=False)
    assert server.admin_password and server.id
    assert conn.compute.get_server(server.id).status == "BUILD"
    server = conn.compute.wait_for_server(server, status="ACTIVE", interval=0.1, wait=10)
    assert BUILD <= time.monotonic() - t0 < 3
    assert server.status == "ACTIVE" and server.power_state == 1
    assert server.vm_state == "active" and server.task_state is None
    assert server.name == "web-1" and server.key_name == "k"
    assert server.flavor.original_name == "m1.tiny" and server.flavor.ram == 512
    assert server.metadata == {"group": "cm"}
    assert server.security_groups == [{"name": "default"}]
    addr = server.addresses["private"][0]
    assert addr["OS-EXT-IPS:type"] == "fixed" and ipaddress.ip_address(addr["addr"]) in PRIVATE
    assert fake.server(server.id)["user_data"] == ud
    ports = list(conn.network.ports(device_id=server.id))
    assert len(ports) == 1 and ports[0].fixed_ips[0]["ip_address"] == addr["addr"]
    assert ports[0].device_owner == "compute:nova" and ports[0].status == "ACTIVE"

    listed = list(conn.compute.servers(name="^web-"))
    assert [s.id for s in listed] == [server.id]
    assert list(conn.compute.servers(name="nomatch")) == []
    assert conn.compute.find_server("web-1").id == server.id


def test_server_power_actions(conn):
    s = _boot(conn)
    w = lambda st: conn.compute.wait_for_server(s, status=st, interval=0.05, wait=5)  # noqa: E731
    conn.compute.stop_server(s)
    assert w("SHUTOFF").power_state == 4
    with pytest.raises(os_exc.ConflictException, match="Cannot 'stop'"):
        conn.compute.stop_server(s)
    conn.compute.start_server(s)
    assert w("ACTIVE").power_state == 1
    with pytest.raises(os_exc.ConflictException, match="Cannot 'start' instance .* vm_state active"):
        conn.compute.start_server(s)
    conn.compute.reboot_server(s, "SOFT")
    assert w("ACTIVE").status == "ACTIVE"
    conn.compute.suspend_server(s)
    assert w("SUSPENDED").power_state == 7
    conn.compute.resume_server(s)
    assert w("ACTIVE").status == "ACTIVE"
    conn.compute.pause_server(s)
    w("PAUSED")
    conn.compute.unpause_server(s)
    w("ACTIVE")


def test_action_delay_shows_intermediate_states(conn, fake):
    s = _boot(conn)
    fake.set_action_delay(0.15)
    conn.compute.stop_server(s)
    mid = conn.compute.get_server(s.id)
    assert (mid.status, mid.task_state) == ("ACTIVE", "powering-off")
    with pytest.raises(os_exc.ConflictException, match="task_state powering-off"):
        conn.compute.reboot_server(s, "HARD")
    assert conn.compute.wait_for_server(s, status="SHUTOFF", interval=0.05, wait=5).task_state is None
    conn.compute.reboot_server(s, "HARD")
    assert conn.compute.get_server(s.id).status == "HARD_REBOOT"
    conn.compute.wait_for_server(s, status="ACTIVE", interval=0.05, wait=5)


def test_resize_confirm_and_revert(conn):
    s = _boot(conn, flavor="m1.tiny")
    conn.compute.resize_server(s, "2")
    s = conn.compute.wait_for_server(s, status="VERIFY_RESIZE", interval=0.05, wait=5)
    assert s.flavor.original_name == "m1.small"
    conn.compute.confirm_server_resize(s)
    s = conn.compute.wait_for_server(s, status="ACTIVE", interval=0.05, wait=5)
    assert s.flavor.original_name == "m1.small" and s.flavor.vcpus == 1
    conn.compute.resize_server(s, "3")
    conn.compute.wait_for_server(s, status="VERIFY_RESIZE", interval=0.05, wait=5)
    conn.compute.revert_server_resize(s)
    s = conn.compute.wait_for_server(s, status="ACTIVE", interval=0.05, wait=5)
    assert s.flavor.original_name == "m1.small"
    with pytest.raises(os_exc.BadRequestException, match="must change flavor"):
        conn.compute.resize_server(s, "2")
    with pytest.raises(os_exc.ConflictException, match="confirmResize"):
        conn.compute.confirm_server_resize(s)


def test_console_output_and_rename(conn):
    s = _boot(conn, "console-vm")
    out = conn.compute.get_server_console_output(s)["output"]
    ip = s.addresses["private"][0]["addr"]
    assert "Cloud-init" in out and ip in out and "console-vm login:" in out
    tail = conn.compute.get_server_console_output(s, length=2)["output"]
    assert tail.splitlines()[-1].startswith("console-vm login")
    assert len(tail.splitlines()) == 2

    renamed = conn.compute.update_server(s, name="renamed-vm")
    assert renamed.name == "renamed-vm"
    assert conn.compute.get_server(s.id).name == "renamed-vm"
    assert [x.name for x in conn.compute.servers()] == ["renamed-vm"]


def test_delete_then_404(conn, fake):
    s = _boot(conn)
    port_ids = [p.id for p in conn.network.ports(device_id=s.id)]
    assert port_ids
    conn.compute.delete_server(s)
    conn.compute.wait_for_delete(s, interval=0.05, wait=5)
    with pytest.raises(os_exc.NotFoundException, match=f"Instance {s.id} could not be found"):
        conn.compute.get_server(s.id)
    assert conn.compute.find_server(s.id, ignore_missing=True) is None
    assert list(conn.network.ports(device_id=s.id)) == []
    # raw body has Nova's shape
    import requests
    r = requests.get(f"{fake.base_url}/compute/v2.1/servers/{s.id}",
                     headers={"X-Auth-Token": conn.auth_token}, timeout=5)
    assert r.status_code == 404
    assert r.json() == {"itemNotFound": {"code": 404,
                                         "message": f"Instance {s.id} could not be found."}}


def test_fail_next_boot_goes_to_error_with_fault(conn, fake):
    fake.fail_next_boot("No valid host was found. There are not enough hosts available.")
    s = _boot(conn, "doomed", wait=False)
    assert conn.compute.get_server(s.id).status == "BUILD"
    with pytest.raises(os_exc.ResourceFailure, match="failure state ERROR"):
        conn.compute.wait_for_server(s, status="ACTIVE", interval=0.1, wait=5)
    s = conn.compute.get_server(s.id)
    assert s.status == "ERROR"
    assert s.fault["message"] == DEFAULT_BOOT_FAULT and s.fault["code"] == 500
    assert s.addresses == {}
    # only the one server failed
    ok = _boot(conn, "fine")
    assert ok.status == "ACTIVE"


def test_multi_create_names_and_reservation(conn):
    img = conn.image.find_image("cirros-0.6.2-x86_64-disk")
    net = conn.network.find_network("private")
    conn.compute.create_server(name="batch", image_id=img.id, flavor_id="1",
                               networks=[{"uuid": net.id}], min_count=3, max_count=3)
    names = sorted(s.name for s in conn.compute.servers(name="^batch"))
    assert names == ["batch-1", "batch-2", "batch-3"]
    ips = {s.addresses["private"][0]["addr"]
           for s in (conn.compute.wait_for_server(x, interval=0.1, wait=5)
                     for x in conn.compute.servers(name="^batch"))}
    assert len(ips) == 3


def test_add_server_directly_is_visible(conn, fake):
    sid = fake.add_server_directly("stranger", flavor="m1.medium", status="SHUTOFF")
    s = conn.compute.get_server(sid)
    assert (s.name, s.status, s.flavor.original_name) == ("stranger", "SHUTOFF", "m1.medium")
    assert ipaddress.ip_address(s.addresses["private"][0]["addr"]) in PRIVATE
    assert [x.id for x in conn.compute.servers()] == [sid]


def test_create_server_validation_errors(conn):
    img = conn.image.find_image("debian-12")
    net = conn.network.find_network("private")
    with pytest.raises(os_exc.BadRequestException, match="Invalid flavorRef"):
        conn.compute.create_server(name="x", image_id=img.id, flavor_id="99",
                                   networks=[{"uuid": net.id}])
    with pytest.raises(os_exc.BadRequestException, match="Can not find requested image"):
        conn.compute.create_server(name="x", image_id="0" * 32, flavor_id="1",
                                   networks=[{"uuid": net.id}])
    with pytest.raises(os_exc.BadRequestException, match="Invalid key_name"):
        conn.compute.create_server(name="x", image_id=img.id, flavor_id="2", key_name="nokey",
                                   networks=[{"uuid": net.id}])
    with pytest.raises(os_exc.BadRequestException, match="'networks' is a required property"):
        conn.compute.create_server(name="x", image_id=img.id, flavor_id="2")
    with pytest.raises(os_exc.BadRequestException, match="base64"):
        conn.compute.create_server(name="x", image_id=img.id, flavor_id="2", user_data="#!/bin",
                                   networks=[{"uuid": net.id}])
    assert list(conn.compute.servers()) == []


# ---------------------------------------------------------------- cloud layer

def test_cloud_layer_create_server_wait_assigns_floating_ip(conn, fake):
    # the cloud layer polls every 5 s, so let the server be ACTIVE at once
    fake.set_build_delay(0)
    server = conn.create_server("cloudy", image="ubuntu-22.04", flavor="m1.small",
                                network="private", wait=True, timeout=30)
    assert server.status == "ACTIVE"
    kinds = {a["OS-EXT-IPS:type"] for a in server.addresses["private"]}
    assert kinds == {"fixed", "floating"}
    got = conn.get_server("cloudy")
    assert ipaddress.ip_address(got.public_v4) in PUBLIC
    assert ipaddress.ip_address(got.private_v4) in PRIVATE
    assert got.interface_ip == got.public_v4
    assert conn.delete_server("cloudy", wait=True, delete_ips=True, timeout=30)
    assert conn.get_server("cloudy") is None
    assert list(conn.network.ips()) == []


# ---------------------------------------------------------------- neutron

def test_floating_ip_associate_shows_in_addresses_and_release(conn):
    s = _boot(conn)
    public = conn.network.find_network("public")
    port = next(conn.network.ports(device_id=s.id))
    fip = conn.network.create_ip(floating_network_id=public.id)
    assert fip.status == "DOWN" and fip.port_id is None
    assert ipaddress.ip_address(fip.floating_ip_address) in PUBLIC
    fip = conn.network.update_ip(fip, port_id=port.id)
    fixed = port.fixed_ips[0]["ip_address"]
    assert fip.port_id == port.id and fip.fixed_ip_address == fixed and fip.status == "ACTIVE"
    addrs = conn.compute.get_server(s.id).addresses["private"]
    assert {"floating": fip.floating_ip_address, "fixed": fixed} == \
        {a["OS-EXT-IPS:type"]: a["addr"] for a in addrs}
    assert [x.id for x in conn.network.ips(port_id=port.id)] == [fip.id]
    # second floating IP on the same fixed IP is refused like Neutron does
    other = conn.network.create_ip(floating_network_id=public.id)
    with pytest.raises(os_exc.ConflictException, match="already has a floating IP"):
        conn.network.update_ip(other, port_id=port.id)
    conn.network.delete_ip(other)
    # private network is not external
    with pytest.raises(os_exc.BadRequestException, match="not a valid external network"):
        conn.network.create_ip(floating_network_id=conn.network.find_network("private").id)
    fip = conn.network.update_ip(fip, port_id=None)
    assert fip.port_id is None
    assert len(conn.compute.get_server(s.id).addresses["private"]) == 1
    conn.network.delete_ip(fip)
    with pytest.raises(os_exc.NotFoundException):
        conn.network.get_ip(fip.id)


def test_security_groups_and_rules(conn):
    default = conn.network.find_security_group("default")
    assert len(default.security_group_rules) == 4
    sg = conn.network.create_security_group(name="web", description="http in")
    assert sg.name == "web" and len(sg.security_group_rules) == 2  # default egress
    rule = conn.network.create_security_group_rule(
        security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol="tcp",
        port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0")
    assert (rule.protocol, rule.port_range_min, rule.port_range_max) == ("tcp", 22, 22)
    rules = list(conn.network.security_group_rules(security_group_id=sg.id))
    assert len(rules) == 3
    assert [r.id for r in rules if r.direction == "ingress"] == [rule.id]
    with pytest.raises(os_exc.ConflictException, match="already exists"):
        conn.network.create_security_group_rule(
            security_group_id=sg.id, direction="ingress", ethertype="IPv4", protocol="tcp",
            port_range_min=22, port_range_max=22, remote_ip_prefix="0.0.0.0/0")
    with pytest.raises(os_exc.BadRequestException, match="protocol"):
        conn.network.create_security_group_rule(security_group_id=sg.id, direction="ingress",
                                                port_range_min=80, port_range_max=80)
    # a server using the group keeps it from being deleted
    s = _boot(conn, security_groups=[{"name": "web"}])
    assert s.security_groups == [{"name": "web"}]
    with pytest.raises(os_exc.ConflictException, match="in use"):
        conn.network.delete_security_group(sg)
    conn.compute.delete_server(s)
    conn.network.delete_security_group_rule(rule)
    assert len(list(conn.network.security_group_rules(security_group_id=sg.id))) == 2
    conn.network.delete_security_group(sg)
    with pytest.raises(os_exc.NotFoundException):
        conn.network.get_security_group(sg.id)
    with pytest.raises(os_exc.ConflictException, match="default security group"):
        conn.network.delete_security_group(default)


# ---------------------------------------------------------------- limits, quotas, usage

def test_limits_quota_sets_and_usage(conn, fake):
    lim = conn.compute.get_limits().absolute
    assert (lim.instances, lim.instances_used, lim.total_cores, lim.total_ram) == \
        (10, 0, 20, 51200)
    s = _boot(conn, flavor="m1.medium")
    lim = conn.compute.get_limits().absolute
    assert (lim.instances_used, lim.total_cores_used, lim.total_ram_used) == (1, 2, 4096)
    fake.set_quota(instances=5, cores=8)
    qs = conn.compute.get_quota_set(conn.current_project_id)
    assert (qs.instances, qs.cores, qs.ram) == (5, 8, 51200)
    detail = conn.compute.get_quota_set(conn.current_project_id, usage=True)
    assert detail.usage["instances"] == 1 and detail.usage["cores"] == 2
    assert detail.instances == 5
    nq = conn.network.get_quota(conn.current_project_id)
    assert nq.floating_ips == 50 and nq.security_groups == 10

    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    end = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=1)
    usage = conn.compute.get_usage(conn.current_project_id, start=start.replace(tzinfo=None),
                                   end=end.replace(tzinfo=None))
    assert [u["instance_id"] for u in usage.server_usages] == [s.id]
    assert usage.server_usages[0]["flavor"] == "m1.medium"
    assert 0 <= usage.total_hours < 0.1


def test_quota_exceeded_is_forbidden_with_nova_message(conn, fake):
    fake.set_quota(instances=1)
    _boot(conn, "first", wait=False)
    with pytest.raises(os_exc.ForbiddenException) as ei:
        _boot(conn, "second", wait=False)
    assert "Quota exceeded for instances: Requested 1, but already used 1 of 1 instances" \
        in str(ei.value)
    assert ei.value.status_code == 403
    fake.set_quota(instances=10, cores=1)
    with pytest.raises(os_exc.ForbiddenException, match="Quota exceeded for cores"):
        _boot(conn, "big", flavor="m1.medium", wait=False)
    fake.set_quota(floatingip=0)
    with pytest.raises(os_exc.ConflictException, match="Quota exceeded for resources"):
        conn.network.create_ip(floating_network_id=conn.network.find_network("public").id)


# ---------------------------------------------------------------- fault injection

def test_injected_500_once_then_success(conn, fake):
    fake.inject_fault("GET", r"/compute/v2\.1/flavors", status=500, count=1)
    with pytest.raises(os_exc.HttpException) as ei:
        list(conn.compute.flavors())
    assert ei.value.status_code == 500 and "Unexpected API Error" in str(ei.value)
    assert len(list(conn.compute.flavors())) == 4


def test_retries_configured_in_clouds_yaml_absorb_503_and_drops(fake, tmp_path, monkeypatch):
    fake.reset()
    _write_clouds(fake, tmp_path, monkeypatch)
    c = openstack.connect(cloud="fake-retry")
    list(c.network.networks())  # authenticate first
    fake.inject_fault("GET", r"/networking/v2\.0/networks", status=503, count=1)
    assert len(list(c.network.networks())) == 2
    fake.drop_connection("GET", r"/networking/v2\.0/networks", count=1)
    assert len(list(c.network.networks())) == 2
    dropped = [e for e in fake.request_log if e[2] == 0]
    assert dropped and dropped[-1][1] == "/networking/v2.0/networks"


def test_dropped_connection_surfaces_as_connect_failure(conn, fake):
    list(conn.compute.flavors())
    fake.drop_connection("POST", r"/servers$")
    with pytest.raises(ks_exc.ConnectFailure):
        _boot(conn, wait=False)
    assert list(conn.compute.servers()) == []  # the request never reached the API


def test_injected_latency(conn, fake):
    list(conn.compute.flavors())
    fake.inject_latency(0.3, "GET", r"/flavors")
    t0 = time.monotonic()
    list(conn.compute.flavors())
    assert time.monotonic() - t0 >= 0.3
    fake.inject_latency(0)
    t0 = time.monotonic()
    list(conn.compute.flavors())
    assert time.monotonic() - t0 < 0.3


def test_create_delay_does_not_serialize_concurrent_creates(conn, fake):
    fake.set_create_delay(0.4)
    fake.set_build_delay(0.2)
    img = conn.image.find_image("cirros-0.6.2-x86_64-disk")
    net = conn.network.find_network("private")
    errors: list[BaseException] = []
    ids: list[str] = []

    def one(i: int) -> None:
        try:
            s = conn.compute.create_server(name=f"par-{i}", image_id=img.id, flavor_id="1",
                                           networks=[{"uuid": net.id}])
            s = conn.compute.wait_for_server(s, status="ACTIVE", interval=0.2, wait=10)
            ids.append(s.id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert not errors and len(set(ids)) == 10
    assert elapsed < 2.5, elapsed  # serialized would be >= 10 * 0.4 s


def test_microversion_out_of_range_is_406(conn, fake):
    import requests
    r = requests.get(f"{fake.base_url}/compute/v2.1/servers",
                     headers={"X-Auth-Token": conn.auth_token,
                              "OpenStack-API-Version": "compute 2.200"}, timeout=5)
    assert r.status_code == 406
    assert "maximum is 2.79" in r.json()["computeFault"]["message"]
    r = requests.get(f"{fake.base_url}/compute/v2.1/servers", timeout=5)
    assert r.status_code == 401


def test_cloud_layer_reports_boot_fault(conn, fake):
    fake.set_build_delay(0)
    fake.fail_next_boot("Build of instance aborted: disk full", code=500)
    with pytest.raises(os_exc.SDKException, match="Compute service reports fault: "
                                                  "Build of instance aborted: disk full"):
        conn.create_server("bad", image="cirros-0.6.2-x86_64-disk", flavor="m1.tiny",
                           network="private", wait=True, timeout=10)


def test_server_metadata_roundtrip(conn):
    s = _boot(conn, metadata={"a": "1"})
    conn.compute.set_server_metadata(s, b="2")
    assert conn.compute.get_server_metadata(s).metadata == {"a": "1", "b": "2"}
    conn.compute.delete_server_metadata(s, ["a"])
    assert conn.compute.get_server(s.id).metadata == {"b": "2"}


def test_cli_entry_point_serves_a_usable_cloud(tmp_path, monkeypatch):
    import pathlib
    import subprocess
    import sys

    import yaml

    root = pathlib.Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.osapi", "--port", "0",
                             "--build-delay", "0.1", "--cloud-name", "cli"],
                            cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if line.startswith("# export"):
                break
        assert lines[0].startswith("auth_url: http://127.0.0.1:")
        doc = yaml.safe_load("".join(lines[2:]))
        assert doc["clouds"]["cli"]["auth"]["auth_url"] == lines[0].split(": ", 1)[1].strip()
        path = tmp_path / "clouds.yaml"
        path.write_text(yaml.safe_dump(doc))
        monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
        c = openstack.connect(cloud="cli")
        assert sorted(f.name for f in c.compute.flavors())[0] == "m1.large"
        c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
