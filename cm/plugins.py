"""Plugins: cloud kinds and command nouns found through the ``cm.plugins`` entry-point group.

A plugin is a module named by an entry point.  It may define these hooks, each
taking a ``register`` callback (the llm/datasette style):

``register_providers(register)``
    ``register(kind, "package.module:Class")`` adds a cloud kind.  The target is
    a string so listing kinds never imports a provider SDK.
``register_commands(register)``
    ``register(noun, "package.module")`` adds a noun of the shell; the module
    defines ``HELP`` and ``build(parser)`` (see :mod:`cm.commands`).
``register_settings(register)``
    ``register(key, help)`` declares a key `cm default KEY=VALUE` accepts
    (cm refuses keys nobody declared, so a typo is caught).
``register_clouds(register)``
    ``register(source)`` adds a function returning ``{name: cloud config}`` for
    clouds configured outside cm.yaml (OpenStack's clouds.yaml).

The built-in providers and commands are registered the very same way, by the
``cm`` package's own entry points.  A plugin that fails to load is reported
and skipped; the rest of the shell works.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from cm.errors import ConfigError

GROUP = "cm.plugins"

# Used when the package metadata is missing (running from a source tree that
# was never pip-installed); mirrors pyproject.toml's entry points.
BUILTIN = {"core": "cm.commands", "kvm": "cm_plugins.kvm", "openstack": "cm_plugins.openstack",
           "slurm": "cm_plugins.slurm"}


# Plain classes, not dataclasses: importing dataclasses (and inspect) costs
# more start-up time than everything else `cm vm list` does.
class Plugin:
    """One entry point of the group and what it registered."""

    def __init__(self, name: str, module: str, package: str = "", version: str = "") -> None:
        self.name, self.module, self.package, self.version = name, module, package, version
        self.kinds: list[str] = []
        self.nouns: list[str] = []
        self.error = ""


class Registry:
    """Everything the plugins registered."""

    def __init__(self) -> None:
        self.plugins: list[Plugin] = []
        self.providers: dict[str, str] = {}  # kind -> "module:Class"
        self.nouns: dict[str, str] = {}  # noun -> module
        self.cloud_sources: list[Callable[[], dict[str, Any]]] = []
        self.settings: dict[str, str] = {}  # default key -> what it is

    @property
    def failed(self) -> list[Plugin]:
        return [p for p in self.plugins if p.error]


def _scan_dist_infos() -> list[tuple[str, str, str, str]]:
    """Entry points of the group, read straight from ``*.dist-info/entry_points.txt`` on sys.path.

    importlib.metadata finds the same, but importing it (and the email parser it
    pulls in) costs 35-45 ms, a third of the start-up budget of `cm vm list`.
    """
    found: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    header = f"[{GROUP}]"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for dirname in names:
            if not dirname.endswith(".dist-info"):
                continue
            try:
                with open(os.path.join(entry or ".", dirname, "entry_points.txt")) as handle:
                    text = handle.read()
            except OSError:
                continue
            package, _, version = dirname[: -len(".dist-info")].partition("-")
            if header not in text or package in seen:
                continue
            seen.add(package)
            found += [(name, module, package, version) for name, module in _group_lines(text, header)]
    return found


def _group_lines(text: str, header: str) -> list[tuple[str, str]]:
    """The ``name = value`` lines of one section of an entry_points.txt."""
    pairs, inside = [], False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            inside = line == header
        elif inside and "=" in line:
            name, _, value = line.partition("=")
            pairs.append((name.strip(), value.strip()))
    return pairs


def _entry_points() -> list[tuple[str, str, str, str]]:
    """(name, module, package, version) for each entry point of the group."""
    found = _scan_dist_infos()
    if not any(name == "core" for name, *_ in found):
        from importlib.metadata import entry_points  # eggs, zips and other rare layouts

        found = []
        for ep in entry_points(group=GROUP):
            dist = getattr(ep, "dist", None)
            found.append((ep.name, ep.value, dist.name if dist else "", dist.version if dist else ""))
    if not any(name == "core" for name, *_ in found):
        from cm import __version__

        found[:0] = [(n, m, "cm (source tree)", __version__) for n, m in BUILTIN.items()]
    return found


def _load_one(plugin: Plugin, registry: Registry) -> None:
    module = importlib.import_module(plugin.module)

    def add_provider(kind: str, target: str) -> None:
        registry.providers[kind] = target
        plugin.kinds.append(kind)

    def add_noun(noun: str, target: str) -> None:
        registry.nouns[noun] = target
        plugin.nouns.append(noun)

    if hasattr(module, "register_providers"):
        module.register_providers(add_provider)
    if hasattr(module, "register_commands"):
        module.register_commands(add_noun)
    if hasattr(module, "register_settings"):
        module.register_settings(registry.settings.__setitem__)
    if hasattr(module, "register_clouds"):
        module.register_clouds(registry.cloud_sources.append)


@lru_cache(maxsize=1)
def registry() -> Registry:
    """Load every plugin once per process."""
    reg = Registry()
    for name, module, package, version in _entry_points():
        plugin = Plugin(name, module, package, version)
        reg.plugins.append(plugin)
        try:
            _load_one(plugin, reg)
        except Exception as exc:  # a broken plugin must not take the shell down
            plugin.error = f"{type(exc).__name__}: {exc}"
            print(f"cm: plugin '{name}' ({package} {version}) failed to load and was skipped: {plugin.error}",
                  file=sys.stderr)
    return reg


def load_target(target: str) -> Any:
    """Import ``module:attr`` (or a module) only when it is needed."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def provider_class(kind: str) -> type:
    """The provider class of a cloud kind, importing its SDK only now."""
    target = registry().providers.get(kind)
    if target is None:
        known = ", ".join(sorted(registry().providers)) or "none"
        raise ConfigError(f"unknown cloud kind '{kind}' (known kinds: {known})")
    try:
        return load_target(target)
    except ImportError as exc:
        raise ConfigError(f"cloud kind '{kind}' needs a package that is not installed: {exc}") from exc
