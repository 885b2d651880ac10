"""Nova and Glance corners of the local OpenStack API server, driven by the real openstacksdk:
server groups, rebuild, remote consoles, the pre-2.36 proxies, /extensions, all-projects
listing, and Glance image create/upload/download/update, members and member schemas."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

openstack = pytest.importorskip("openstack")
from openstack import exceptions as os_exc  # noqa: E402

from tests.test_osapi import _boot, conn, fake  # noqa: E402,F401  (fixtures)


# ---------------------------------------------------------------- Nova

def test_server_groups_and_anti_affinity_on_one_host(conn):
    group = conn.compute.create_server_group(name="spread", policy="anti-affinity")
    assert group.policy == "anti-affinity" and group.member_ids == []
    assert [g.name for g in conn.compute.server_groups()] == ["spread"]
    first = _boot(conn, name="g1", scheduler_hints={"group": group.id})
    assert first.status == "ACTIVE"
    second = _boot(conn, name="g2", scheduler_hints={"group": group.id}, wait=False)
    second = conn.compute.wait_for_server(second, status="ERROR", failures=[], interval=0.1, wait=10)
    assert "No valid host was found" in second.fault["message"]
    assert sorted(conn.compute.get_server_group(group.id).member_ids) == sorted([first.id, second.id])
    conn.compute.delete_server(second)
    conn.compute.wait_for_delete(second, interval=0.1, wait=10)
    assert conn.compute.get_server_group(group.id).member_ids == [first.id]
    with pytest.raises(os_exc.BadRequestException, match="could not be found"):
        _boot(conn, name="g3", scheduler_hints={"group": "no-such-group"}, wait=False)
    conn.compute.delete_server_group(group)
    with pytest.raises(os_exc.NotFoundException):
        conn.compute.get_server_group(group.id)


def test_server_groups_before_2_64_use_a_policies_list(conn):
    r = conn.compute.post("/os-server-groups", json={"server_group": {"name": "old", "policies": ["affinity"]}},
                          microversion="2.15")
    assert r.status_code == 200 and r.json()["server_group"]["policies"] == ["affinity"]
    bad = conn.compute.post("/os-server-groups", json={"server_group": {"name": "x", "policies": ["nearby"]}},
                            microversion="2.15")
    assert bad.status_code == 400
    with pytest.raises(os_exc.BadRequestException):
        conn.compute.create_server_group(name="r", policy="affinity", rules={"max_server_per_host": 2})


def test_rebuild_replaces_the_image_and_keeps_the_server(conn):
    server = _boot(conn, name="rb", flavor="m1.small")
    debian = conn.image.find_image("debian-12", ignore_missing=False)
    rebuilt = conn.compute.rebuild_server(server, image=debian.id, name="rb2", admin_password="s3cret-pw")
    assert rebuilt.id == server.id and rebuilt.admin_password == "s3cret-pw"
    rebuilt = conn.compute.wait_for_server(rebuilt, status="ACTIVE", interval=0.1, wait=10)
    assert rebuilt.image.id == debian.id and rebuilt.name == "rb2"
    conn.compute.stop_server(rebuilt)
    conn.compute.wait_for_server(rebuilt, status="SHUTOFF", interval=0.1, wait=10)
    conn.compute.rebuild_server(rebuilt, image=debian.id)
    assert conn.compute.wait_for_server(rebuilt, status="SHUTOFF", interval=0.1, wait=10).image.id == debian.id
    with pytest.raises(os_exc.BadRequestException, match="could not be found"):
        conn.compute.rebuild_server(rebuilt, image="no-such-image")
    tiny = _boot(conn, name="tiny")
    with pytest.raises(os_exc.BadRequestException, match="too small"):
        conn.compute.rebuild_server(tiny, image=debian.id)


def test_remote_consoles_new_and_old_style(conn):
    server = _boot(conn, name="con")
    console = conn.compute.create_console(server, console_type="novnc")
    assert console["type"] == "novnc" and console["url"].startswith("http://127.0.0.1:6080/vnc_lite.html")
    old = conn.compute.post(f"/servers/{server.id}/action", json={"os-getVNCConsole": {"type": "novnc"}},
                            microversion="2.1")
    assert old.status_code == 200 and "token" in old.json()["console"]["url"]
    bad = conn.compute.post(f"/servers/{server.id}/remote-consoles",
                            json={"remote_console": {"protocol": "vnc", "type": "spice-html5"}}, microversion="2.6")
    assert bad.status_code == 400
    conn.compute.stop_server(server)
    conn.compute.wait_for_server(server, status="SHUTOFF", interval=0.1, wait=10)
    with pytest.raises(os_exc.ConflictException, match="not ready"):
        conn.compute.create_console(server, console_type="novnc")


def test_proxies_answer_clients_that_send_no_microversion(conn):
    pools = conn.compute.get("/os-floating-ip-pools", headers={"OpenStack-API-Version": ""})
    assert pools.status_code == 200 and pools.json() == {"floating_ip_pools": [{"name": "public"}]}
    detail = conn.compute.get("/images/detail", headers={"OpenStack-API-Version": ""})
    assert detail.status_code == 200
    names = {i["name"]: i for i in detail.json()["images"]}
    assert names["cirros-0.6.2-x86_64-disk"]["status"] == "ACTIVE" and "minDisk" in names["debian-12"]
    one = conn.compute.get(f"/images/{names['debian-12']['id']}", headers={"OpenStack-API-Version": ""})
    assert one.json()["image"]["name"] == "debian-12"
    for path in ("/os-floating-ip-pools", "/images/detail"):
        assert conn.compute.get(path, microversion="2.36").status_code == 404


def test_extensions_are_listed(conn):
    aliases = {e.alias for e in conn.compute.extensions()}
    assert {"os-server-groups", "os-keypairs", "os-remote-consoles"} <= aliases


def test_a_member_listing_all_projects_servers_is_forbidden(conn):
    _boot(conn, name="mine")
    with pytest.raises(os_exc.ForbiddenException, match="get_all_tenants"):
        list(conn.compute.servers(all_projects=True))
    assert [s.name for s in conn.compute.servers()] == ["mine"]
    assert [s.name for s in conn.compute.servers(all_projects=False)] == ["mine"]


# ---------------------------------------------------------------- Glance

def _qcow2(path, size: int = 1 << 30, payload: int = 200_000):
    header = b"QFI\xfb" + struct.pack(">IQIIQ", 3, 0, 0, 16, size)
    path.write_bytes(header + os.urandom(payload))
    return path


def test_image_create_upload_download_and_update(conn, tmp_path):
    path = _qcow2(tmp_path / "disk.qcow2")
    data = path.read_bytes()
    image = conn.create_image("mine", filename=str(path), disk_format="qcow2", container_format="bare", wait=True)
    assert image.status == "active" and image.size == len(data) and image.virtual_size == 1 << 30
    assert image.checksum == hashlib.md5(data).hexdigest()  # noqa: S324
    assert image.hash_algo == "sha512" and image.hash_value == hashlib.sha512(data).hexdigest()
    assert conn.image.download_image(image).content == data
    image = conn.image.update_image(image, name="renamed", os_distro="cirros")
    assert image.name == "renamed" and conn.image.get_image(image.id).os_distro == "cirros"
    queued = conn.image.create_image(name="empty", disk_format="raw", container_format="bare")
    assert queued.status == "queued" and queued.size is None
    with pytest.raises(os_exc.BadRequestException):
        conn.image.create_image(name="bad", disk_format="floppy", container_format="bare")
    with pytest.raises(os_exc.ForbiddenException):
        conn.image.create_image(name="pub", disk_format="raw", container_format="bare", visibility="public")
    conn.image.delete_image(image)
    assert conn.image.find_image("renamed") is None


def test_an_upload_twice_is_refused(conn, tmp_path):
    image = conn.image.create_image(name="once", disk_format="raw", container_format="bare")
    r = conn.image.put(f"/images/{image.id}/file", data=b"abc", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 204
    again = conn.image.put(f"/images/{image.id}/file", data=b"abc",
                           headers={"Content-Type": "application/octet-stream"})
    assert again.status_code == 409
    wrong = conn.image.put(f"/images/{conn.image.create_image(name='t', disk_format='raw', container_format='bare').id}"
                           "/file", data=b"abc", headers={"Content-Type": "text/plain"})
    assert wrong.status_code == 415


def test_image_members_and_member_schemas(conn):
    image = conn.image.create_image(name="shared-img", disk_format="raw", container_format="bare",
                                    visibility="shared")
    member = conn.image.add_member(image, member_id="other-project")
    assert member.member_id == "other-project" and member.status == "pending"
    assert [m.member_id for m in conn.image.members(image)] == ["other-project"]
    assert conn.image.get_member("other-project", image).status == "pending"
    with pytest.raises(os_exc.ConflictException):
        conn.image.add_member(image, member_id="other-project")
    conn.image.remove_member("other-project", image)
    assert list(conn.image.members(image)) == []
    private = conn.image.create_image(name="private-img", disk_format="raw", container_format="bare",
                                      visibility="private")
    with pytest.raises(os_exc.ForbiddenException, match="shared"):
        conn.image.add_member(private, member_id="other-project")
    assert "status" in conn.image.get_member_schema().properties
    assert "members" in conn.image.get_members_schema().properties
