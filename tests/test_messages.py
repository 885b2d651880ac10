"""What cm says: named failures, declared settings, required cloud settings, usage lines, the README tour."""

from __future__ import annotations

import json
import re
import textwrap
import time

import pytest

from tests.conftest import ROOT
from tests.test_kvm import qcow2_file


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_default_refuses_an_unknown_key_and_lists_the_known_ones(cm):
    result = cm("default", "CLOUD=fos")
    assert result.code == 2
    line = _one_line(result.err)
    assert line.startswith("cm: unknown default 'CLOUD' (known: cloud, flavor, format, group, image, key, login, ")
    assert "did you mean 'cloud'?" in line
    assert cm("default", "-f", "json").code == 0 and "CLOUD" not in cm("default").out
    assert cm("default", "imgae").code == 2  # showing one is checked the same way
    assert cm("default", "image=cirros", "--cloud", "local").code == 0


def test_a_plugin_declares_the_default_keys_it_reads(cm, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "cmzone-1.0.dist-info").mkdir(parents=True)
    (site / "cmzone-1.0.dist-info" / "entry_points.txt").write_text("[cm.plugins]\ncmzone = cmzone\n")
    (site / "cmzone.py").write_text(textwrap.dedent('''
        def register_settings(register):
            register("zone", "availability zone new VMs go to")
    '''))
    from cm.plugins import registry

    with monkeypatch.context() as patch:
        patch.syspath_prepend(str(site))
        registry.cache_clear()
        assert cm("default", "zone=nova").code == 0
        assert cm("default", "zone", "-f", "value", "-c", "value").out.strip() == "nova"
    registry.cache_clear()
    assert cm("default", "zone=nova").code == 2  # without the plugin nobody reads it


@pytest.mark.parametrize("words, needs", [
    (["--kind", "kvm"], "cm: cloud add: a cloud of kind 'kvm' needs uri=VALUE"),
    (["--kind", "openstack", "region_name=r1"],
     "cm: cloud add: a cloud of kind 'openstack' needs auth_url=VALUE or cloud=VALUE or auth=VALUE"),
])
def test_cloud_add_checks_the_settings_its_kind_requires(cm, cm_home, words, needs):
    result = cm("cloud", "add", "lab", *words)
    assert result.code == 2 and _one_line(result.err) == needs
    assert not (cm_home / "clouds.d" / "lab.yaml").exists()


def test_cloud_remove_help_says_what_it_does(cm):
    text = " ".join(cm("help", "cloud", "remove").out.split())
    assert "added with `cm cloud add`" in text and "deletes clouds.d/NAME.yaml" in text
    assert "registered in cm.yaml" not in text


def test_usage_lines_read_as_what_the_user_types(cm):
    assert cm("help", "vm", "boot").out.startswith("usage: cm vm boot ")
    assert cm("vm", "boot", "--help").out.startswith("usage: cm vm boot ")
    assert cm("default", "--help").out.startswith("usage: cm default ")


@pytest.mark.parametrize("words, message", [
    (["vm", "list", "-f", "xml"], "cm: vm list: argument -f/--format: invalid choice: 'xml'"),
    (["refresh", "vm", "--cloud"], "cm: refresh: argument --cloud: expected one argument"),
    (["default", "format=json", "stray"], "cm: default: expected KEY=VALUE, got 'stray'"),
    (["var", "a=1", "stray"], "cm: var: expected NAME=VALUE, got 'stray'"),
])
def test_usage_errors_name_what_was_wrong(cm, words, message):
    result = cm(*words)
    assert result.code == 2 and _one_line(result.err).startswith(message)


def test_the_readme_tour_runs_for_any_user_and_any_counter(cm, monkeypatch, tmp_path):
    monkeypatch.setenv("USER", "alice")
    monkeypatch.setenv("LOGNAME", "alice")
    tour = ROOT.joinpath("README.md").read_text().split("## A quick tour", 1)[1].split("```console", 1)[1]
    lines = [re.sub(r"\s+#.*", "", line[len("$ cm "):]).split() for line in tour.split("```", 1)[0].splitlines()
             if line.startswith("$ cm ")]
    assert cm("cloud", "add", "chameleon", "--kind", "kvm", "uri=test:///default").code == 0
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    assert cm("vm", "boot", "--name", "earlier").code == 0 and cm("vm", "boot").code == 0  # alice-001 is taken
    for words in lines:
        result = cm(*words)
        assert result.code == 0, (words, result.err)
    assert cm("vm", "list", "--cloud", "local", "-f", "value", "-c", "name").out.split() == ["alice-001", "earlier"]


def _dead_cloud(cm, port: int = 20555) -> None:
    assert cm("cloud", "add", "dead", "--kind", "openstack", f"auth_url=http://127.0.0.1:{port}/v3", "username=u",
              "password=pw", "project_name=p", "user_domain_name=Default", "project_domain_name=Default").code == 0


def test_a_refused_connection_is_reported_at_once(cm):
    pytest.importorskip("openstack")
    _dead_cloud(cm)
    started = time.monotonic()
    result = cm("vm", "list", "--refresh", "--cloud", "dead")
    elapsed = time.monotonic() - started
    assert result.code == 1
    assert "cannot reach the cloud" in result.err and "connection refused" in result.err
    assert elapsed < 0.8, f"{elapsed:.1f} s: a refused connection was retried"


def test_list_all_clouds_shows_those_that_answered_and_names_the_one_that_failed(cm, tmp_path):
    pytest.importorskip("openstack")
    _dead_cloud(cm)
    assert cm("image", "add", "cirros", str(qcow2_file(tmp_path / "c.qcow2"))).code == 0
    assert cm("vm", "boot", "--n", "2").code == 0
    result = cm("vm", "list", "--cloud", "all", "--refresh", "-f", "json")
    assert result.code == 1
    assert [vm["name"] for vm in json.loads(result.out)] == ["tester-001", "tester-002"]
    lines = result.err.strip().splitlines()
    assert lines[0].startswith("cm: cloud 'dead' could not list VMs: cannot reach the cloud")
    assert lines[-1] == "cm: 1 of 2 clouds did not answer (dead); listed the others"


def test_uri_auto_says_which_hypervisor_whenever_it_changes(cm, cm_home, monkeypatch):
    import yaml

    config = yaml.safe_load((cm_home / "cm.yaml").read_text())
    config["clouds"]["local"]["uri"] = "auto"
    (cm_home / "cm.yaml").write_text(yaml.safe_dump(config))
    absent, present = "qemu+unix:///system?socket=/nonexistent/sock", "test:///default"

    def listing(daemon: str) -> str:
        monkeypatch.setattr("cm_plugins.kvm.connection.SYSTEM_URI", daemon)
        result = cm("vm", "list", "--refresh", "-f", "json")
        assert result.code == 0, result.err
        return result.err

    assert "using libvirt's test hypervisor instead" in listing(absent)
    assert listing(absent) == ""  # the same as last time: nothing to say
    came = listing(present)  # a daemon answers now (libvirt's test driver standing in for qemu:///system)
    assert came.strip() == (f"cm: cloud 'local': using the libvirt daemon at {present}; the test hypervisor's VMs "
                            f"stay in {cm_home / 'kvm-test' / 'local.xml'}")
    assert listing(present) == ""
    assert "using libvirt's test hypervisor instead" in listing(absent)  # it went away again: said again
    assert "using the libvirt daemon" in listing(present)
