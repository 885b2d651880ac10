"""The user's clouds.yaml, found where openstacksdk looks for it, read without importing openstack.

openstacksdk uses the first file that exists of: ``$OS_CLIENT_CONFIG_FILE``,
then ``clouds.yaml`` (or ``.yml``/``.json``) in the current directory,
``~/.config/openstack``, ``/etc/xdg/openstack`` and ``/etc/openstack``.  Listing
clouds must stay fast, so this module reads that file itself (PyYAML only).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUFFIXES = (".yaml", ".yml", ".json")
ENV_FILE = "OS_CLIENT_CONFIG_FILE"


def search_path() -> list[Path]:
    """The candidate files, in openstacksdk's order (computed now: HOME and cwd may change)."""
    dirs = [Path.cwd(), Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "openstack"]
    if os.environ.get("SNAP_REAL_HOME"):
        dirs.append(Path(os.environ["SNAP_REAL_HOME"]) / ".config" / "openstack")
    dirs += [Path("/etc/xdg/openstack"), Path("/etc/openstack")]
    files = [d / f"clouds{suffix}" for d in dirs for suffix in SUFFIXES]
    override = os.environ.get(ENV_FILE)
    return ([Path(override).expanduser()] if override else []) + files


def config_file() -> Path | None:
    """The clouds.yaml openstacksdk would use, or None."""
    for path in search_path():
        if path.is_file() and os.access(path, os.R_OK):
            return path
    return None


def _parse(path: Path) -> Any:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    from cm.config import read_yaml

    return read_yaml(path)


def _summary(data: Any, path: Path) -> dict[str, dict[str, Any]]:
    """{name: cm cloud config}: only what cm needs to list and find the cloud, never a secret."""
    clouds = data.get("clouds") if isinstance(data, dict) else None
    if not isinstance(clouds, dict):
        return {}
    found = {}
    for name, conf in clouds.items():
        conf = conf if isinstance(conf, dict) else {}
        auth = conf.get("auth") if isinstance(conf.get("auth"), dict) else {}
        entry = {"kind": "openstack", "cloud": str(name), "source": "clouds.yaml", "file": str(path)}
        if auth.get("auth_url"):
            entry["auth_url"] = str(auth["auth_url"])  # shown by `cm cloud list`
        if conf.get("region_name"):
            entry["region_name"] = str(conf["region_name"])
        found[str(name)] = entry
    return found


def _cache_file() -> Path | None:
    try:
        from cm.config import home

        return home() / ".clouds-yaml.cache"
    except Exception:  # noqa: BLE001 - no usable user directory: parse every time
        return None


def discovered_clouds() -> dict[str, dict[str, Any]]:
    """{name: cm cloud config} for every cloud in the user's clouds.yaml; never raises.

    Every command looks the clouds up, so the summary (no secrets in it) is kept
    as JSON in the user directory until the file changes: PyYAML is imported
    only when clouds.yaml is new or edited.  (Not cm.config.read_yaml_cached:
    that keeps the whole file, and clouds.yaml holds passwords that must not
    be copied into cm's directory.)
    """
    path = config_file()
    if path is None:
        return {}
    try:
        stat = path.stat()
        key = [str(path), stat.st_mtime_ns, stat.st_size]
        cache = _cache_file()
        if cache is not None:
            try:
                saved = json.loads(cache.read_text())
                if saved.get("key") == key:
                    return saved["clouds"]
            except (OSError, ValueError, KeyError, AttributeError):
                pass
        found = _summary(_parse(path), path)
        if cache is not None:
            try:
                from cm.config import write_private

                write_private(cache, json.dumps({"key": key, "clouds": found}))
            except OSError:
                pass  # a cache we cannot write only costs time
        return found
    except Exception:  # noqa: BLE001 - a broken clouds.yaml must not break `cm cloud list`
        return {}
