"""The ssh options a login's settings stand for (`ssh_config`, `port`, `key`, `known_hosts`, `jump`, `user`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def login_options(settings: dict[str, Any]) -> list[str]:
    """``ssh`` flags for the settings a cloud or controller names; the ones it leaves out are ssh's defaults."""
    flags: list[str] = []
    if settings.get("ssh_config"):
        flags += ["-F", str(Path(str(settings["ssh_config"])).expanduser())]
    if settings.get("port"):
        flags += ["-p", str(settings["port"])]
    if settings.get("key"):
        flags += ["-i", str(Path(str(settings["key"])).expanduser()), "-o", "IdentitiesOnly=yes"]
    if settings.get("known_hosts"):  # a cluster cm launched: its nodes' fresh keys, trusted on first contact
        flags += ["-o", f"UserKnownHostsFile={settings['known_hosts']}", "-o", "StrictHostKeyChecking=accept-new"]
    if settings.get("jump"):
        flags += ["-J", str(settings["jump"])]
    if settings.get("user"):
        flags += ["-l", str(settings["user"])]
    return flags
