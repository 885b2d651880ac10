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
            "ports": sum(1 for p in st.ports.values() if p.get("device_owner", "").startswith("compute:"))}


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
    assert f"SlurmctldHost=c1-head({head['address']})" in data["c1-worker1"]
    assert "munge" not in launched.out.lower() or "********" not in launched.out

    listed = rows(cm("cluster", "list", "-f", "json"))
    assert [(c["name"], c["recipe"], c["state"], c["nodes"], c["login"]) for c in listed] == [
        ("c1", "slurm", "ready", "head=1, worker=2", head["public"])]
    shown = rows(cm("cluster", "show", "c1", "-f", "json"))[0]
    assert shown["outputs"] == {"login": head["public"], "first_command": "srun -N2 hostname"}
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
    workers_requested = min(p["requested"] for p in phases if p["role"] == "worker")
    assert workers_requested >= next(p["running"] for p in phases if p["role"] == "head") - 0.01  # head's address first
    chart = cm("cluster", "timeline", "c1")
    assert chart.code == 0 and "c1-worker2 |" in chart.out and "*" in chart.out

    gone = cm("cluster", "delete", "c1")
    assert gone.code == 0, gone.err
    assert resources(cloud) == before
    assert cm("cluster", "list", "-f", "json").out.strip() == "[]"
    assert cm("vm", "list", "-f", "json").out.strip() == "[]"
