"""Singularity (SIF) images: definition files, root trees, SIF files, and the local image store."""
