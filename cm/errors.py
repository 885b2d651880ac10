"""The small error hierarchy the shell turns into one-line messages and exit codes."""

from __future__ import annotations

# Exit codes of one-shot mode: 0 success, 1 a failure in the cloud or in some
# of the targets, 2 bad usage (unknown command/option/cloud/VM, bad value).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class CmError(Exception):
    """Base of every error the shell reports as one line."""

    exit_code = EXIT_FAILED


class UsageError(CmError):
    """Bad command line: unknown command, wrong option, malformed value."""

    exit_code = EXIT_USAGE


class ConfigError(CmError):
    """Missing or invalid configuration (unknown cloud, bad cm.yaml)."""

    exit_code = EXIT_USAGE


class NotFound(CmError):
    """A named VM, image, flavor, key, group or cloud does not exist."""

    exit_code = EXIT_USAGE


class Unsupported(CmError):
    """A verb the cloud cannot do."""

    exit_code = EXIT_USAGE

    def __init__(self, cloud: str, verb: str, why: str = "") -> None:
        detail = f": {why}" if why else ""
        super().__init__(f"cloud '{cloud}' cannot {verb}{detail}")


class ProviderError(CmError):
    """The cloud refused or failed an operation."""


class AuthError(ProviderError):
    """The cloud rejected the credentials."""


class QuotaExceeded(ProviderError):
    """The cloud's quota does not allow the operation."""


class Throttled(ProviderError):
    """The cloud asked to slow down (HTTP 429): try again later with fewer calls at once."""


class Conflict(ProviderError):
    """The operation conflicts with the resource's state (name taken, wrong state)."""


def stopped(name: str, verb: str) -> Conflict:
    """The contract's refusal of a verb a stopped VM cannot do (``verb``: suspended, resumed, rebooted)."""
    return Conflict(f"{name} is stopped, so it cannot be {verb}; start it first (cm vm start {name})")


class MirrorError(CmError):
    """The local mirror file cannot be used."""
