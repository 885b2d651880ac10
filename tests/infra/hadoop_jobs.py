"""Jobs for a tests.infra.hadoop cluster: a known input, MapReduce and PySpark wordcounts on YARN.

``known_input(dir)`` writes two text files and returns them with their exact word counts;
``mapreduce_wordcount(c, "/in", "/out")`` runs hadoop-mapreduce-examples' wordcount (YARN unless
``local=True``: the LocalJobRunner over local files, the baseline) and returns the counts read
back; ``spark_wordcount(c, "/in", tmp)`` submits a PySpark wordcount with the recipe's
spark-defaults.conf (YARN, client mode) and returns the counts the driver printed.  Containers
and heaps are kept small (two shared cores).
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path

from tests.infra.hadoop import HadoopCluster
from tests.infra.hadoop_jars import jar

WORDS = ["cloud", "mesh", "yarn", "hdfs", "spark", "node"]
# Rounded up to YARN's minimum allocation for the scheduler; the JVMs' heaps stay small
# (Spark's driver and executors need at least 450 MB).
MR_SMALL = ["-Dmapreduce.map.memory.mb=512", "-Dmapreduce.map.java.opts=-Xmx200m",
            "-Dmapreduce.reduce.memory.mb=512", "-Dmapreduce.reduce.java.opts=-Xmx200m",
            "-Dyarn.app.mapreduce.am.resource.mb=512", "-Dyarn.app.mapreduce.am.command-opts=-Xmx256m"]
SPARK_APP = "cm-spark-wordcount"
SPARK_JOB = f"""import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("{SPARK_APP}").getOrCreate()
lines = spark.sparkContext.textFile(sys.argv[1], 2)
for word, count in sorted(lines.flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b).collect()):
    print(f"COUNT {{word}} {{count}}")
spark.stop()
"""
SPARK_SMALL = {"spark.executor.instances": "2", "spark.executor.cores": "1",
               "spark.executor.memory": "512m", "spark.driver.memory": "512m",
               "spark.yarn.am.memory": "384m", "spark.ui.enabled": "false"}


def known_input(directory: Path) -> tuple[list[Path], Counter]:
    """Two text files in which every word has its own count (so a swapped count shows)."""
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


def parse_counts(text: str, prefix: str = "") -> Counter:
    """``word count`` lines (those starting with ``prefix``) as a Counter."""
    out: Counter = Counter()
    for line in text.splitlines():
        if prefix and not line.startswith(prefix):
            continue
        word, count = line[len(prefix):].split()
        out[word] = int(count)
    return out


def mapreduce_wordcount(cluster: HadoopCluster, src: str, dst: str, local: bool = False) -> Counter:
    """`hadoop jar hadoop-mapreduce-examples.jar wordcount SRC DST` on the head; the counts written."""
    where = ["-Dmapreduce.framework.name=local", "-Dfs.defaultFS=file:///"] if local else []
    job = cluster.java("org.apache.hadoop.util.RunJar",
                       [str(jar(cluster.install_dir, "hadoop-mapreduce-examples")), "wordcount", *MR_SMALL,
                        *where, src, dst], timeout=900)
    if "completed successfully" not in job.stderr:
        raise RuntimeError(f"wordcount did not complete:\n{job.stderr[-3000:]}")
    if local:
        return parse_counts("".join(p.read_text() for p in sorted(Path(dst).glob("part-r-*"))))
    return parse_counts(cluster.hdfs(["-cat", f"{dst}/part-r-*"]).stdout)


def spark_wordcount(cluster: HadoopCluster, src: str, tmp: Path, master: str = "") -> Counter:
    """spark-submit (pyspark's own) of a PySpark wordcount with the recipe's spark-defaults.conf;
    ``master`` overrides the recipe's ``yarn`` (``local[2]``: the baseline)."""
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    conf = tmp / "spark-conf"
    conf.mkdir(exist_ok=True)
    shutil.copy(cluster.conf_dir / "spark-defaults.conf", conf)   # the recipe's, as rendered
    script = tmp / "wordcount.py"
    script.write_text(SPARK_JOB)
    # pyspark from PyPI has Spark's jars but no release layout: YARN containers read those jars in
    # place and run this interpreter (same pyspark), since every node shares this filesystem.
    settings = {**SPARK_SMALL, "spark.yarn.jars": f"local:{spark_home}/jars/*",
                "spark.pyspark.python": sys.executable}
    argv = [str(spark_home / "bin" / "spark-submit"), *(["--master", master] if master else [])]
    for key, value in settings.items():
        argv += ["--conf", f"{key}={value}"]
    job = cluster.run_on_head([*argv, str(script), src], timeout=900, env={
        "SPARK_HOME": str(spark_home), "SPARK_CONF_DIR": str(conf),
        "PYSPARK_ARCHIVES_PATH": f"local:{spark_home}/python/lib/pyspark.zip"})
    if job.returncode != 0:
        raise RuntimeError(f"spark-submit failed ({job.returncode}):\n{job.stderr[-4000:]}")
    return parse_counts(job.stdout, "COUNT ")
