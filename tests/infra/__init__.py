"""Shared test machinery: network namespaces (netns), private Slurm clusters (slurm), an sshd login host (sshd),
a private libvirtd in namespaces (libvirtd_ns), a real Debian guest image (guest_image), real Hadoop daemons
running cm's Hadoop recipe (hadoop, hadoop_jars, hadoop_jobs), a Hadoop release on a loopback mirror
(hadoop_release)."""
