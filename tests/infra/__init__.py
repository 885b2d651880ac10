"""Shared test machinery: network namespaces (netns), private Slurm clusters (slurm), an sshd login host (sshd), real Hadoop daemons running cm's Hadoop recipe (hadoop, hadoop_jars, hadoop_jobs)."""
