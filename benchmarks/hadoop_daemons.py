"""Real Hadoop from the recipe's configuration: jar fetch, start to ready, wordcount and Spark times.

    .venv/bin/python benchmarks/hadoop_daemons.py [--cold] [--workers 2] [--no-spark]

``--cold`` also fetches the jars into an empty temporary cache (Maven Central, a few minutes)
and removes it.  Baselines in the same run: the same MapReduce wordcount in local mode (the
LocalJobRunner, no YARN) and the same PySpark job with ``--master local[2]``, both from the head;
the YARN figures are printed as ratios to them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.infra.hadoop import HadoopCluster, recipe_cluster  # noqa: E402
from tests.infra.hadoop_jars import hadoop_home  # noqa: E402
from tests.infra.hadoop_jobs import known_input, mapreduce_wordcount, spark_wordcount  # noqa: E402


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def cold_fetch_seconds(version: str) -> float:
    cache = Path(tempfile.mkdtemp(prefix="hadoop-bench-cache-"))
    os.environ["CM_TESTS_HADOOP_CACHE"] = str(cache)
    try:
        return timed(hadoop_home, version)[1]
    finally:
        del os.environ["CM_TESTS_HADOOP_CACHE"]
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", action="store_true", help="also time a fetch into an empty cache")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-spark", action="store_true")
    args = parser.parse_args()
    version = str(recipe_cluster(args.workers)[1]["params"]["hadoop_version"])
    if args.cold:
        print(f"jars, cold cache (Maven Central): {cold_fetch_seconds(version):6.1f} s")
    tmp = Path(tempfile.mkdtemp(prefix="hadoop-bench-"))
    files, counts = known_input(tmp)
    try:
        with HadoopCluster("hadoop-bench", workers=args.workers) as c:
            print(f"jars, warm cache (checksums checked): {c.timings['fetch']:6.1f} s")
            print(f"install.sh from a loopback mirror: {c.timings['install']:6.1f} s")
            print(f"start to ready ({args.workers} workers): {c.timings['ready']:6.1f} s")
            c.hdfs(["-mkdir", "-p", "/in"])
            c.hdfs(["-put", *map(str, files), "/in/"])
            got, yarn_s = timed(mapreduce_wordcount, c, "/in", "/out")
            assert got == counts, got
            got, local_s = timed(mapreduce_wordcount, c, str(tmp), str(tmp / "out-local"), True)
            assert got == counts, got
            print(f"MapReduce wordcount on YARN: {yarn_s:6.1f} s   local mode: {local_s:6.1f} s   "
                  f"ratio {yarn_s / local_s:.1f}x")
            if not args.no_spark:
                (tmp / "s1").mkdir()
                (tmp / "s2").mkdir()
                got, yarn_s = timed(spark_wordcount, c, "/in", tmp / "s1")
                assert got == counts, got
                got, local_s = timed(spark_wordcount, c, f"file://{tmp}/part*.txt", tmp / "s2", "local[2]")
                assert got == counts, got
                print(f"Spark wordcount on YARN: {yarn_s:6.1f} s   local[2]: {local_s:6.1f} s   "
                      f"ratio {yarn_s / local_s:.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
