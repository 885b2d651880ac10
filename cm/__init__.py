"""cm: a multi-cloud shell for research computing."""

__version__ = "0.1.0"
