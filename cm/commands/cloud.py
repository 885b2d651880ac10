"""`cm cloud`: the registered clouds, their kind and settings."""

from __future__ import annotations

import os
from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING, Any

from cm.commands import completes, subcommands, verb
from cm.config import mask_url, redact
from cm.errors import UsageError
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List, show, add and remove clouds (kvm, openstack, and kinds from plugins)."
EXAMPLE = "cm cloud add lab --kind kvm uri=qemu+ssh://me@lab/system pool=default"

# The setting that best identifies where a cloud is, per kind, for the list.
WHERE_KEYS = ("uri", "auth_url", "url", "base_url")


def _where(conf: dict[str, Any]) -> str:
    auth = conf.get("auth") or {}
    for key in WHERE_KEYS:
        if conf.get(key) or auth.get(key):
            return mask_url(str(conf.get(key) or auth.get(key)))
    return ""


def list_clouds(ctx: Context, args: Namespace) -> None:
    active = ctx.active_cloud()
    rows = [{"name": name, "kind": conf.get("kind", ""), "active": "*" if name == active else "",
             "source": conf.get("source", "plugin"), "where": _where(conf)}
            for name, conf in sorted(ctx.config.clouds().items())]
    ctx.emit(["name", "kind", "active", "source", "where"], rows, args)


def show_cloud(ctx: Context, args: Namespace) -> None:
    """The cloud's settings (secrets masked) and what its kind can do."""
    from cm.errors import CmError
    from cm.plugins import provider_class

    conf = ctx.config.cloud(args.name)
    try:
        verbs: list[str] | str = provider_class(conf["kind"]).verbs()
    except CmError as exc:  # the kind's package is missing: still show the settings
        verbs = f"unknown: {exc}"
    record = {"name": args.name, **redact(conf), "active": args.name == ctx.active_cloud(), "verbs": verbs}
    ctx.emit_one(record, args)


def _parse_settings(pairs: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got '{pair}'")
        settings[key] = value
    return settings


def add_cloud(ctx: Context, args: Namespace) -> None:
    from cm.plugins import provider_class, registry

    args.name, settings = args.words[0], args.words[1:]
    if "=" in args.name:
        raise UsageError("cloud add: the first word is the cloud's NAME")
    if args.name == "all":
        raise UsageError("'all' means every cloud (--cloud all); give this cloud another name")
    kind = args.kind or ("openstack" if args.from_env else None)
    if not kind:
        raise UsageError("cloud add: give --kind KIND (kinds: " + ", ".join(sorted(registry().providers)) + ")")
    if kind not in registry().providers:
        raise UsageError(f"unknown cloud kind '{kind}' (kinds: {', '.join(sorted(registry().providers))})")
    conf: dict[str, Any] = {"kind": kind}
    if args.from_env:
        conf.update(provider_class(kind).config_from_env(dict(os.environ)))
    conf.update(_parse_settings(settings))
    missing = provider_class(kind).missing_settings(conf)
    if missing:
        needs = "; and ".join(" or ".join(f"{key}=VALUE" for key in alternatives) for alternatives in missing)
        raise UsageError(f"cloud add: a cloud of kind '{kind}' needs {needs}")
    path = ctx.config.add_cloud(args.name, conf)
    ctx.say(f"added cloud '{args.name}' ({kind}) in {path}; use it with `cm default cloud={args.name}`")


def remove_cloud(ctx: Context, args: Namespace) -> None:
    if args.name == ctx.active_cloud():
        raise UsageError(f"'{args.name}' is the active cloud; switch with `cm default cloud=NAME` first")
    ctx.config.remove_cloud(args.name)
    ctx.mirror.forget_cloud(args.name)
    ctx.say(f"removed cloud '{args.name}' and its records in the mirror")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    add_format_options(verb(subs, "list", list_clouds, "list the registered clouds"))
    show = verb(subs, "show", show_cloud, "show one cloud's settings (secrets masked) and the verbs it can do",
                example="cm cloud show local -f yaml")
    completes(show.add_argument("name", metavar="NAME"), "cloud")
    add_format_options(show)
    add = verb(subs, "add", add_cloud, "register a cloud (written to clouds.d/NAME.yaml, 0600)",
               example="cm cloud add lab --kind kvm uri=qemu+ssh://me@lab/system pool=default")
    # One positional list: argparse cannot put an optional list after NAME once options are interleaved.
    add.add_argument("words", nargs="+", metavar="NAME [KEY=VALUE ...]",
                     help="the cloud's name, then its settings, e.g. uri=qemu:///system")
    add.add_argument("--kind", help="kvm, openstack, or a kind a plugin adds")
    add.add_argument("--from-env", action="store_true", help="import a sourced openrc's OS_* variables (OpenStack)")
    remove = verb(subs, "remove", remove_cloud,
                  "forget a cloud added with `cm cloud add`: deletes clouds.d/NAME.yaml and the cloud's records "
                  "in the mirror (clouds written in cm.yaml or clouds.yaml are removed there)",
                  example="cm cloud remove lab")
    completes(remove.add_argument("name", metavar="NAME"), "cloud")
