"""Defaults with their sources, the documented precedence, variables, clouds and secrets."""

from __future__ import annotations

import json
import stat

import yaml


def _default(cm, key, *extra):
    rows = json.loads(cm("default", key, "-f", "json", *extra).out)
    return rows[0]["value"], rows[0]["source"]


def test_first_run_creates_private_config_from_shipped_defaults_and_never_overwrites(cm, cm_home):
    (cm_home / "cm.yaml").unlink()
    assert cm("default").code == 0
    config = cm_home / "cm.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    config.write_text(config.read_text().replace("flavor: small", "flavor: large", 1))
    cm("default")
    assert "flavor: large" in config.read_text()


def test_user_directory_is_created_private(cm, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh" / "cm"
    monkeypatch.setenv("CM_HOME", str(fresh))
    assert cm("default").code == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / "cm.yaml").stat().st_mode) == 0o600


def test_clouds_in_cm_yaml_are_removed_there_not_by_cm(cm):
    result = cm("cloud", "remove", "local")
    assert result.code == 2  # the active cloud
    cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default")
    cm("default", "cloud=lab")
    result = cm("cloud", "remove", "local")
    assert result.code == 2 and "is defined in" in result.err and "remove it there" in result.err


def test_a_password_in_a_uri_is_masked(cm):
    cm("cloud", "add", "far", "--kind", "kvm", "uri=qemu+ssh://me:pa55word@lab/system")
    for words in (["cloud", "list"], ["cloud", "show", "far"], ["cloud", "list", "-f", "json"]):
        out = cm(*words).out
        assert "pa55word" not in out and "me:********@lab" in out


def test_precedence_option_over_cloud_over_global_over_shipped(cm):
    assert _default(cm, "timeout") == (600, "cm.yaml defaults")
    cm("default", "timeout=30")
    assert _default(cm, "timeout") == (30.0, "cm default")
    cm("default", "timeout=5", "--cloud", "local")
    assert _default(cm, "timeout", "--cloud", "local") == (5.0, "cm default --cloud local")
    # the global value still shows without --cloud
    assert _default(cm, "timeout") == (30.0, "cm default")
    cm("default", "delete", "timeout", "--cloud", "local")
    cm("default", "delete", "timeout")
    assert _default(cm, "timeout") == (600, "cm.yaml defaults")


def test_shipped_default_applies_when_the_users_file_lacks_a_key(cm, cm_home):
    config = yaml.safe_load((cm_home / "cm.yaml").read_text())
    del config["defaults"]["format"]
    (cm_home / "cm.yaml").write_text(yaml.safe_dump(config))
    assert _default(cm, "format") == ("table", "shipped")


def test_explicit_option_wins_everywhere(cm):
    from cm.context import Context

    cm("default", "flavor=large", "--cloud", "local")
    ctx = Context()
    assert ctx.setting("flavor", "local", explicit="tiny") == ("tiny", "option")
    assert ctx.setting("flavor", "local") == ("large", "cm default --cloud local")


def test_default_format_applies_to_every_list(cm):
    cm("default", "format=csv")
    assert cm("cloud", "list").out.startswith("name,kind,active,source,where")
    assert cm("cloud", "list", "-f", "value", "-c", "name").out.strip() == "local"


def test_default_cloud_switches_every_later_command(cm):
    cm("cloud", "add", "lab", "--kind", "kvm", "uri=test:///default")
    assert cm("default", "cloud=lab").code == 0
    rows = json.loads(cm("cloud", "list", "-f", "json").out)
    assert [r["name"] for r in rows if r["active"] == "*"] == ["lab"]
    assert "remove it" not in cm("cloud", "remove", "lab").err
    assert cm("cloud", "remove", "lab").code == 2  # the active cloud cannot be removed


def test_delete_of_an_unset_default_is_an_error(cm):
    result = cm("default", "delete", "nothing")
    assert result.code == 2 and "no default nothing" in result.err


def test_variables_set_list_delete_and_expand(cm):
    assert cm("var", "cl=local", "f=json").code == 0
    assert json.loads(cm("cloud", "show", "$cl", "-f", "$f").out)["name"] == "local"
    assert cm("var", "delete", "cl").code == 0
    assert cm("var", "delete", "cl").code == 2
    assert [v["name"] for v in json.loads(cm("var", "list", "-f", "json").out)] == ["f"]
    assert cm("var", "bad-name=1").code == 2


def test_cloud_add_show_remove_with_secrets_masked(cm, cm_home):
    assert cm("cloud", "add", "site", "--kind", "kvm", "uri=qemu+ssh://me@lab/system",
              "password=hunter2", "api_key=abc123").code == 0
    shown = cm("cloud", "show", "site", "-f", "json")
    record = json.loads(shown.out)
    assert record["uri"] == "qemu+ssh://me@lab/system"
    assert record["password"] == "********" and record["api_key"] == "********"
    for words in (["cloud", "show", "site"], ["cloud", "list"], ["cloud", "show", "site", "-f", "yaml"]):
        assert "hunter2" not in cm(*words).out
    added = cm_home / "clouds.d" / "site.yaml"
    assert "hunter2" in added.read_text()
    assert stat.S_IMODE(added.stat().st_mode) == 0o600
    assert "site" not in (cm_home / "cm.yaml").read_text()  # cm never rewrites the user's file
    assert cm("cloud", "add", "site", "--kind", "kvm").code == 2  # exists already
    assert cm("cloud", "remove", "site").code == 0
    assert cm("cloud", "show", "site").code == 2


def test_cloud_add_rejects_unknown_kinds(cm):
    result = cm("cloud", "add", "x", "--kind", "vmware")
    assert result.code == 2 and "unknown cloud kind 'vmware'" in result.err


def test_broken_config_file_is_a_one_line_error_and_is_not_overwritten(cm, cm_home):
    (cm_home / "cm.yaml").write_text("clouds: [unclosed\n")
    result = cm("cloud", "list")
    assert result.code == 2 and "not valid YAML" in result.err
    assert (cm_home / "cm.yaml").read_text() == "clouds: [unclosed\n"
