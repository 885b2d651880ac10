"""Clusters on the local OpenStack API server (real openstacksdk over HTTP): launch, list, show,
nodes, timeline, resize, delete leaving nothing, interrupted launches, failures and bad input."""

from __future__ import annotations

import json

import pytest

from tests.openstack_fixtures import *
from tests.openstack_fixtures import one_line, rows

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning", "ignore::DeprecationWarning")


def resources(cloud) -> dict[str, int]:
    """What is left on the cloud that a cluster could have made."""
    st = cloud.state
    return {"servers": len(cloud.servers()),
            "floating_ips": len(st.floating_ips),
            "secgroups": sum(1 for g in st.security_groups.values() if g["name"] != "default"),
            "ports": sum(1 for p in st.ports.values() if p.get("device_owner", "").startswith("compute:")
                         or p.get("description", "").startswith("cm: reserved address"))}


def test_slurm_launch_is_ready_with_outputs_then_list_show_nodes_timeline_and_delete_leaves_nothing(cm, cloud):
    before = resources(cloud)
    launched = cm("slurm", "-n", "2", "--name", "c1", "-f", "json")
    assert launched.code == 0, launched.err
    nodes = rows(launched)
    assert [(n["name"], n["role"], n["state"]) for n in nodes] == [
        ("c1-head", "head", "ready"), ("c1-worker1", "worker", "ready"), ("c1-worker2", "worker", "ready")]
    head = nodes[0]
    assert head["public"].startswith("172.24.4.")  # the head gets a floating IP where the cloud has them
    assert "cluster 'c1' is ready" in launched.err and "srun -N2 hostname" in launched.err

    # Each node got its own rendered user-data with one fresh munge key, never printed.
    servers = {s["name"]: s for s in cloud.servers()}
    import base64

    data = {n: base64.b64decode(s["user_data"]).decode() for n, s in servers.items()}
    keys = {line.split('"')[1] for text in data.values() for line in text.splitlines() if "content: \"" in line}
    assert len(keys) == 1 and len(base64.b64decode(keys.pop())) == 1024
    assert "SlurmctldHost=c1-head\n" in data["c1-worker1"] and data["c1-worker1"].count("SlurmctldHost") == 1
    assert f"      {head['address']} c1-head\n" in data["c1-worker1"]  # the head's name, in the workers' /etc/hosts
    assert "munge" not in launched.out.lower() or "********" not in launched.out

    listed = rows(cm("cluster", "list", "-f", "json"))
    assert [(c["name"], c["recipe"], c["state"], c["nodes"], c["login"]) for c in listed] == [
        ("c1", "slurm", "ready", "head=1, worker=2", head["public"])]
    shown = rows(cm("cluster", "show", "c1", "-f", "json"))[0]
    outputs = shown["outputs"]
    assert {k: outputs[k] for k in ("login", "first_command", "user")} == {
        "login": head["public"], "first_command": "srun -N2 hostname", "user": "tester"}
    assert outputs["key"].endswith("/home/.ssh/id_ed25519.pub")  # what `cm hpc` then logs in with
    assert outputs["known_hosts"].endswith("/clusters/fake/c1.known_hosts")
    assert shown["made"]["secgroups"] == ["c1-cluster"] and shown["made"]["ips"] == [head["public"]]

    # Node VMs are ordinary VMs, tagged with their cluster and role, and in the cluster's group.
    tagged = rows(cm("vm", "list", "-c", "name", "-c", "cluster", "-c", "role", "-f", "json"))
    assert tagged == [{"name": "c1-head", "cluster": "c1", "role": "head"},
                      {"name": "c1-worker1", "cluster": "c1", "role": "worker"},
                      {"name": "c1-worker2", "cluster": "c1", "role": "worker"}]
    refreshed = rows(cm("vm", "list", "--refresh", "-c", "name", "-c", "cluster", "-f", "json"))
    assert {v["cluster"] for v in refreshed} == {"c1"}  # cm's tags survive a refresh
    group = rows(cm("group", "list", "-f", "json"))
    assert group[0]["name"] == "c1" and "c1-worker2" in str(group[0])

    only_workers = rows(cm("cluster", "nodes", "c1", "--role", "worker", "-f", "json"))
    assert [n["name"] for n in only_workers] == ["c1-worker1", "c1-worker2"]

    line = cm("cluster", "timeline", "c1", "-f", "json")
    phases = rows(line)
    assert len(phases) == 3
    for p in phases:
        assert 0 <= p["requested"] <= p["created"] <= p["running"] <= p["configured"] <= p["ready"]
    # One wave: each node's address was a Neutron port made first, so the workers boot with the head.
    assert max(p["requested"] for p in phases) < 1
    ports = {p["name"]: p["fixed_ips"][0]["ip_address"] for p in cloud.state.ports.values()
             if p.get("description", "").startswith("cm: reserved address")}
    assert ports == {n["name"]: n["address"] for n in nodes}
    chart = cm("cluster", "timeline", "c1")
    assert chart.code == 0 and "c1-worker2 |" in chart.out and "*" in chart.out

    gone = cm("cluster", "delete", "c1")
    assert gone.code == 0, gone.err
    assert resources(cloud) == before
    assert cm("cluster", "list", "-f", "json").out.strip() == "[]"
    assert cm("vm", "list", "-f", "json").out.strip() == "[]"


def user_recipe(cm_home, name: str, worker_message: str, *, replace: int = 1, extra: str = "") -> None:
    """A launcher of the user's own: a head and N workers whose final_message the template decides."""
    directory = cm_home / "launchers"
    (directory / name).mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(f"""
name: {name}
description: test cluster
replace: {replace}
timeouts: {{boot: 60, configure: 60}}
roles:
  head: {{count: 1, user_data: {name}/head.j2}}
  worker: {{count: n, needs: [head], user_data: {name}/worker.j2, ready: {{timeout: 30}}}}
outputs: {{first_command: "echo {{{{ counts.worker }}}}"}}
{extra}""")
    (directory / name / "head.j2").write_text("#cloud-config\nfinal_message: \"{{ marker.ready }} head\"\n")
    (directory / name / "worker.j2").write_text("#cloud-config\nfinal_message: \"" + worker_message + "\"\n")


def test_a_node_that_fails_to_boot_is_replaced_with_an_address_of_its_own_and_the_cluster_still_gets_ready(
        cm, cloud):
    before = resources(cloud)
    assert cm("slurm", "-n", "1", "--name", "c1").code == 0
    cloud.fail_next_boot("No valid host was found.")  # the worker the resize adds fails once
    grown = cm("cluster", "resize", "c1", "+1", "-f", "json")
    assert grown.code == 0, grown.err
    assert "c1-worker2 failed (went to ERROR: No valid host was found.); replacing it with c1-worker2-r1" in grown.err
    nodes = {n["name"]: n for n in rows(cm("cluster", "nodes", "c1", "--all", "-f", "json"))}
    assert [(name, n["state"]) for name, n in nodes.items()] == [
        ("c1-head", "ready"), ("c1-worker1", "ready"), ("c1-worker2", "failed"), ("c1-worker2-r1", "ready")]
    assert sorted(s["name"] for s in cloud.servers()) == ["c1-head", "c1-worker1", "c1-worker2-r1"]
    ports = {p["name"]: p["fixed_ips"][0]["ip_address"] for p in cloud.state.ports.values()
             if p.get("description", "").startswith("cm: reserved address")}
    # the failed node's port went with it; the replacement booted on a port of its own
    assert sorted(ports) == ["c1-head", "c1-worker1", "c1-worker2-r1"]
    assert ports["c1-worker2-r1"] == nodes["c1-worker2-r1"]["address"]
    assert cm("cluster", "delete", "c1").code == 0
    assert resources(cloud) == before


def test_a_head_that_fails_in_one_wave_boots_again_on_its_own_port_and_the_workers_configuration_stays_right(
        cm, cloud):
    before = resources(cloud)
    cloud.fail_next_boot("No valid host was found.", name="c1-head")  # the workers boot with it and do not fail
    cloud.set_action_delay(1.0)  # Nova deletes late: the new head boots once the failed one is gone
    launched = cm("slurm", "-n", "2", "--name", "c1", "-f", "json")
    assert launched.code == 0, launched.err
    head = rows(launched)[0]
    assert f"c1-head failed (went to ERROR: No valid host was found.); booting it again on its reserved address " \
           f"{head['address']}" in launched.err
    nodes = rows(cm("cluster", "nodes", "c1", "--all", "-f", "json"))
    assert [(n["name"], n["state"]) for n in nodes] == [
        ("c1-head", "failed"), ("c1-head", "ready"), ("c1-worker1", "ready"), ("c1-worker2", "ready")]
    assert nodes[0]["address"] == nodes[1]["address"] == head["address"]
    # one port per node, made once: the new head is bound to the port the failed one had
    assert cloud.request_count("POST", r"/v2.0/ports$") == 3
    servers = {s["name"]: s for s in cloud.servers()}
    assert sorted(servers) == ["c1-head", "c1-worker1", "c1-worker2"]
    ports = {p["name"]: p for p in cloud.state.ports.values()
             if p.get("description", "").startswith("cm: reserved address")}
    assert ports["c1-head"]["device_id"] == servers["c1-head"]["id"]
    assert ports["c1-head"]["fixed_ips"][0]["ip_address"] == head["address"]
    import base64

    worker = base64.b64decode(servers["c1-worker1"]["user_data"]).decode()
    assert "SlurmctldHost=c1-head\n" in worker and f"      {head['address']} c1-head\n" in worker
    timeline = rows(cm("cluster", "timeline", "c1", "-f", "json"))
    assert [(r["node"], r["state"]) for r in timeline][:2] == [("c1-head", "failed"), ("c1-head", "ready")]
    assert timeline[0]["ready"] == "" and timeline[1]["requested"] >= timeline[0]["created"]
    assert cm("cluster", "delete", "c1").code == 0
    assert resources(cloud) == before


def test_every_worker_failing_to_configure_fails_fast_naming_the_node_and_why(cm, cloud, cm_home):
    import time

    user_recipe(cm_home, "broken", "CM-FAILED: /dev/vdb not found", replace=0)
    started = time.monotonic()
    launched = cm("launcher", "run", "broken", "-n", "2", "--name", "b1")
    assert launched.code == 1
    assert time.monotonic() - started < 15  # not the 30 s readiness timeout
    assert "cluster 'b1' is failed: every worker node failed: b1-worker" in launched.err
    assert "failed to configure: /dev/vdb not found" in launched.err
    shown = rows(cm("cluster", "show", "b1", "-f", "json"))[0]
    assert shown["state"] == "failed"
    # A failed cluster refuses a relaunch under its name, and delete cleans it up completely.
    again = cm("launcher", "run", "broken", "-n", "2", "--name", "b1")
    assert again.code == 2 and "cluster 'b1' already exists on cloud 'fake' and is failed" in one_line(again.err)
    assert cm("cluster", "delete", "b1").code == 0
    assert cloud.servers() == [] and cm("cluster", "list", "-f", "json").out.strip() == "[]"


def test_a_worker_that_keeps_failing_leaves_the_cluster_degraded_naming_it(cm, cloud, cm_home):
    message = "{% if node.name.endswith('2') %}CM-FAILED: slurmd crashed{% else %}{{ marker.ready }}{% endif %}"
    user_recipe(cm_home, "flaky", message, replace=0)
    launched = cm("launcher", "run", "flaky", "-n", "3", "--name", "f1")
    assert launched.code == 1
    assert "cluster 'f1' is degraded: f1-worker2 failed: failed to configure: slurmd crashed" in launched.err
    nodes = rows(cm("cluster", "nodes", "f1", "-f", "json"))
    assert {n["name"]: n["state"] for n in nodes} == {"f1-head": "ready", "f1-worker1": "ready",
                                                      "f1-worker2": "failed", "f1-worker3": "ready"}
    assert cm("cluster", "delete", "f1").code == 0
    assert cloud.servers() == []


def test_resize_adds_ready_workers_and_removes_the_newest(cm, cloud, cm_home):
    user_recipe(cm_home, "plain", "{{ marker.ready }}", extra="resize: {role: worker}")
    assert cm("launcher", "run", "plain", "-n", "1", "--name", "p1").code == 0
    grown = cm("cluster", "resize", "p1", "+2", "-f", "json")
    assert grown.code == 0, grown.err
    assert [(n["name"], n["state"]) for n in rows(grown)] == [
        ("p1-head", "ready"), ("p1-worker1", "ready"), ("p1-worker2", "ready"), ("p1-worker3", "ready")]
    shown = rows(cm("cluster", "show", "p1", "-f", "json"))[0]
    assert shown["nodes"] == "head=1, worker=3" and shown["outputs"]["first_command"] == "echo 3"
    shrunk = cm("cluster", "resize", "p1", "-1")
    assert shrunk.code == 0, shrunk.err
    assert "removed p1-worker3" in shrunk.err
    assert sorted(s["name"] for s in cloud.servers()) == ["p1-head", "p1-worker1", "p1-worker2"]
    shown = rows(cm("cluster", "show", "p1", "-f", "json"))[0]
    assert shown["nodes"] == "head=1, worker=2" and shown["outputs"]["first_command"] == "echo 2"
    too_far = cm("cluster", "resize", "p1", "-2")
    assert too_far.code == 2 and "cannot lose 2" in one_line(too_far.err)
    assert cm("cluster", "resize", "p1", "0").code == 2
    assert cm("cluster", "delete", "p1").code == 0 and cloud.servers() == []


@pytest.mark.parametrize("words, message", [
    (("launcher", "run", "nosuch", "-n", "2"), "unknown launcher 'nosuch' (known: "),
    (("slurm", "-n", "0"), "-n must be between 1 and 1000 for launcher 'slurm', not 0"),
    (("slurm",), "launcher 'slurm' needs -n N"),
    (("slurm", "-n", "2", "--flavor", "worker=m9.huge"), "unknown flavor 'm9.huge' for role 'worker' on cloud 'fake'"),
    (("slurm", "-n", "2", "--image", "head=nosuch"), "unknown image 'nosuch' for role 'head' on cloud 'fake'"),
    (("slurm", "-n", "2", "--flavor", "gpu=m1.tiny"), "the launcher has no role 'gpu'"),
    (("slurm", "-n", "2", "--param", "colour=red"), "launcher 'slurm' has no parameter 'colour'"),
    (("slurm", "-n", "2", "--name", "a b"), "bad cluster name 'a b'"),
])
def test_bad_input_is_refused_in_one_line_before_any_vm_boots(cm, cloud, words, message):
    result = cm(*words)
    assert result.code == 2
    assert message in one_line(result.err)
    assert cloud.servers() == [] and cm("cluster", "list", "-f", "json").out.strip() == "[]"


def test_dryrun_prints_nodes_and_each_roles_user_data_with_the_secret_masked_and_boots_nothing(cm, cloud):
    planned = cm("slurm", "-n", "3", "--name", "d1", "--flavor", "worker=m1.small", "--dryrun")
    assert planned.code == 0, planned.err
    assert "d1-worker3" in planned.out and "m1.small" in planned.out
    assert "--- user-data of role head (d1-head; secrets masked) ---" in planned.out
    assert "--- user-data of role worker (d1-worker1; secrets masked) ---" in planned.out
    assert 'content: "********"' in planned.out and "SLURMD_OPTIONS=\"-Z" in planned.out
    assert cloud.servers() == [] and cm("cluster", "list", "-f", "json").out.strip() == "[]"


def test_hadoop_dryrun_shows_nodes_advertising_addresses_and_the_install_from_the_given_mirror(cm, cloud):
    planned = cm("hadoop", "-n", "2", "--name", "d2", "--param", "mirror=https://mirror.example/apache", "--dryrun")
    assert planned.code == 0, planned.err
    assert "--- user-data of role worker (d2-worker1; secrets masked) ---" in planned.out
    out = planned.out
    assert "<name>yarn.nodemanager.hostname</name><value>${env.CM_NODE_ADDRESS:-0.0.0.0}</value>" in out
    assert "<name>dfs.datanode.hostname</name><value>${env.CM_NODE_ADDRESS}</value>" in out
    assert "export CM_NODE_ADDRESS=${CM_NODE_ADDRESS:-$(ip -4 route get ADDRESS-OF-d2-head " in out
    assert "spark.driver.host                ADDRESS-OF-d2-head" in out
    assert 'url="https://mirror.example/apache/$path/$file"' in out and "path: /usr/local/sbin/cm-own-name" in out
    assert cloud.servers() == [] and cm("cluster", "list", "-f", "json").out.strip() == "[]"


def _kill_mid_launch(cm, cloud, name: str, how: int = 9) -> tuple[int, str]:
    """Start `cm slurm -n 2 --name NAME` as a process and signal it once its nodes exist but do not run yet."""
    import os
    import subprocess
    import sys
    import time

    cloud.set_build_delay(4)  # the nodes stay in BUILD: the launch is caught waiting for them
    proc = subprocess.Popen([sys.executable, "-m", "cm.main", "slurm", "-n", "2", "--name", name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(cloud.servers()) < 3:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        os.kill(proc.pid, how)
        _, err = proc.communicate(timeout=30)
    # one wave: the workers were booted with the head, its address reserved ahead
    assert sorted(s["name"] for s in cloud.servers()) == [f"{name}-head", f"{name}-worker1", f"{name}-worker2"]
    cloud.set_build_delay(0.2)
    return proc.returncode, err


def test_a_launch_killed_with_kill_9_leaves_a_record_that_delete_cleans_up_completely(cm, cloud):
    before = resources(cloud)
    _kill_mid_launch(cm, cloud, "k1")
    listed = rows(cm("cluster", "list", "-f", "json"))
    assert [(c["name"], c["state"]) for c in listed] == [("k1", "launching")]
    assert cm("cluster", "delete", "k1").code == 0
    assert resources(cloud) == before
    assert cm("cluster", "list", "-f", "json").out.strip() == "[]" and cm("vm", "list", "-f", "json").out.strip() == "[]"


def test_ctrl_c_stops_the_launch_at_once_keeps_the_record_and_delete_cleans_up(cm, cloud):
    import signal

    before = resources(cloud)
    code, err = _kill_mid_launch(cm, cloud, "i1", signal.SIGINT)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, (code, err)
    shown = rows(cm("cluster", "show", "i1", "-f", "json"))[0]
    assert shown["state"] == "launching"
    nodes = rows(cm("cluster", "nodes", "i1", "-f", "json"))
    assert [(n["name"], n["state"]) for n in nodes] == [("i1-head", "created"), ("i1-worker1", "created"),
                                                        ("i1-worker2", "created")]
    assert cm("cluster", "delete", "i1").code == 0
    assert resources(cloud) == before


def test_launching_again_after_kill_9_resumes_without_booting_twice(cm, cloud):
    _kill_mid_launch(cm, cloud, "k2")
    again = cm("slurm", "-n", "2", "--name", "k2", "-f", "json")
    assert again.code == 0, again.err
    assert "resuming the interrupted launch of cluster 'k2'" in again.err
    assert {n["state"] for n in rows(again)} == {"ready"}
    assert sorted(s["name"] for s in cloud.servers()) == ["k2-head", "k2-worker1", "k2-worker2"]
    different = cm("slurm", "-n", "3", "--name", "k2")
    assert different.code == 2 and "already exists" in one_line(different.err)
    assert cm("cluster", "delete", "k2").code == 0 and cloud.servers() == []


def test_hadoop_launch_is_ready_and_outputs_its_web_uis(cm, cloud):
    launched = cm("hadoop", "-n", "2", "--name", "h1", "--group", "myHadoop", "-f", "json")
    assert launched.code == 0, launched.err
    assert [(n["name"], n["state"]) for n in rows(launched)] == [("h1-head", "ready"), ("h1-worker1", "ready"),
                                                                 ("h1-worker2", "ready")]
    outputs = rows(cm("cluster", "show", "h1", "-f", "json"))[0]["outputs"]
    public = outputs["login"]
    assert outputs["namenode_ui"] == f"http://{public}:9870" and outputs["resourcemanager_ui"] == f"http://{public}:8088"
    group = rows(cm("group", "list", "-f", "json"))
    assert [g["name"] for g in group] == ["myHadoop"]
    rules = rows(cm("secgroup", "show", "h1-cluster", "--refresh", "-f", "json"))[0]["rules"]
    assert {"ingress tcp 22 0.0.0.0/0 IPv4", "ingress tcp 8088 0.0.0.0/0 IPv4", "ingress tcp 9870 0.0.0.0/0 IPv4",
            "ingress any group:h1-cluster IPv4"} <= set(rules), rules
    assert cm("cluster", "delete", "h1").code == 0 and cloud.servers() == []


def test_a_node_never_ready_fails_at_the_timeout_and_is_replaced_once(cm, cloud, cm_home):
    import time

    user_recipe(cm_home, "silent", "cloud-init done, no marker", replace=1)
    started = time.monotonic()
    launched = cm("launcher", "run", "silent", "-n", "1", "--name", "q1", "--timeout", "1.5")
    took = time.monotonic() - started
    assert launched.code == 1
    assert "q1-worker1 failed (not ready 1.5 s after it started running); replacing it with q1-worker1-r1" in launched.err
    assert "every worker node failed: q1-worker1-r1 not ready 1.5 s after it started running" in launched.err
    assert took < 12
    assert cm("cluster", "delete", "q1").code == 0 and cloud.servers() == []


def test_a_head_that_keeps_failing_after_its_workers_booted_is_retried_on_its_address_then_fails_the_cluster(
        cm, cloud, cm_home):
    user_recipe(cm_home, "headless", "{{ marker.ready }}", replace=1)
    (cm_home / "launchers" / "headless" / "head.j2").write_text("#cloud-config\nfinal_message: \"no marker\"\n")
    launched = cm("launcher", "run", "headless", "-n", "1", "--name", "h2", "--timeout", "1.5")
    assert launched.code == 1
    assert launched.err.count("h2-head failed (not ready 1.5 s after it started running); booting it again") == 1
    assert "cluster 'h2' is failed: every head node failed: h2-head not ready 1.5 s after it started running" \
        in launched.err
    assert "replacing" not in launched.err  # never under another name: its worker has its name and address
    assert cm("cluster", "delete", "h2").code == 0 and cloud.servers() == []


def test_cluster_ssh_reaches_the_login_node(cm, cloud, cm_home):
    assert cm("slurm", "-n", "1", "--name", "s1").code == 0
    login = rows(cm("cluster", "show", "s1", "-f", "json"))[0]["login"]
    shown = cm("cluster", "ssh", "s1", "--command", "sinfo", "--dryrun")  # (no guest answers ssh here)
    known = cm_home / "clusters" / "fake" / "s1.known_hosts"  # the nodes' user, with the cluster's own host keys
    assert shown.code == 0 and shown.out.strip() == \
        f"ssh -o UserKnownHostsFile={known} -o StrictHostKeyChecking=accept-new tester@{login} sinfo"
    as_root = cm("cluster", "ssh", "s1", "--user", "root", "--dryrun")
    assert as_root.out.strip().endswith(f"root@{login}")
    unknown = cm("cluster", "ssh", "nosuch")
    assert unknown.code == 2 and "unknown cluster 'nosuch' on cloud 'fake'" in one_line(unknown.err)
    assert cm("cluster", "delete", "s1").code == 0


def test_a_resume_takes_over_a_vm_created_after_its_record_was_last_written(cm, cloud):
    """kill -9 between the create and its record: the node is `requested` in the mirror but exists."""
    import json as _json

    from cm.config import home

    _kill_mid_launch(cm, cloud, "k3")
    path = home() / "mirror.json"
    data = _json.loads(path.read_text())
    record = next(r for r in data["cluster"].values() if r["name"] == "k3")
    head = record["nodes"][0]
    head["state"], head["times"] = "requested", {"requested": head["times"]["requested"]}
    path.write_text(_json.dumps(data))
    again = cm("slurm", "-n", "2", "--name", "k3", "-f", "json")
    assert again.code == 0, again.err
    assert {n["state"] for n in rows(again)} == {"ready"}
    assert sorted(s["name"] for s in cloud.servers()) == ["k3-head", "k3-worker1", "k3-worker2"]
    assert cm("cluster", "delete", "k3").code == 0 and cloud.servers() == []
