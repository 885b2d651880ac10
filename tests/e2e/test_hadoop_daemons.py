"""End-to-end: the configuration cm's Hadoop recipe renders, run on real Hadoop daemons.

Hadoop's jars come from Maven Central (cached under ~/.cache/cm-tests/hadoop); the head's
namespace runs the NameNode and ResourceManager, each worker's a DataNode and NodeManager
(tests/infra/hadoop.py).  As on many clouds, no node's name resolves on another node: they
find each other by the addresses the recipe has them advertise (and the recipe makes each node's
own name resolve on that node, to a loopback address, as Hadoop and Spark need).  A MapReduce wordcount on
YARN and a PySpark wordcount on YARN (with the recipe's spark-defaults.conf) over the same known
input give exactly the right counts.
Run with ``-s`` to see the timings.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.infra.hadoop import HadoopCluster
from tests.infra.netns import list_netns
from tests.infra.hadoop_jobs import SPARK_APP, known_input, mapreduce_wordcount, spark_wordcount

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (network namespaces)"),
    pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")),
                       reason="e2e: java/mvn missing: run scripts/install-system-packages.sh"),
]


@pytest.fixture(scope="module")
def hadoop(tmp_path_factory):
    files, counts = known_input(tmp_path_factory.mktemp("hadoop-input"))
    with HadoopCluster("hadoop-e2e", workers=2) as cluster:
        print(f"\nhadoop: jars {cluster.timings['fetch']:.1f} s, install.sh from the mirror {cluster.timings['install']:.1f} s, "
              f"start to ready {cluster.timings['ready']:.1f} s")
        cluster.hdfs(["-mkdir", "-p", "/in"])
        cluster.hdfs(["-put", *map(str, files), "/in/"])
        yield cluster, counts
    # stopped: no namespace, no process, no temp dir of this cluster is left
    assert not list_netns("hadoop-e2e")
    assert not processes_naming(str(cluster.tmp)) and not cluster.tmp.exists()


def processes_naming(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_no_node_resolves_another_nodes_name(hadoop):
    cluster, _ = hadoop
    for host in cluster.hosts.values():
        assert host.run(["hostname"]).stdout.strip() == host.name
        assert host.run(["getent", "hosts", host.name]).stdout.split() == ["127.0.1.1", host.name]
        for name in set(cluster.hosts) - {host.name}:
            lookup = host.run(["getent", "hosts", name], timeout=10)
            assert lookup.returncode != 0 and not lookup.stdout, f"{name} resolves on {host.name}"


def test_recipe_configuration_runs_hdfs_on_every_worker(hadoop):
    cluster, _ = hadoop
    assert f"hdfs://{cluster.head.addr}:9000" in (cluster.conf_dir / "core-site.xml").read_text()
    assert (cluster.conf_dir / "yarn-site.xml").read_text() == cluster.files["yarn-site.xml"]
    report = cluster.java("org.apache.hadoop.hdfs.tools.DFSAdmin", ["-report", "-live"]).stdout
    assert "Live datanodes (2)" in report
    # registered by address: Hadoop's own name for each DataNode is its address
    assert all(f"Name: {h.addr}:9866 ({h.addr})" in report for h in cluster.worker_hosts), report
    listing = cluster.hdfs(["-ls", "/in"]).stdout
    assert "/in/part0.txt" in listing and "/in/part1.txt" in listing


def test_recipe_outputs_web_uis_answer(hadoop):
    cluster, _ = hadoop
    namenode, resourcemanager = cluster.outputs["namenode_ui"], cluster.outputs["resourcemanager_ui"]
    assert namenode == f"http://{cluster.head.addr}:9870"
    state = json.loads(cluster.http_get(f"{namenode}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState"))
    assert state["beans"][0]["NumLiveDataNodes"] == 2
    assert "Hadoop" in cluster.http_get(f"{namenode}/dfshealth.html")
    metrics = json.loads(cluster.http_get(f"{resourcemanager}/ws/v1/cluster/metrics"))
    assert metrics["clusterMetrics"]["activeNodes"] == 2
    # what the UIs link to (each worker's own UI) is an address a browser on the network can open
    workers = {h.addr for h in cluster.worker_hosts}
    nodes = json.loads(cluster.http_get(f"{resourcemanager}/ws/v1/cluster/nodes"))["nodes"]["node"]
    assert {n["nodeHTTPAddress"] for n in nodes} == {f"{a}:8042" for a in workers}
    for link in (f"http://{a}:8042/ws/v1/node/info" for a in workers):
        assert json.loads(cluster.http_get(link))["nodeInfo"]["nodeHostName"] in workers
    live = json.loads(cluster.http_get(f"{namenode}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"))
    datanodes = json.loads(live["beans"][0]["LiveNodes"]).values()
    assert {d["infoAddr"] for d in datanodes} == {f"{a}:9864" for a in workers}


def test_mapreduce_wordcount_on_yarn(hadoop):
    cluster, counts = hadoop
    started = time.monotonic()
    assert mapreduce_wordcount(cluster, "/in", "/out-mr") == counts
    print(f"\nhadoop: MapReduce wordcount on YARN {time.monotonic() - started:.1f} s")


def test_spark_wordcount_on_yarn(hadoop, tmp_path):
    pytest.importorskip("pyspark", reason="e2e: pip install pyspark (in the test extra)")
    cluster, counts = hadoop
    started = time.monotonic()
    assert spark_wordcount(cluster, "/in", tmp_path) == counts
    print(f"\nhadoop: Spark wordcount on YARN {time.monotonic() - started:.1f} s")
    apps = cluster.java("org.apache.hadoop.yarn.client.cli.ApplicationCLI",
                        ["application", "-list", "-appStates", "FINISHED"]).stdout
    assert any(SPARK_APP in line and "SPARK" in line and "SUCCEEDED" in line for line in apps.splitlines()), apps
