"""Elastic Slurm: grow a cluster with cloud VMs (burst) and run low-priority work in VMs that are
checkpointed or migrated instead of killed (backfill).

:mod:`slurmconf` reads and rewrites slurm.conf, :mod:`state` keeps what cm knows of a cluster's
cloud nodes, :mod:`burst` holds the verbs slurmctld and users call, :mod:`userdata` the boot
script that makes a VM a slurmd of the cluster, :mod:`slurmctl` runs Slurm's own commands.
"""
