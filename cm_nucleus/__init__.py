"""A reference Nucleus service: Comet-style virtual clusters on a real Slurm cluster and libvirt.

It serves the REST API of SDSC's retired Nucleus (see docs/comet-service.md):
computesets are Slurm jobs charged to Slurm accounts, and their nodes are
libvirt domains powered on where Slurm placed the job.  It is independent of
cm's client: the two share only the HTTP API.
"""

API_VERSION = "v1"
