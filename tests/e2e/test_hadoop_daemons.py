"""End-to-end: the configuration cm's Hadoop recipe renders, run on real Hadoop daemons.

Hadoop's jars come from Maven Central (cached under ~/.cache/cm-tests/hadoop); the head's
namespace runs the NameNode and ResourceManager, each worker's a DataNode and NodeManager
(tests/infra/hadoop.py).  A MapReduce wordcount on YARN and a PySpark wordcount on YARN (with
the recipe's spark-defaults.conf) over the same known input give exactly the right counts.
Run with ``-s`` to see the timings.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.infra.hadoop import HadoopCluster
from tests.infra.hadoop_jars import jar

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="e2e: needs root (network namespaces)"),
    pytest.mark.skipif(not (shutil.which("java") and shutil.which("mvn")),
                       reason="e2e: java/mvn missing: run scripts/install-system-packages.sh"),
]

PREFIX = "hadoop-e2e"
WORDS = ["cloud", "mesh", "yarn", "hdfs", "spark", "node"]
# Small containers: two shared cores.  Rounded up to YARN's minimum allocation, heaps stay small.
MR_SMALL = ["-Dmapreduce.map.memory.mb=512", "-Dmapreduce.map.java.opts=-Xmx200m",
            "-Dmapreduce.reduce.memory.mb=512", "-Dmapreduce.reduce.java.opts=-Xmx200m",
            "-Dyarn.app.mapreduce.am.resource.mb=512", "-Dyarn.app.mapreduce.am.command-opts=-Xmx256m"]
SPARK_JOB = """import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("cm-spark-wordcount").getOrCreate()
lines = spark.sparkContext.textFile(sys.argv[1], 2)
for word, count in sorted(lines.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b).collect()):
    print(f"COUNT {word} {count}")
spark.stop()
"""


def known_input(directory: Path) -> tuple[list[Path], Counter]:
    """Two text files whose word counts differ per word (so a swapped count shows)."""
    counts: Counter = Counter()
    files = []
    for part in range(2):
        lines = []
        for i, word in enumerate(WORDS):
            n = (i + 1) * 7 + part * 3
            counts[word] += n
            lines += [" ".join([word] * 5)] * (n // 5) + ([" ".join([word] * (n % 5))] if n % 5 else [])
        path = directory / f"part{part}.txt"
        path.write_text("\n".join(lines) + "\n")
        files.append(path)
    return files, counts


@pytest.fixture(scope="module")
def hadoop(tmp_path_factory):
    data = tmp_path_factory.mktemp("hadoop-input")
    files, counts = known_input(data)
    started = time.monotonic()
    with HadoopCluster(PREFIX, workers=2) as cluster:
        print(f"\nhadoop: jars {cluster.timings['fetch']:.1f} s, start to ready "
              f"{cluster.timings['ready']:.1f} s (total {time.monotonic() - started:.1f} s)")
        cluster.hdfs(["-mkdir", "-p", "/in"])
        cluster.hdfs(["-put", *map(str, files), "/in/"])
        yield cluster, counts


def parse_counts(text: str, prefix: str = "") -> Counter:
    out: Counter = Counter()
    for line in text.splitlines():
        if prefix and not line.startswith(prefix):
            continue
        word, count = line[len(prefix):].split()
        out[word] = int(count)
    return out


def test_rendered_configuration_is_the_recipes(hadoop):
    cluster, _ = hadoop
    head = cluster.head
    assert f"hdfs://{head.addr}:9000" in cluster.files["core-site.xml"]
    assert f"<value>{head.addr}</value>" in cluster.files["yarn-site.xml"]
    assert (cluster.conf_dir / "spark-defaults.conf").read_text() == cluster.files["spark-defaults.conf"]
    report = cluster.java("org.apache.hadoop.hdfs.tools.DFSAdmin", ["-report", "-live"]).stdout
    assert "Live datanodes (2)" in report


def test_mapreduce_wordcount_on_yarn(hadoop):
    cluster, counts = hadoop
    examples = jar(cluster.home, "hadoop-mapreduce-examples")
    started = time.monotonic()
    job = cluster.java("org.apache.hadoop.util.RunJar", [str(examples), "wordcount", *MR_SMALL,
                                                         "/in", "/out-mr"], timeout=600)
    took = time.monotonic() - started
    print(f"\nhadoop: MapReduce wordcount on YARN {took:.1f} s")
    assert "Running job: job_" in job.stderr and "completed successfully" in job.stderr
    out = cluster.hdfs(["-cat", "/out-mr/part-r-*"]).stdout
    assert parse_counts(out) == counts


def test_spark_wordcount_on_yarn(hadoop, tmp_path):
    pyspark = pytest.importorskip("pyspark", reason="e2e: pip install pyspark (the test extra)")
    cluster, counts = hadoop
    spark_home = Path(pyspark.__file__).parent
    conf = tmp_path / "spark-conf"
    conf.mkdir()
    shutil.copy(cluster.conf_dir / "spark-defaults.conf", conf)   # the recipe's, as rendered
    script = tmp_path / "wordcount.py"
    script.write_text(SPARK_JOB)
    # pyspark from PyPI has no python/lib/pyspark.zip to ship: executors import the same
    # venv's pyspark instead (every node shares this filesystem), and read Spark's jars in place.
    argv = [str(spark_home / "bin" / "spark-submit"),
            "--conf", f"spark.yarn.jars=local:{spark_home}/jars/*",
            "--conf", f"spark.pyspark.python={sys.executable}",
            "--conf", "spark.executor.instances=2", "--conf", "spark.executor.cores=1",
            "--conf", "spark.executor.memory=384m", "--conf", "spark.driver.memory=384m",
            "--conf", "spark.yarn.am.memory=384m", "--conf", "spark.ui.enabled=false",
            str(script), "/in"]
    started = time.monotonic()
    job = cluster.run_on_head(argv, env={"SPARK_HOME": str(spark_home), "SPARK_CONF_DIR": str(conf),
                                         "PYSPARK_ARCHIVES_PATH": f"local:{script}"}, timeout=600)
    took = time.monotonic() - started
    print(f"\nhadoop: Spark wordcount on YARN {took:.1f} s")
    assert job.returncode == 0, job.stderr[-4000:]
    assert parse_counts(job.stdout, "COUNT ") == counts
    apps = cluster.java("org.apache.hadoop.yarn.client.cli.ApplicationCLI",
                        ["-list", "-appStates", "FINISHED"]).stdout
    assert any("cm-spark-wordcount" in line and "SUCCEEDED" in line for line in apps.splitlines()), apps
