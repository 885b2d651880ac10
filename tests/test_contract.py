"""The provider contract through the shell: one set of tests, run on every cloud kind.

Each test runs once per kind (``cloud``: kvm on libvirt's test hypervisor, openstack on the
local OpenStack API server, both set up by their own tests' fixtures; comet on the Nucleus
service with a real Slurm) and drives `cm` exactly as a user does.  The bodies never ask which
kind they run on: what a cloud can do comes from `cm cloud show`'s ``verbs`` or from how it
behaves (libvirt renames only stopped VMs; the test hypervisor has no console), and what boot
uses, how two running VMs come about (booted, or a Comet computeset of fixed nodes) and what the
cloud had before from the fixture.  A verb a cloud lacks is proven refused, in one line, by
``test_verbs_not_implemented_are_refused_naming_cloud_and_verb`` and
``test_bulk_verbs_not_implemented_are_refused_up_front``; the tests that need it skip saying so.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.openstack_fixtures import cloud as openstack_cloud  # noqa: F401  (fixtures, by name)
from tests.openstack_fixtures import fake, one_line, rows  # noqa: F401
from tests.test_kvm import image as kvm_image  # noqa: F401
from tests.test_kvm import qcow2_file

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")

SUSPENDED = {"suspended", "paused"}  # the states `vm suspend` may settle in (cm.commands.vm.LIFECYCLE)
# Contract verb -> (a command line that needs only that verb, what `cloud 'NAME' cannot ...` says).
COMMANDS = {
    "add_image": ("image add extra {path}", "add images"), "resize_vm": ("vm resize {vm} --flavor {flavor}",
                                                                          "resize VMs"),
    "list_keys": ("key list --refresh --cloud {cloud}", "list keys"), "upload_key": ("key upload", "upload keys"),
    "delete_key": ("key delete k1", "delete keys"), "list_networks": ("network list --refresh", "list networks"),
    "list_secgroups": ("secgroup list --refresh", "list security groups"),
    "add_secgroup": ("secgroup add g1", "add security groups"),
    "list_floating_ips": ("ip list --refresh", "list floating IPs"),
    "create_floating_ip": ("ip create", "create floating IPs"),
    "quotas": ("quota", "show quotas"), "limits": ("limits", "show limits"), "usage": ("usage", "show usage"),
    "create_vm": ("vm boot", "boot VMs"), "list_images": ("image list --refresh", "list images"),
    "list_flavors": ("flavor list --refresh", "list flavors"),
}
BULK_COMMANDS = {"assign_public_ip": ("vm ip assign {vm}", "assign public IPs"),
                 "release_public_ip": ("vm ip release {vm}", "release public IPs"),
                 "delete_vm": ("vm delete {vm}", "delete VMs"), "suspend_vm": ("vm suspend {vm}", "suspend VMs"),
                 "resume_vm": ("vm resume {vm}", "resume VMs")}
REFUSED = "refused in one line by test_verbs_not_implemented_are_refused_naming_cloud_and_verb"
BULK_REFUSED = "refused up front by test_bulk_verbs_not_implemented_are_refused_up_front"


@dataclass
class Cloud:
    """The active cloud of a test: its name, what its VMs are made of, and what `cloud show` says it can do."""

    name: str
    image: str  # what boot uses (or the fixed nodes are)
    flavor: str
    verbs: list[str]
    home: Path
    start_two: Callable[[], list[str]]  # two running VMs, as a user of this cloud gets them
    before: dict[str, str] = field(default_factory=dict)  # name -> state of the VMs it had before any test made one
    clusters: list[str] = field(default_factory=list)  # the clusters it keeps itself (`cm cluster list`)
    quiet_consoles: bool = False  # its guests print nothing (libvirt's test hypervisor behind a service)

    def can(self, verb: str) -> bool:
        return verb in self.verbs

    def with_states(self, states: dict[str, str]) -> dict[str, str]:
        """What `vm list` shows: the VMs it had, with ``states`` of those the test made or changed."""
        return {**self.before, **states}


def booting(cm) -> Callable[[], list[str]]:
    def boot_two() -> list[str]:
        booted = cm("vm", "boot", "--n", "2", "-f", "json")
        assert booted.code == 0, booted.err
        return [v["name"] for v in rows(booted)]
    return boot_two


@pytest.fixture(params=["kvm", "openstack", "comet"])
def cloud(request: pytest.FixtureRequest, cm, cm_home: Path) -> Cloud:
    """One cloud of each kind, active, with a bootable image and a flavor as its defaults (or fixed nodes)."""
    if request.param == "comet":
        return request.getfixturevalue("comet_cloud")
    request.getfixturevalue({"kvm": "kvm_image", "openstack": "openstack_cloud"}[request.param])
    name = next(c["name"] for c in rows(cm("cloud", "list", "-f", "json")) if c["active"])
    defaults = {d["key"]: d["value"] for d in rows(cm("default", "-f", "json")) if d["cloud"] == name}
    verbs = rows(cm("cloud", "show", name, "-f", "json"))[0]["verbs"]
    return Cloud(name, defaults["image"], defaults["flavor"], verbs, cm_home, booting(cm))


@pytest.fixture(scope="module")
def comet_slurm():
    """The Slurm of the comet clouds of this module (three nodes on loopback)."""
    pytest.importorskip("fastapi", reason="the Nucleus service needs pip install 'cm[comet-service]'")
    from tests.comet.nucleus import free_ports, prefix
    from tests.infra.slurm import SlurmCluster

    with SlurmCluster(prefix("comet-c"), free_ports(4), nodes=3) as cluster:
        yield cluster


@pytest.fixture
def comet_cloud(cm, cm_home: Path, comet_slurm) -> Cloud:
    """A comet cloud on the Nucleus service: cluster vc1, frontend vc1 and computes vm-vc1-[0-3] of 1 CPU, 128 MiB."""
    from tests.comet.nucleus import PASSWORDS, serving, test_driver_hosts

    work = Path(tempfile.mkdtemp(prefix="cm-contract-comet-"))
    try:
        with serving(work / "service", comet_slurm, test_driver_hosts(work)) as service:
            assert cm("cloud", "add", "comet", "--kind", "comet", f"base_url={service.base}", "username=alice",
                      f"password={PASSWORDS['alice']}").code == 0
            assert cm("default", "cloud=comet").code == 0

            def start_two() -> list[str]:  # a computeset of two nodes: they run while its Slurm job does
                started = cm("comet", "start", "vc1", "--count", "2", "--walltime", "30m", "-f", "json")
                assert started.code == 0, started.err
                from cm.names import expand

                return expand([rows(started)[0]["nodes"]])

            verbs = rows(cm("cloud", "show", "comet", "-f", "json"))[0]["verbs"]
            yield Cloud("comet", "", "1cpu-128MiB", verbs, cm_home, start_two, before=listed(cm, "--refresh"),
                        clusters=["vc1"], quiet_consoles=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def two(cm, cloud: Cloud) -> list[str]:
    return cloud.start_two()


def listed(cm, *options: str) -> dict[str, str]:
    """name -> state of `vm list` (from the mirror, or the cloud with --refresh)."""
    result = cm("vm", "list", *options, "-f", "json")
    assert result.code == 0, result.err
    return {v["name"]: v["state"] for v in rows(result)}


def status(cm, name: str) -> str:
    return rows(cm("vm", "status", name, "-f", "json"))[0]["state"]


def act(cm, verb: str, name: str) -> str:
    """Run a lifecycle verb on one VM; the state it settled in."""
    result = cm("vm", verb, name, "-f", "json")
    assert result.code == 0, (verb, result.out, result.err)
    return rows(result)[0]["state"]


# -- boot, list, show -----------------------------------------------------------------------------------
def test_boot_n_gives_running_vms_with_generated_names_and_addresses(cm, cloud):
    if not cloud.can("create_vm"):
        pytest.skip(f"cloud {cloud.name} cannot boot VMs: {REFUSED}")
    booted = cm("vm", "boot", "--n", "2", "-f", "json")
    assert booted.code == 0 and booted.err.strip().endswith("booted 2 of 2"), booted.err
    vms = rows(booted)
    assert [(v["name"], v["cloud"], v["state"], v["result"]) for v in vms] == \
        [(f"tester-00{n}", cloud.name, "running", "booted") for n in (1, 2)]
    assert [(v["image"], v["flavor"]) for v in vms] == [(cloud.image, cloud.flavor)] * 2
    assert all(v["private_ips"] for v in vms)
    assert len({v["private_ips"][0] for v in vms}) == 2


def test_list_show_and_status_from_the_mirror_and_the_cloud(cm, cloud, two):
    assert listed(cm) == listed(cm, "--refresh") == cloud.with_states(dict.fromkeys(two, "running"))
    shown = rows(cm("vm", "show", two[0], "-f", "json"))[0]
    fresh = rows(cm("vm", "show", two[0], "--refresh", "-f", "json"))[0]
    assert (shown["name"], shown["cloud"], shown["state"], shown["image"], shown["flavor"]) == \
        (two[0], cloud.name, "running", cloud.image, cloud.flavor)
    assert (fresh["id"], fresh["private_ips"]) == (shown["id"], shown["private_ips"]) and fresh["id"]
    assert [status(cm, n) for n in two] == ["running", "running"]
    only = cm("vm", "list", two[1], "-c", "name", "-f", "value")
    assert only.out.split() == [two[1]]


# -- the lifecycle -------------------------------------------------------------------------------------
def test_stop_start_reboot_reach_the_shared_states(cm, cloud, two):
    vm, other = two
    assert act(cm, "stop", vm) == status(cm, vm) == "stopped"
    assert listed(cm) == cloud.with_states({vm: "stopped", other: "running"}) == listed(cm, "--refresh")
    assert act(cm, "start", vm) == status(cm, vm) == "running"
    assert act(cm, "reboot", vm) == status(cm, vm) == "running"
    assert listed(cm) == cloud.with_states(dict.fromkeys(two, "running"))


def test_suspend_resume_reach_the_shared_states(cm, cloud, two):
    if not (cloud.can("suspend_vm") and cloud.can("resume_vm")):
        pytest.skip(f"cloud {cloud.name} cannot suspend VMs: {BULK_REFUSED}")
    vm = two[0]
    assert act(cm, "suspend", vm) in SUSPENDED and status(cm, vm) in SUSPENDED
    assert listed(cm, "--refresh")[vm] in SUSPENDED
    assert act(cm, "resume", vm) == status(cm, vm) == "running"
    assert listed(cm) == cloud.with_states(dict.fromkeys(two, "running"))


def test_start_and_stop_reach_their_state_from_any_settled_state(cm, cloud, two):
    vm = two[0]
    suspends = cloud.can("suspend_vm") and cloud.can("resume_vm")
    assert act(cm, "start", vm) == "running"  # already running: nothing to do
    if suspends:
        assert act(cm, "suspend", vm) in SUSPENDED and act(cm, "suspend", vm) in SUSPENDED
    assert act(cm, "stop", vm) == "stopped"  # from suspended where the cloud suspends
    assert act(cm, "stop", vm) == status(cm, vm) == "stopped"
    if suspends:
        assert act(cm, "resume", two[1]) == "running"
        assert act(cm, "suspend", two[1]) in SUSPENDED
    assert act(cm, "start", two[1]) == "running"
    assert listed(cm, "--refresh") == cloud.with_states({vm: "stopped", two[1]: "running"})


@pytest.mark.parametrize("verb, done", [("suspend", "suspended"), ("resume", "resumed"), ("reboot", "rebooted")])
def test_a_verb_a_stopped_vm_cannot_do_says_start_it_first(cm, cloud, two, verb, done):
    if not cloud.can(f"{verb}_vm"):
        pytest.skip(f"cloud {cloud.name} cannot {verb} VMs: {BULK_REFUSED}")
    act(cm, "stop", two[0])
    result = cm("vm", verb, two[0], "-f", "json")
    assert result.code == 1 and result.err.strip() == "1 of 1 failed"
    assert rows(result)[0]["result"] == \
        f"failed: {two[0]} is stopped, so it cannot be {done}; start it first (cm vm start {two[0]})"
    assert status(cm, two[0]) == "stopped"


def test_rename_keeps_the_vm_under_its_new_name(cm, cloud, two):
    old = two[0]
    renamed = cm("vm", "rename", old, "renamed")
    if renamed.code:  # a cloud that renames only stopped VMs says so, and how
        assert renamed.code == 1 and f"`cm vm stop {old}`" in one_line(renamed.err)
        act(cm, "stop", old)
        renamed = cm("vm", "rename", old, "renamed")
    assert renamed.code == 0 and renamed.out.strip() == f"renamed {old} to renamed", renamed.err
    names = sorted({*cloud.before, *two} - {old} | {"renamed"})
    assert sorted(listed(cm)) == sorted(listed(cm, "--refresh")) == names
    assert act(cm, "start", "renamed") == "running"
    taken = cm("vm", "rename", "renamed", two[1])
    assert taken.code == 2 and one_line(taken.err) == f"cm: a VM named '{two[1]}' already exists on cloud '{cloud.name}'"


def test_console_prints_output_or_says_it_cannot(cm, cloud, two):
    result = cm("vm", "console", two[0], "--lines", "5")
    if cloud.quiet_consoles:  # a console that works, where nothing was printed
        assert (result.code, result.out.strip(), result.err) == (0, "", "")
        pytest.skip(f"the guests of cloud {cloud.name} print nothing here (libvirt's test hypervisor)")
    if result.code == 2:
        assert one_line(result.err).startswith(f"cm: cloud '{cloud.name}' cannot show consoles")
        pytest.skip(f"cloud {cloud.name} has no console here: {result.err.strip()}")
    assert result.code == 0 and result.out.strip(), result.err
    assert len(result.out.strip().splitlines()) <= 5


# -- delete and refresh --------------------------------------------------------------------------------------
def test_delete_removes_the_vm_from_the_cloud_and_the_mirror(cm, cloud, two):
    if not cloud.can("delete_vm"):
        pytest.skip(f"cloud {cloud.name} cannot delete VMs: {BULK_REFUSED}")
    deleted = cm("vm", "delete", two[0], "-f", "json")
    assert deleted.code == 0 and deleted.err.strip() == "deleted 1 of 1"
    assert rows(deleted)[0]["result"] == "deleted"
    assert listed(cm) == {two[1]: "running"}
    assert listed(cm, "--refresh") == {two[1]: "running"}
    gone = cm("vm", "show", two[0])
    assert gone.code == 2 and f"unknown VM '{two[0]}' on cloud '{cloud.name}'" in one_line(gone.err)


def test_refresh_drops_vms_gone_from_the_cloud(cm, cloud, two):
    if not cloud.can("delete_vm"):
        pytest.skip(f"cloud {cloud.name} cannot delete VMs, so none goes: {BULK_REFUSED}")
    mirror = cloud.home / "mirror.json"
    shutil.copy(mirror, mirror.with_suffix(".before"))
    assert cm("vm", "delete", two[1]).code == 0
    shutil.copy(mirror.with_suffix(".before"), mirror)  # a mirror that still has it: deleted elsewhere
    assert listed(cm) == dict.fromkeys(two, "running")
    shown = cm("vm", "show", two[1], "--refresh")
    assert shown.code == 2 and one_line(shown.err).startswith(f"cm: no VM '{two[1]}' on cloud '{cloud.name}'")
    stopped = cm("vm", "stop", two[1], "-f", "json")
    assert stopped.code == 1 and f"no VM '{two[1]}' on cloud '{cloud.name}'" in rows(stopped)[0]["result"]
    assert cm("refresh", "vm").code == 0
    assert listed(cm) == {two[0]: "running"}


# -- names ---------------------------------------------------------------------------------------------------
def test_a_name_taken_is_refused(cm, cloud, two):
    if not cloud.can("create_vm"):
        pytest.skip(f"cloud {cloud.name} cannot boot VMs: {REFUSED}")
    again = cm("vm", "boot", "--name", two[0])
    assert again.code == 2 and one_line(again.err) == f"cm: a VM named '{two[0]}' already exists on cloud '{cloud.name}'"
    (cloud.home / "mirror.json").unlink()  # the mirror forgot; the cloud did not
    result = cm("vm", "boot", "--name", two[0], "-f", "json")
    assert result.code == 1 and result.err.strip() == "1 of 1 failed"
    assert rows(result)[0]["result"].startswith(f"failed: a VM named '{two[0]}' already exists on cloud '{cloud.name}'")
    assert sorted(listed(cm, "--refresh")) == two


@pytest.mark.parametrize("words", [("vm", "show", "nosuch"), ("vm", "stop", "nosuch"), ("vm", "delete", "nosuch"),
                                   ("vm", "rename", "nosuch", "x"), ("vm", "console", "nosuch")])
def test_an_unknown_vm_is_one_line_and_exit_2(cm, cloud, words):
    result = cm(*words)
    assert result.code == 2 and result.out == ""
    assert re.fullmatch(rf"cm: unknown VM 'nosuch' on cloud '{cloud.name}' \(see `cm vm list --refresh`\)",
                        one_line(result.err))


# -- images, flavors, keys --------------------------------------------------------------------------------------
def test_images_and_flavors_list_from_the_cloud_and_the_mirror(cm, cloud):
    if not (cloud.can("list_images") and cloud.can("list_flavors")):
        pytest.skip(f"cloud {cloud.name} has no images and flavors: {REFUSED}")
    images = {i["name"]: i for i in rows(cm("image", "list", "--refresh", "-f", "json"))}
    assert images[cloud.image]["status"] == "active" and images[cloud.image]["cloud"] == cloud.name
    assert rows(cm("image", "show", cloud.image, "-f", "json"))[0]["id"] == images[cloud.image]["id"]
    flavors = {f["name"]: f for f in rows(cm("flavor", "list", "--refresh", "-f", "json"))}
    assert cloud.flavor in flavors
    assert all(f["vcpus"] >= 1 and f["ram"] > 0 and f["disk"] >= 0 for f in flavors.values())
    mirrored = cm("flavor", "list", "-c", "name", "-f", "value").out.split()
    assert sorted(mirrored) == sorted(flavors)


def test_keys_upload_list_delete(cm, cloud):
    if "upload_key" not in cloud.verbs:
        pytest.skip(f"cloud {cloud.name} keeps no keys (see test_verbs_not_implemented_are_refused_naming_cloud_and_verb)")
    uploaded = cm("key", "upload")
    assert uploaded.code == 0 and uploaded.out.strip() == f"uploaded key id_ed25519 to {cloud.name}"
    keys = rows(cm("key", "list", "--cloud", cloud.name, "--refresh", "-f", "json"))
    assert [k["name"] for k in keys] == ["id_ed25519"] and keys[0]["fingerprint"]
    assert cm("key", "delete", "id_ed25519").code == 0
    assert cm("key", "list", "--cloud", cloud.name, "--refresh", "-f", "json").out.strip() == "[]"


# -- what a cloud cannot do ------------------------------------------------------------------------------------
def test_verbs_not_implemented_are_refused_naming_cloud_and_verb(cm, cloud, two, tmp_path):
    missing = [v for v in COMMANDS if v not in cloud.verbs]
    if not missing:
        pytest.skip(f"cloud {cloud.name} implements every verb these commands need")
    for verb in missing:
        line, words = COMMANDS[verb]
        line = line.format(vm=two[0], path=qcow2_file(tmp_path / "x.qcow2"), flavor=cloud.flavor, cloud=cloud.name)
        result = cm(*line.split())
        assert result.code == 2 and result.out == "", (line, result.out, result.err)
        assert re.fullmatch(rf"cm: cloud '{cloud.name}' cannot {words}(: .+)?", one_line(result.err)), line
    assert listed(cm, "--refresh") == cloud.with_states(dict.fromkeys(two, "running"))  # nothing changed


def test_bulk_verbs_not_implemented_are_refused_up_front(cm, cloud, two):
    missing = [v for v in BULK_COMMANDS if v not in cloud.verbs]
    if not missing:
        pytest.skip(f"cloud {cloud.name} implements every bulk verb")
    for verb in missing:
        line, words = BULK_COMMANDS[verb]
        result = cm(*line.format(vm=two[0]).split())
        assert result.code == 2 and result.out == "", (verb, result.out, result.err)
        assert re.fullmatch(rf"cm: cloud '{cloud.name}' cannot {words}(: .+)?", one_line(result.err))
    assert listed(cm, "--refresh") == cloud.with_states(dict.fromkeys(two, "running"))  # nothing changed


# -- the cloud's own clusters -----------------------------------------------------------------------------
def test_the_clouds_own_clusters_are_listed_from_the_mirror(cm, cloud):
    assert cm("refresh", "--cloud", cloud.name).code == 0
    shown = cm("cluster", "list", "--cloud", cloud.name, "-f", "json")
    assert shown.code == 0, shown.err
    assert [(c["name"], c["cloud"]) for c in rows(shown) if c["name"] in cloud.clusters] == \
        [(n, cloud.name) for n in cloud.clusters]
    assert sorted(c["name"] for c in rows(shown)) == cloud.clusters  # and no cluster it does not have
    if not cloud.can("list_clusters"):
        assert cm("refresh", "cloud_cluster", "--cloud", cloud.name).code == 2
