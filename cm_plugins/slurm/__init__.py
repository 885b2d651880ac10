"""The slurm cloud kind (HPC systems reached over ssh), and the `hpc` and `singularity` nouns that use it."""


def register_providers(register):
    """Entry-point hook: the slurm provider."""
    register("slurm", "cm_plugins.slurm.provider:SlurmProvider")


def register_commands(register):
    """Entry-point hook: batch jobs and Singularity images."""
    register("hpc", "cm.commands.hpc")
    register("singularity", "cm.commands.singularity")


def register_clouds(register):
    """Entry-point hook: every ready Slurm cluster cm launched is a slurm cloud of the same name."""
    from cm_plugins.slurm.clusters import launched_clusters

    register(launched_clusters)
