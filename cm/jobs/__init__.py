"""Batch jobs on HPC systems: requests, time limits, the job records in the mirror, and the systems."""
