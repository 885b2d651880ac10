"""What every command gets: settings with their sources, the mirror, providers, output."""

from __future__ import annotations

import math
import sys
from argparse import Namespace
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cm import config as config_mod
from cm.errors import ConfigError
from cm.mirror import Mirror

if TYPE_CHECKING:  # the contract pulls in dataclasses/inspect: not needed to list from the mirror
    from cm.provider import Provider

Writer = Callable[[str], None]


def parse_seconds(value: Any) -> float:
    """A number of seconds, finite and not negative (nan, inf and -1 would wait forever or never)."""
    seconds = float(value)
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a number of seconds: {value!r}")
    return seconds


def _stdout(text: str) -> None:
    sys.stdout.write(text + "\n")


def _stderr(text: str) -> None:
    sys.stderr.write(text + "\n")


class Context:
    """One per shell; commands reach config, mirror, providers and output through it."""

    def __init__(self, out: Writer = _stdout, err: Writer = _stderr, *, interactive: bool = False) -> None:
        self.out = out
        self.err = err
        self.interactive = interactive
        self._providers: dict[str, Provider] = {}
        self._config: config_mod.Config | None = None
        self._config_key: int | None = None
        self._said_once: set[str] = set()

    # -- configuration and the mirror --------------------------------------------
    @cached_property
    def home(self):  # type: ignore[no-untyped-def]
        return config_mod.home()

    @property
    def config(self) -> config_mod.Config:
        """cm.yaml as it is now: a long interactive session sees the user's edits."""
        path = self.home / config_mod.CONFIG_NAME
        try:
            key = path.stat().st_mtime_ns
        except FileNotFoundError:
            key = None
        if self._config is None or self._config_key != key:
            self._config = config_mod.Config.load(self.home)
            self._config_key = path.stat().st_mtime_ns
        return self._config

    @cached_property
    def mirror(self) -> Mirror:
        return Mirror(self.home / "mirror.json")

    def setting(self, key: str, cloud: str | None = None, explicit: Any = None) -> tuple[Any, str]:
        """A setting's value and where it came from, by the documented precedence.

        explicit option > per-cloud default > global default > shipped default.
        """
        if explicit not in (None, "", []):
            return explicit, "option"
        steps: list[tuple[Callable[[], Any], str]] = []
        if cloud:
            steps += [(lambda: self.mirror.get_default(key, cloud), f"cm default --cloud {cloud}"),
                      (lambda: self.config.file_default(key, cloud), f"cm.yaml clouds.{cloud}.defaults")]
        steps += [(lambda: self.mirror.get_default(key), "cm default"),
                  (lambda: self.config.file_default(key), "cm.yaml defaults"),
                  (lambda: self.config.shipped_default(key), "shipped")]
        for lookup, source in steps:
            value = lookup()
            if value not in (None, ""):
                return value, source
        return None, "unset"

    def value(self, key: str, cloud: str | None = None, explicit: Any = None) -> Any:
        return self.setting(key, cloud, explicit)[0]

    def timeout(self, cloud: str | None, explicit: float | None = None) -> float:
        """Seconds to wait for a cloud: --timeout, else the 'timeout' default (0 means do not wait)."""
        value, source = self.setting("timeout", cloud, explicit)
        try:
            return 600.0 if value is None else parse_seconds(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"the 'timeout' setting ({source}) must be a number of seconds (0 or more), "
                              f"not '{value}'") from exc

    def active_cloud(self) -> str:
        name = self.value("cloud")
        if not name:
            raise ConfigError("no cloud selected; pick one with `cm default cloud=NAME`")
        return str(name)

    def cloud_name(self, args: Namespace | None = None) -> str:
        """The cloud a command acts on: --cloud, else the active cloud; it must exist."""
        name = getattr(args, "cloud", None) or self.active_cloud()
        self.config.check_cloud(name)
        return name

    def cloud_names(self, args: Namespace) -> list[str]:
        """Like cloud_name, but ``--cloud all`` means every registered cloud."""
        if getattr(args, "cloud", None) == "all":
            return sorted(self.config.clouds())
        return [self.cloud_name(args)]

    def user(self, cloud: str | None = None) -> str:
        import getpass

        return str(self.value("user", cloud) or getpass.getuser())

    # -- providers -------------------------------------------------------------------
    def provider(self, cloud: str) -> Provider:
        """The provider of ``cloud``, created once; its SDK is imported only now."""
        if cloud not in self._providers:
            from cm.plugins import provider_class

            conf = self.config.cloud(cloud)
            cls = provider_class(conf["kind"])
            provider = cls(cloud, conf)
            provider.notice = self.say_once
            provider.state_dir = self.home
            self._providers[cloud] = provider
        return self._providers[cloud]

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()

    # -- output -------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.out(text)

    def warn(self, text: str) -> None:
        self.err(text)

    def say_once(self, text: str) -> None:
        """A notice shown once for this user directory (stderr, so pipes stay clean)."""
        if text in self._said_once:
            return
        self._said_once.add(text)
        if self.mirror.first_notice(text):
            self.err(text)

    def output_format(self, args: Namespace) -> str:
        """-f, else the 'format' default of the cloud acted on (or the global one), else table."""
        cloud = getattr(args, "cloud", None)
        if not cloud or cloud == "all":
            try:
                cloud = self.active_cloud()
            except ConfigError:
                cloud = None
        return str(getattr(args, "format", None) or self.value("format", cloud) or "table")

    def emit(self, columns: Sequence[str], rows: list[dict[str, Any]], args: Namespace) -> None:
        from cm.output import render

        text = render(columns, rows, self.output_format(args), wanted=getattr(args, "column", []),
                      sort_by=getattr(args, "sort_column", []))
        if text:
            self.out(text)

    def emit_records(self, records: list[dict[str, Any]], args: Namespace) -> None:
        """Show several records: one document in json/yaml (a list), one block each otherwise."""
        if len(records) > 1 and self.output_format(args) in ("json", "yaml", "csv"):
            columns = list(dict.fromkeys(k for r in records for k in r))
            self.emit(columns, records, args)
        else:
            for record in records:
                self.emit_one(record, args)

    def emit_one(self, record: dict[str, Any], args: Namespace) -> None:
        from cm.output import render_one

        self.out(render_one(record, self.output_format(args), wanted=getattr(args, "column", [])))
