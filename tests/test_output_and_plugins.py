"""One output layer for every list and show; plugins through entry points."""

from __future__ import annotations

import csv
import io
import json
import sys
import textwrap

import pytest
import yaml

from cm.output import render


@pytest.fixture
def three_vars(cm):
    cm("var", "b=2", "a=10", "c=3")
    return cm


@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "value", "table"])
def test_every_format_renders_the_same_rows(three_vars, fmt):
    out = three_vars("var", "list", "-f", fmt, "--sort-column", "name").out
    if fmt == "json":
        rows = json.loads(out)
    elif fmt == "yaml":
        rows = yaml.safe_load(out)
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
    elif fmt == "value":
        rows = [dict(zip(["name", "value"], line.split())) for line in out.splitlines()]
    else:
        rows = [dict(zip(["name", "value"], [c.strip() for c in line.strip("│").split("│")]))
                for line in out.splitlines()[3:-1]]
    assert rows == [{"name": "a", "value": "10"}, {"name": "b", "value": "2"}, {"name": "c", "value": "3"}]


def test_columns_select_and_order(three_vars):
    out = three_vars("var", "list", "-f", "csv", "-c", "value", "-c", "name", "--sort-column", "value").out
    assert out.splitlines() == ["value,name", "10,a", "2,b", "3,c"]


def test_show_renders_one_record_as_field_value_or_object(cm):
    table = cm("cloud", "show", "local").out
    assert "Field" in table and "Value" in table and "test:///default" in table
    assert json.loads(cm("cloud", "show", "local", "-f", "json").out)["kind"] == "kvm"
    assert cm("cloud", "show", "local", "-f", "value", "-c", "kind").out.strip() == "kvm"


def test_tables_fit_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    rows = [{"name": "vm-1", "note": "x" * 200, "state": "running"}]
    out = render(["name", "note", "state"], rows, "table")
    assert max(len(line) for line in out.splitlines()) <= 60
    assert "running" in out
    monkeypatch.setenv("COLUMNS", "80")  # seven columns whose headers alone take half the width
    wide = [{"name": "compute01", "cloud": "fake", "state": "running", "image": "debian-12-genericcloud",
             "flavor": "m1.small", "public_ips": ["172.24.4.10"], "private_ips": ["10.0.0.12", "10.0.0.13"]}]
    columns = list(wide[0])
    assert max(len(line) for line in render(columns, wide, "table").splitlines()) <= 80
    monkeypatch.delenv("COLUMNS")
    assert max(len(line) for line in render(["name", "note", "state"], rows, "table").splitlines()) > 200


def _install_plugin(tmp_path, monkeypatch, name: str, module_source: str) -> None:
    """A real installed distribution on sys.path with a cm.plugins entry point."""
    site = tmp_path / f"site-{name}"
    (site / f"{name}-1.2.dist-info").mkdir(parents=True)
    (site / f"{name}-1.2.dist-info" / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2\n")
    (site / f"{name}-1.2.dist-info" / "entry_points.txt").write_text(f"[cm.plugins]\n{name} = {name}\n")
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    monkeypatch.syspath_prepend(str(site))
    from cm.plugins import registry

    registry.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_registry():
    from cm.plugins import registry

    registry.cache_clear()
    yield
    registry.cache_clear()


def test_a_plugin_adds_a_command_and_a_cloud_kind_without_touching_cm(tmp_path, monkeypatch, cm):
    _install_plugin(tmp_path, monkeypatch, "cmhello", '''
        from cm.provider import Provider

        HELP = "Say hello."

        def build(parser):
            parser.add_argument("who")
            parser.set_defaults(run=lambda ctx, args: ctx.say(f"hello {args.who}"))

        class Dummy(Provider):
            kind = "dummy"

        def register_providers(register):
            register("dummy", "cmhello:Dummy")

        def register_commands(register):
            register("hello", "cmhello")
    ''')
    assert cm("hello", "world").out.strip() == "hello world"
    plugins = {p["name"]: p for p in json.loads(cm("plugins", "-f", "json").out)}
    assert plugins["cmhello"]["package"] == "cmhello" and plugins["cmhello"]["version"] == "1.2"
    assert plugins["cmhello"]["kinds"] == ["dummy"] and plugins["cmhello"]["commands"] == ["hello"]
    assert plugins["kvm"]["status"] == "loaded"
    assert cm("cloud", "add", "d", "--kind", "dummy").code == 0
    # a verb the kind cannot do is a one-line error naming the cloud and the verb
    result = cm("vm", "list", "--cloud", "d", "--refresh")
    assert result.code == 2 and result.err.strip() == "cm: cloud 'd' cannot list VMs"


def test_a_broken_plugin_is_reported_and_skipped(tmp_path, monkeypatch, cm):
    _install_plugin(tmp_path, monkeypatch, "cmbroken", "raise RuntimeError('boom')\n")
    result = cm("plugins", "-f", "json")
    assert result.code == 1
    assert "plugin 'cmbroken' (cmbroken 1.2) failed to load and was skipped: RuntimeError: boom" in result.err
    status = {p["name"]: p["status"] for p in json.loads(result.out)}
    assert status["cmbroken"].startswith("failed") and status["core"] == "loaded"
    assert cm("var", "list").code == 0


def test_listing_kinds_does_not_import_provider_sdks(cm_process):
    import subprocess

    code = ("import sys; from cm.main import run; run(['plugins']); run(['cloud', 'list']); run(['vm', 'list']);"
            "print('SDK', [m for m in ('openstack', 'libvirt', 'cmd2') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "SDK []" in out


def test_one_shot_vm_list_imports_nothing_heavy(cm):
    """What `cm vm list` may not import, once the first run has cached the parsed config."""
    import subprocess

    assert cm("vm", "list").code == 0
    heavy = ("openstack", "libvirt", "cmd2", "yaml", "tabulate", "tinydb", "filelock", "dataclasses", "inspect",
             "rich", "importlib.metadata", "subprocess")
    code = (f"import sys; from cm.main import run; run(['vm', 'list', '-f', 'json']);"
            f"print('HEAVY', [m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert "HEAVY []" in out


def test_a_provider_lists_the_verbs_it_implements(cm):
    shown = json.loads(cm("cloud", "show", "local", "-f", "json").out)
    assert {"create_vm", "list_vms", "stop_vm", "add_image"} <= set(shown["verbs"])
    assert "resize_vm" not in shown["verbs"]


def test_fast_table_draws_exactly_what_tabulate_draws():
    import tabulate

    from cm.table import grid as _grid

    columns = ["name", "state", "ips"]
    table = [["vm-1", "running", "10.0.0.1, 10.0.0.2"], ["a-much-longer-name", "", "x"]]
    tabulate.MIN_PADDING = 0
    assert _grid(columns, table) == tabulate.tabulate(table, headers=columns, tablefmt="simple_outline",
                                                      disable_numparse=True)
    assert _grid(columns, []) == tabulate.tabulate([], headers=columns, tablefmt="simple_outline")
