"""OpenStack clouds through `cm`: credentials (clouds.yaml, openrc), secrets kept out of output,
retried faults, and one-line errors with the right exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest
import requests

from tests.openstack_fixtures import *
from tests.openstack_fixtures import one_line, rows, write_clouds

# The SDK's warnings about itself (cm silences them for users; pytest resets filters per test).
pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")

OPENRC = {"OS_USERNAME": "demo", "OS_PASSWORD": "secret", "OS_PROJECT_NAME": "demo",
          "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default", "OS_REGION_NAME": "RegionOne",
          "OS_INTERFACE": "public", "OS_IDENTITY_API_VERSION": "3"}


def settled_count(fake, method, path, want, wait=2.0):
    """The fake logs a request just after answering it: give the last entry a moment to land."""
    deadline = time.monotonic() + wait
    while fake.request_count(method, path) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    return fake.request_count(method, path)


def test_cloud_list_reads_clouds_yaml_without_importing_openstack(cm_process, cloud, tmp_path):
    write_clouds(cloud, tmp_path / "clouds.yaml", lab={"auth": {"password": "hunter2-very-secret"}})
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "cm.main", "cloud", "list"],
                          check=False, capture_output=True, text=True, env=os.environ.copy(), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "fake" in proc.stdout and "lab" in proc.stdout and "clouds.yaml" in proc.stdout
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "import time:" in line]
    assert imported and not [m for m in imported if m.split(".")[0] in ("openstack", "keystoneauth1")]
    shown = cm_process("cloud", "show", "lab")
    assert shown.code == 0 and "hunter2" not in shown.out + shown.err


def test_clouds_yaml_is_found_where_openstacksdk_looks(cm, cloud, tmp_path, monkeypatch):
    monkeypatch.delenv("OS_CLIENT_CONFIG_FILE")
    home_config = tmp_path / "home" / ".config" / "openstack"
    home_config.mkdir(parents=True)
    write_clouds(cloud, home_config / "clouds.yaml", athome={})
    (tmp_path / "clouds.yaml").unlink()
    names = {r["name"] for r in rows(cm("cloud", "list", "-f", "json"))}
    assert {"fake", "athome"} <= names
    assert cm("flavor", "list", "--refresh", "--cloud", "athome").code == 0
    # ./clouds.yaml comes before ~/.config/openstack, as in openstacksdk
    write_clouds(cloud, tmp_path / "clouds.yaml", here={})
    names = {r["name"] for r in rows(cm("cloud", "list", "-f", "json"))}
    assert "here" in names and "athome" not in names


def test_a_broken_clouds_yaml_does_not_break_the_shell(cm, cloud, tmp_path):
    (tmp_path / "clouds.yaml").write_text("clouds: [unclosed\n")
    result = cm("cloud", "list", "-f", "json")
    assert result.code == 0
    assert [r["name"] for r in rows(result)] == ["local"]


def test_cloud_add_from_env_keeps_the_password_out_of_every_output(cm, cloud, monkeypatch, cm_home):
    for key, value in {**OPENRC, "OS_AUTH_URL": cloud.url}.items():
        monkeypatch.setenv(key, value)
    added = cm("cloud", "add", "rc", "--from-env")
    assert added.code == 0, added.err
    assert "secret" not in added.out + added.err
    assert stat.S_IMODE(os.stat(cm_home / "clouds.d" / "rc.yaml").st_mode) == 0o600
    shown = cm("cloud", "show", "rc", "-f", "json")
    record = rows(shown)[0]
    assert record["auth"]["password"] == "********" and record["auth"]["username"] == "demo"
    assert "secret" not in shown.out
    for name in OPENRC:  # the variables are read once, at `cloud add`
        monkeypatch.delenv(name)
    flavors = cm("flavor", "list", "--refresh", "--cloud", "rc", "-f", "json")
    assert flavors.code == 0, flavors.err
    assert "m1.tiny" in {f["name"] for f in rows(flavors)}


def test_cloud_add_from_env_with_a_token(cm, cloud, monkeypatch):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": "secret"}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}}
    token = requests.post(cloud.url + "/auth/tokens", json=body, timeout=10).headers["X-Subject-Token"]
    monkeypatch.setenv("OS_AUTH_URL", cloud.url)
    monkeypatch.setenv("OS_TOKEN", token)
    monkeypatch.setenv("OS_PROJECT_NAME", "demo")
    monkeypatch.setenv("OS_PROJECT_DOMAIN_NAME", "Default")
    assert cm("cloud", "add", "tok", "--from-env").code == 0
    shown = cm("cloud", "show", "tok", "-f", "json")
    assert rows(shown)[0]["auth_type"] == "v3token" and token not in shown.out
    images = cm("image", "list", "--refresh", "--cloud", "tok", "-f", "json")
    assert images.code == 0, images.err
    assert len(rows(images)) == 3


def test_cloud_add_from_env_without_an_openrc_is_a_usage_error(cm, cloud):
    result = cm("cloud", "add", "rc", "--from-env")
    assert result.code == 2
    assert "no OS_AUTH_URL in the environment" in one_line(result.err)


def test_a_cm_yaml_cloud_can_name_a_clouds_yaml_cloud(cm, cloud):
    assert cm("cloud", "add", "lab", "--kind", "openstack", "cloud=fake", "public_network=public").code == 0
    booted = cm("vm", "boot", "--name", "p1", "--public", "--cloud", "lab", "--image", "debian-12",
                "--flavor", "m1.small", "-f", "json")
    assert booted.code == 0, booted.err
    assert rows(booted)[0]["public_ips"][0].startswith("172.24.4.")


def test_wrong_password_is_one_line_without_the_password(cm, cloud, tmp_path):
    write_clouds(cloud, tmp_path / "clouds.yaml", badpw={"auth": {"password": "wrong-pass-123"}})
    result = cm("vm", "list", "--refresh", "--cloud", "badpw")
    assert result.code == 1
    line = one_line(result.err)
    assert "cloud 'badpw' rejected the credentials" in line
    assert "wrong-pass-123" not in result.out + result.err


def test_missing_credentials_are_a_config_error(cm, cloud, tmp_path):
    doc = cloud.clouds_yaml("fake")
    del doc["clouds"]["fake"]["auth"]["username"]
    (tmp_path / "clouds.yaml").write_text(json.dumps(doc))
    result = cm("vm", "list", "--refresh")
    assert result.code == 2  # a configuration error, not the cloud's refusal
    assert one_line(result.err) == "cm: cloud 'fake' lacks username (or user_id) in its configuration"
    assert cloud.request_count("POST", r"/auth/tokens$") == 0


def test_an_unreachable_cloud_is_one_line_after_bounded_retries(cm, cloud, tmp_path):
    write_clouds(cloud, tmp_path / "clouds.yaml",
                 down={"auth": {"auth_url": "http://127.0.0.1:9/identity/v3"}, "connect_retries": 1})
    started = time.monotonic()
    result = cm("image", "list", "--refresh", "--cloud", "down")
    assert result.code == 1
    assert "cannot reach the cloud" in one_line(result.err)
    assert time.monotonic() - started < 10


def test_5xx_and_dropped_connections_are_retried_quietly(cm, cloud):
    cloud.inject_fault("GET", r"/servers/detail", 503, count=2)
    result = cm("vm", "list", "--refresh", "-f", "json")
    assert (result.code, result.err) == (0, "")
    assert settled_count(cloud, "GET", r"/servers/detail", 3) == 3

    cloud.drop_connection("GET", r"/images", count=2)
    result = cm("image", "list", "--refresh", "-f", "json")
    assert (result.code, result.err) == (0, "")
    assert len(rows(result)) == 3

    cloud.inject_fault("POST", r"/servers$", 500, count=1)
    booted = cm("vm", "boot", "--name", "once", "-f", "json")
    assert booted.code == 0, booted.err
    assert [s["name"] for s in cloud.servers()] == ["once"]


def test_retries_are_bounded_and_end_in_one_line(cm, cloud):
    cloud.inject_fault("GET", r"/flavors", 503, count=10)
    started = time.monotonic()
    result = cm("flavor", "list", "--refresh")
    elapsed = time.monotonic() - started
    assert result.code == 1
    assert "could not list flavors: the cloud failed (HTTP 503, retried)" in one_line(result.err)
    assert settled_count(cloud, "GET", r"/flavors", 4) == 4  # one try and three retries
    assert 3.0 < elapsed < 10  # with backoff: 0.5 + 1 + 2 s


def test_conflicts_and_not_found_from_the_cloud_are_one_line(cm, cloud):
    assert cm("vm", "boot", "--name", "c1").code == 0
    cloud.inject_fault("POST", r"/action$", 409, message="Cannot 'stop' instance while it is in task_state "
                                                          "powering-off")
    result = cm("vm", "stop", "c1", "-f", "json")
    assert result.code == 1
    assert "Cannot 'stop' instance while it is in task_state powering-off" in rows(result)[0]["result"]
    cloud.inject_fault("GET", r"/os-quota-sets", 404, message="Project could not be found.")
    result = cm("quota")
    assert result.code == 2 and "not found: Project could not be found." in one_line(result.err)


def test_secrets_echoed_by_the_cloud_are_masked(cm, cloud):
    cloud.inject_fault("GET", r"/limits", 400, message="bad request from demo with password secret")
    result = cm("limits")
    assert result.code == 1
    line = one_line(result.err)
    assert "secret" not in line and "********" in line


def test_a_real_process_prints_no_sdk_logs_or_warnings(cm_process, cloud):
    cloud.inject_fault("GET", r"/servers/detail", 503, count=1)
    result = cm_process("vm", "list", "--refresh")
    assert (result.code, result.err) == (0, "")
    result = cm_process("vm", "boot", "--name", "quiet")
    assert result.code == 0
    assert result.err.strip() == "booted 1 of 1"
