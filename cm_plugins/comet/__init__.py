"""The comet cloud kind: Comet-style HPC virtual clusters through a Nucleus REST endpoint."""


def register_providers(register):
    """Entry-point hook: the comet provider."""
    register("comet", "cm_plugins.comet.provider:CometProvider")


def register_commands(register):
    """Entry-point hook: the `comet` noun."""
    register("comet", "cm.commands.comet")
