"""`cm hadoop -n N`: HDFS, YARN and Spark on YARN from the `hadoop` launcher."""

from __future__ import annotations

from argparse import ArgumentParser

HELP = "Launch a Hadoop cluster: NameNode + ResourceManager on the head, DataNode + NodeManager on N workers, Spark on YARN."
EXAMPLE = "cm hadoop -n 10 --group myHadoop"

EXTENSIONS: tuple[str, ...] = ()


def build(parser: ArgumentParser) -> None:
    from cm.clusters.noun import build as build_noun

    build_noun(parser, "hadoop", EXTENSIONS)
