"""The user directory, cm.yaml, and the registered clouds.

Everything lives under one directory: ``$CM_HOME`` when set (tests and several
profiles each use their own), else ``~/.cm``.  The first run creates
``cm.yaml`` from the shipped ``defaults/cm.yaml``; later runs never overwrite it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cm.errors import ConfigError

ENV_HOME = "CM_HOME"
CONFIG_NAME = "cm.yaml"
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "credential")
MASK = "********"


def home() -> Path:
    """The user directory, created private (0700) on first use."""
    path = Path(os.environ.get(ENV_HOME) or Path.home() / ".cm").expanduser()
    if not path.is_dir():
        try:
            path.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create the cm directory {path}: {exc.strerror}; set {ENV_HOME} "
                              "to a directory you can write") from exc
    return path


def defaults_dir() -> Path:
    """Where the shipped defaults are: installed beside the package, or in the source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "defaults", here.parent / "defaults"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise ConfigError("cm's shipped defaults are missing; reinstall cm")


def _yaml() -> Any:
    import yaml  # imported here: not every command reads YAML

    return yaml


def read_yaml(path: Path) -> dict[str, Any]:
    yaml = _yaml()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(path.read_text(), Loader=loader) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where else ""
        raise ConfigError(f"{path}{line}: not valid YAML; fix or remove the file") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def read_yaml_cached(path: Path, cache: Path) -> dict[str, Any]:
    """read_yaml, remembered as JSON until the file changes.

    Importing PyYAML and parsing costs 20-40 ms, a large share of a one-shot
    command's start-up; the JSON copy loads in well under a millisecond.
    """
    stat = path.stat()
    key = [str(path), stat.st_mtime_ns, stat.st_size]
    try:
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return saved["data"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    data = read_yaml(path)
    try:
        write_private(cache, json.dumps({"key": key, "data": data}, default=str))
    except OSError:
        pass  # a cache we cannot write only costs time
    return data


def write_private(path: Path, text: str) -> None:
    """Write atomically, readable by the owner only (the file may hold secrets)."""
    write_atomic(path, text, 0o600)


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace ``path`` with ``text`` at once (readers see the old file or the new, never half), mode ``mode``."""
    import tempfile

    # The pid in the name lets a later run tell an orphan (its writer was killed) from a write in progress.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Temporary files of atomic writes: .NAME.PID.tmp (the mirror) or .NAME.PID.RANDOM.tmp (write_private).
_TEMPORARY = re.compile(r"^\..+\.(\d+)(?:\.[^.]+)?\.tmp$")
ORPHAN_AGE = 3600.0  # seconds after which a temporary file is an orphan even if its pid was reused


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def sweep_temporaries(directory: Path) -> None:
    """Delete temporary files that writers killed mid-write (kill -9, power loss) left behind."""
    import time

    now = time.time()
    for folder in (directory, *(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _TEMPORARY.match(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if not _alive(int(match.group(1))) or now - entry.stat().st_mtime > ORPHAN_AGE:
                    os.unlink(entry.path)
            except (OSError, ValueError):
                pass  # gone already, or not ours to delete


def is_secret(key: str) -> bool:
    return any(word in key.lower() for word in SECRET_WORDS)


_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:\s]+):[^/@\s]+@", re.IGNORECASE)


def mask_url(text: str) -> str:
    """qemu+ssh://me:pw@host/system -> qemu+ssh://me:********@host/system."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)


def redact(value: Any) -> Any:
    """A copy with every secret-looking value (and password in a URL) masked, for display."""
    if isinstance(value, dict):
        return {k: (MASK if is_secret(str(k)) and v else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "@" in value:
        return mask_url(value)
    return value


def _drop_stale_caches(directory: Path) -> None:
    """Parsed copies of clouds.d files deleted by hand: they may hold a password."""
    cache = directory / ".cache"
    if cache.is_dir():
        for path in cache.glob("cloud-*.json"):
            if not (directory / "clouds.d" / f"{path.stem.removeprefix('cloud-')}.yaml").exists():
                path.unlink(missing_ok=True)


# Plugins may contribute clouds found elsewhere (OpenStack's clouds.yaml).
CloudSource = Callable[[], dict[str, dict[str, Any]]]


def _check_shape(path: Path, data: dict[str, Any]) -> None:
    """The parts of cm.yaml cm reads must be mappings; say which one is not."""
    for key in ("defaults", "clouds"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping (KEY: VALUE lines), not {data[key]!r}")
    for name, conf in (data.get("clouds") or {}).items():
        if not isinstance(conf, dict):
            raise ConfigError(f"{path}: cloud '{name}' must be a mapping of settings, not {conf!r}")
        if conf.get("defaults") is not None and not isinstance(conf["defaults"], dict):
            raise ConfigError(f"{path}: clouds.{name}.defaults must be a mapping")


class Config:
    """The user's cm.yaml plus clouds discovered by plugins."""

    def __init__(self, path: Path, data: dict[str, Any], shipped: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self.shipped = shipped
        self._discovered: dict[str, dict[str, Any]] | None = None

    @classmethod
    def load(cls, directory: Path | None = None) -> "Config":
        directory = directory or home()
        path = directory / CONFIG_NAME
        shipped_path = defaults_dir() / CONFIG_NAME
        if not path.exists():
            write_private(path, shipped_path.read_text())
        else:
            sweep_temporaries(directory)
            _drop_stale_caches(directory)
        data = read_yaml_cached(path, directory / ".cm.yaml.cache")
        _check_shape(path, data)
        return cls(path, data, read_yaml_cached(shipped_path, directory / ".shipped.yaml.cache"))

    @property
    def added_dir(self) -> Path:
        """Clouds added with `cm cloud add`: one file each, so cm never rewrites cm.yaml."""
        return self.path.parent / "clouds.d"

    # -- defaults written in the file ------------------------------------------
    def file_default(self, key: str, cloud: str | None = None) -> Any:
        if cloud is not None:
            return (self.clouds().get(cloud, {}).get("defaults") or {}).get(key)
        return (self.data.get("defaults") or {}).get(key)

    def shipped_default(self, key: str) -> Any:
        return (self.shipped.get("defaults") or {}).get(key)

    # -- clouds -------------------------------------------------------------------
    def discovered(self) -> dict[str, dict[str, Any]]:
        if self._discovered is None:
            from cm.plugins import registry

            self._discovered = {}
            for source in registry().cloud_sources:
                for name, conf in source().items():
                    self._discovered.setdefault(name, conf)
        return self._discovered

    def added(self) -> dict[str, dict[str, Any]]:
        """The clouds of clouds.d/NAME.yaml."""
        found: dict[str, dict[str, Any]] = {}
        if self.added_dir.is_dir():
            for path in sorted(self.added_dir.glob("*.yaml")):
                cache = self._cache_of(path.stem)
                cache.parent.mkdir(mode=0o700, exist_ok=True)
                conf = read_yaml_cached(path, cache)
                _check_shape(path, {"clouds": {path.stem: conf}})
                found[path.stem] = {**conf, "source": "cloud add"}
        return found

    def _cache_of(self, name: str) -> Path:
        return self.path.parent / ".cache" / f"cloud-{name}.json"

    def clouds(self) -> dict[str, dict[str, Any]]:
        """Every cloud: cm.yaml's entries win over added ones, which win over discovered ones."""
        merged = dict(self.discovered())
        merged.update(self.added())
        merged.update({name: {**conf, "source": "cm.yaml"} for name, conf in (self.data.get("clouds") or {}).items()})
        return merged

    def check_cloud(self, name: str) -> dict[str, Any]:
        """The cloud's settings as stored (do not change them); an unknown cloud is an error."""
        clouds = self.clouds()
        if name not in clouds:
            known = ", ".join(sorted(clouds)) or "none"
            raise ConfigError(f"unknown cloud '{name}' (known: {known}); see `cm cloud list`")
        if not clouds[name].get("kind"):
            raise ConfigError(f"cloud '{name}' in {self.path} has no 'kind'")
        return clouds[name]

    def cloud(self, name: str) -> dict[str, Any]:
        """A copy of the cloud's settings, for a provider to keep."""
        return copy.deepcopy(self.check_cloud(name))

    def add_cloud(self, name: str, conf: dict[str, Any]) -> Path:
        """Write clouds.d/NAME.yaml (0600: it may hold a password); never touches cm.yaml."""
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
            raise ConfigError(f"bad cloud name '{name}': use letters, digits, '.', '-' and '_'")
        if name in self.clouds():
            raise ConfigError(f"cloud '{name}' already exists; remove it first")
        self.added_dir.mkdir(mode=0o700, exist_ok=True)
        path = self.added_dir / f"{name}.yaml"
        header = f"# cloud '{name}', added with `cm cloud add`; edit freely, remove with `cm cloud remove {name}`\n"
        write_private(path, header + _yaml().safe_dump(conf, sort_keys=False))
        return path

    def remove_cloud(self, name: str) -> None:
        path = self.added_dir / f"{name}.yaml"
        if path.is_file():
            path.unlink()
            self._cache_of(name).unlink(missing_ok=True)  # the parsed copy holds its password too
            return
        if name in (self.data.get("clouds") or {}):
            raise ConfigError(f"cloud '{name}' is defined in {self.path}; remove it there")
        if name in self.discovered():
            raise ConfigError(f"cloud '{name}' comes from clouds.yaml; remove it there")
        raise ConfigError(f"unknown cloud '{name}'")
