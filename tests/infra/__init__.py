"""Shared test machinery: network namespaces (netns), private Slurm clusters (slurm), an sshd login host (sshd)."""
