"""Clusters on libvirt's test hypervisor (nothing boots there), recipes and their validation,
the rendered user-data against cloud-init's own schema, and what `cm vm list` may import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


@pytest.fixture
def local(cm, tmp_path):
    """The local cloud (the test hypervisor) with an image called cirros."""
    image = tmp_path / "cirros.qcow2"
    image.write_bytes(b"\0" * 4096)
    assert cm("image", "add", "cirros", str(image)).code == 0
    return cm


def test_launch_on_the_test_hypervisor_says_so_records_the_plan_and_does_not_wait(local):
    cm = local
    launched = cm("slurm", "-n", "2", "--name", "s1", "-f", "json")
    assert launched.code == 0, launched.err
    assert "libvirt's test hypervisor: nothing boots, so cm does not wait for readiness" in launched.err
    assert [(n["name"], n["role"], n["state"]) for n in json.loads(launched.out)] == [
        ("s1-head", "head", "running"), ("s1-worker1", "worker", "running"), ("s1-worker2", "worker", "running")]
    shown = json.loads(cm("cluster", "show", "s1", "-f", "json").out)
    assert (shown["state"], shown["simulated"], shown["nodes"]) == ("launching", True, "head=1, worker=2")
    vms = json.loads(cm("vm", "list", "-c", "name", "-c", "role", "-f", "json").out)
    assert vms == [{"name": "s1-head", "role": "head"}, {"name": "s1-worker1", "role": "worker"},
                   {"name": "s1-worker2", "role": "worker"}]
    grown = cm("cluster", "resize", "s1", "+1", "-f", "json")
    assert grown.code == 0 and [n["name"] for n in json.loads(grown.out)][-1] == "s1-worker3"
    assert cm("cluster", "resize", "s1", "-1").code == 0
    deleted = cm("cluster", "delete", "s1")
    assert deleted.code == 0, deleted.err
    assert json.loads(cm("vm", "list", "--refresh", "-f", "json").out) == []
    assert json.loads(cm("cluster", "list", "-f", "json").out) == []


def test_a_recipe_needing_public_ips_is_refused_on_a_cloud_without_them(local, cm_home):
    cm = local
    (cm_home / "launchers" / "web").mkdir(parents=True)
    (cm_home / "launchers" / "web.yaml").write_text(
        "name: web\ndescription: d\nroles:\n  front: {count: 1, public: true, user_data: web/front.j2}\n")
    (cm_home / "launchers" / "web" / "front.j2").write_text("#cloud-config\n")
    result = cm("launcher", "run", "web")
    assert result.code == 2
    assert one_line(result.err) == ("cm: cloud 'local' cannot assign public IPs: "
                                    "VMs get addresses on the libvirt network only")
    assert json.loads(cm("vm", "list", "-f", "json").out) == []


@pytest.mark.parametrize("recipe, message", [
    ("name: x\ndescription: d\nroles: {}\n", "key 'roles': {} should be non-empty"),
    ("name: x\ndescription: d\nroles:\n  head: {count: -1, user_data: t.j2}\n", "key 'roles.head.count'"),
    ("name: x\ndescription: d\nroles:\n  head: {count: 1}\n", "key 'roles.head': 'user_data' is a required property"),
    ("name: x\ndescription: d\ncolour: red\nroles:\n  head: {user_data: t.j2}\n", "key '(top level)': unknown key"),
    ("name: x\ndescription: d\nroles:\n  head: {user_data: missing.j2}\n",
     "key 'roles.head.user_data': template 'missing.j2' not found"),
    ("name: x\ndescription: d\nroles:\n  head: {user_data: t.j2, needs: [db]}\n",
     "key 'roles.head.needs': unknown role 'db'"),
    ("name: x\ndescription: [d\n", "not valid YAML"),
])
def test_a_bad_recipe_is_named_with_its_file_key_and_what_is_wrong(cm, cm_home, recipe, message):
    (cm_home / "launchers").mkdir()
    (cm_home / "launchers" / "x.yaml").write_text(recipe)
    (cm_home / "launchers" / "t.j2").write_text("#cloud-config\n")
    result = cm("launcher", "show", "x")
    assert result.code == 2
    line = one_line(result.err)
    assert str(cm_home / "launchers" / "x.yaml") in line and message in line
    listed = cm("launcher", "list", "-f", "json")  # the other launchers still list
    assert listed.code == 0 and [r["name"] for r in json.loads(listed.out)] == ["hadoop", "slurm"]
    assert "skipped a launcher" in listed.err


def test_an_undefined_template_variable_is_an_error_naming_the_template(local, cm_home):
    (cm_home / "launchers" / "u").mkdir(parents=True)
    (cm_home / "launchers" / "u.yaml").write_text("name: u\ndescription: d\nroles:\n  head: {user_data: u/h.j2}\n")
    (cm_home / "launchers" / "u" / "h.j2").write_text("#cloud-config\nhostname: {{ node.nmae }}\n")
    result = local("launcher", "run", "u", "--dryrun")
    assert result.code == 2
    assert "u/h.j2 line 2: 'dict object' has no attribute 'nmae'" in one_line(result.err)


def test_templates_run_sandboxed(local, cm_home):
    (cm_home / "launchers" / "evil").mkdir(parents=True)
    (cm_home / "launchers" / "evil.yaml").write_text("name: evil\ndescription: d\nroles:\n  head: {user_data: evil/h.j2}\n")
    (cm_home / "launchers" / "evil" / "h.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}\n")
    result = local("launcher", "run", "evil", "--dryrun")
    assert result.code == 2 and "unsafe" in one_line(result.err)


def test_launcher_list_and_show(cm):
    listed = json.loads(cm("launcher", "list", "-f", "json").out)
    assert {(r["name"], r["command"], r["roles"], r["source"]) for r in listed} == {
        ("slurm", "cm slurm", "head, worker", "shipped"), ("hadoop", "cm hadoop", "head, worker", "shipped")}
    shown = json.loads(cm("launcher", "show", "slurm", "-f", "json").out)
    assert shown["roles"]["worker"]["count"] == "n" and shown["resize"] == "worker"
    assert "partition" in shown["params"]


def _context(recipe_name: str, n: int = 2) -> tuple[object, dict]:
    """A launched-looking cluster of the shipped recipe, with addresses."""
    from cm import recipes
    from cm.clusters import plan

    recipe = recipes.load(recipes.shipped_dir() / f"{recipe_name}.yaml")
    return recipe, plan.offline(recipe, n)


@pytest.mark.parametrize("recipe_name", ["slurm", "hadoop"])
def test_every_roles_rendered_user_data_passes_cloud_init_schema(recipe_name, tmp_path):
    import base64
    import os

    from cm.clusters import plan

    cloud_init = shutil.which("cloud-init")
    if cloud_init is None:
        pytest.skip("cloud-init is not installed (scripts/install-system-packages.sh installs it)")
    recipe, cluster = _context(recipe_name)
    secrets = {s: base64.b64encode(os.urandom(1024)).decode() for s in recipe.data.get("secrets", [])}
    for role in recipe.roles:
        node = next(n for n in cluster["nodes"] if n["role"] == role)
        for name, text in (("launch", plan.user_data(cluster, recipe, secrets, node)),
                           ("dryrun", plan.user_data(cluster, recipe, plan.masked(recipe), node, placeholder=True))):
            path = tmp_path / f"{role}-{name}.yaml"
            path.write_text(text)
            # cloud-init is Debian's: its Python is /usr/bin/python3, not this virtualenv's.
            done = subprocess.run(["/usr/bin/python3", cloud_init, "schema", "--config-file", str(path)],
                                  capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
            assert done.returncode == 0, f"{recipe_name} {role} ({name}): {done.stdout}{done.stderr}"
            assert "Valid cloud-config" in done.stdout


def test_the_munge_key_is_fresh_per_cluster_and_kept_0600_outside_the_mirror(local, cm_home):
    cm = local
    assert cm("slurm", "-n", "1", "--name", "a").code == 0
    assert cm("slurm", "-n", "1", "--name", "b").code == 0
    files = sorted((cm_home / "clusters" / "local").iterdir())
    assert [f.name for f in files] == ["a.secrets.json", "b.secrets.json"]
    keys = [json.loads(f.read_text())["munge_key"] for f in files]
    assert keys[0] != keys[1] and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    mirror = (cm_home / "mirror.json").read_text()
    assert keys[0] not in mirror and keys[1] not in mirror
    assert cm("cluster", "delete", "a", "b").code == 0
    assert list((cm_home / "clusters" / "local").glob("*")) == []


def test_timeline_table_chart_and_png_of_two_launches_side_by_side(local, tmp_path):
    pytest.importorskip("matplotlib")
    cm = local
    assert cm("slurm", "-n", "2", "--name", "t1").code == 0
    assert cm("slurm", "-n", "3", "--name", "t2").code == 0
    png = tmp_path / "launches.png"
    shown = cm("cluster", "timeline", "t1", "t2", "--png", str(png))
    assert shown.code == 0, shown.err
    assert "t1  (0 .. " in shown.out and "t2-worker3 |" in shown.out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_one_shot_vm_list_imports_no_cluster_machinery():
    code = ("import sys; from cm.main import run; run(['vm', 'list', '-f', 'json']);"
            "print('HEAVY', [m for m in ('jinja2', 'jsonschema', 'matplotlib', 'cm.clusters', 'cm.recipes')"
            " if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


def test_hadoop_config_files_render_on_their_own_as_xml_naming_the_head():
    import xml.etree.ElementTree as ET

    from cm.clusters import plan

    recipe, cluster = _context("hadoop", 3)
    files = recipe.render_files(plan.context(cluster, recipe, {}, None))
    assert set(files) >= {"core-site.xml", "hdfs-site.xml", "yarn-site.xml", "mapred-site.xml"}
    props = {}
    for name in ("core-site.xml", "hdfs-site.xml", "yarn-site.xml", "mapred-site.xml"):
        for prop in ET.fromstring(files[name]).iter("property"):
            props[prop.findtext("name")] = prop.findtext("value").strip()
    assert props["fs.defaultFS"] == "hdfs://10.0.0.10:9000"
    assert props["yarn.resourcemanager.hostname"] == "10.0.0.10"
    assert props["dfs.replication"] == "2" and props["mapreduce.framework.name"] == "yarn"


def test_another_module_can_add_subcommands_to_cm_slurm_beside_its_launch_options(cm, monkeypatch, tmp_path):
    import cm.commands.slurm as slurm
    from cm.runner import build_parser

    ext = tmp_path / "cm_test_burst.py"
    ext.write_text("def add_subcommands(subs):\n"
                   "    p = subs.add_parser('burst', help='burst to a cloud')\n"
                   "    p.add_argument('--to')\n"
                   "    p.set_defaults(run=lambda ctx, args: ctx.say(f'bursting to {args.to}'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(slurm, "EXTENSIONS", ("cm_test_burst",))
    build_parser.cache_clear()
    try:
        burst = cm("slurm", "burst", "--to", "aws")
        assert burst.code == 0 and burst.out.strip() == "bursting to aws"
        plan = cm("slurm", "-n", "1", "--dryrun", "-f", "json")  # the launch options still work
        assert plan.code == 2 and "unknown image 'cirros'" in plan.err  # (no image on the bare test cloud)
    finally:
        build_parser.cache_clear()


def test_the_interactive_shell_and_scripts_launch_and_delete_clusters(local, tmp_path, capsys):
    import io

    from cm.context import Context
    from cm.shell import Shell

    app = Shell(Context())
    app.stdout = out = io.StringIO()
    app.onecmd_plus_hooks("slurm -n 1 --name sh1 -f json")
    assert app.last_result == 0, capsys.readouterr().err
    app.onecmd_plus_hooks("cluster list -f json")
    assert '"name": "sh1"' in out.getvalue()
    script = tmp_path / "clusters.cm"
    script.write_text("# a cluster from a script\ncluster nodes sh1 -f json\ncluster delete sh1\ncluster list -f json\n")
    ran = local(str(script))
    assert ran.code == 0, ran.err
    assert '"name": "sh1-worker1"' in ran.out and ran.out.rstrip().endswith("[]")
