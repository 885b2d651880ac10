"""`cm default`: defaults, global and per cloud, and where each value comes from."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING, Any

from cm.commands import add_cloud_option, completes
from cm.config import MASK, is_secret
from cm.errors import UsageError
from cm.output import FORMATS, add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Show and set defaults: `default KEY=VALUE [--cloud NAME]`, `default delete KEY`, `default cloud=NAME`."
EXAMPLE = "cm default cloud=chameleon   # every later command acts on chameleon"
USAGE = "[list | KEY | KEY=VALUE ... | delete KEY ...] [--cloud NAME] [-f FORMAT]"
COLUMNS = ["key", "value", "cloud", "source"]


def declared_keys(ctx: Context) -> set[str]:
    """Keys cm or a plugin declared, or the user's cm.yaml sets: the ones `cm default` accepts."""
    from cm.plugins import registry

    keys = set(registry().settings) | set(ctx.config.shipped.get("defaults") or {})
    keys |= set(ctx.config.data.get("defaults") or {})
    for conf in ctx.config.clouds().values():
        keys |= set(conf.get("defaults") or {})
    return keys


def known_keys(ctx: Context, cloud: str | None) -> list[str]:
    """The keys worth showing: declared ones that have a value, and any set with `cm default`."""
    keys = set(ctx.config.shipped.get("defaults") or {}) | set(ctx.config.data.get("defaults") or {})
    keys |= {d["key"] for d in ctx.mirror.defaults()}
    if cloud:
        keys |= set((ctx.config.clouds().get(cloud) or {}).get("defaults") or {})
    return sorted(keys)


def check_key(ctx: Context, key: str) -> None:
    """An undeclared key is a typo or a setting nothing reads: refuse it, listing the known ones."""
    known = declared_keys(ctx)
    if key not in known:
        from cm.runner import suggest

        raise UsageError(f"unknown default '{key}' (known: {', '.join(sorted(known))}){suggest(key.lower(), known)}")


def _row(ctx: Context, key: str, cloud: str | None) -> dict[str, Any]:
    value, source = ctx.setting(key, cloud)
    if key == "user" and value is None:
        value, source = ctx.user(cloud), "login name"
    return {"key": key, "value": MASK if is_secret(key) and value else value, "cloud": cloud or "", "source": source}


def show_defaults(ctx: Context, args: Namespace, keys: list[str]) -> None:
    cloud = ctx.cloud_name(args) if args.cloud else None
    clouds = [cloud] if cloud else [None, *sorted({d["cloud"] for d in ctx.mirror.defaults() if d["cloud"]} |
                                                  {n for n, c in ctx.config.clouds().items() if c.get("defaults")})]
    rows = []
    for scope in clouds:
        for key in keys or known_keys(ctx, scope):
            row = _row(ctx, key, scope)
            # In the all-clouds view a per-cloud row is shown only where the cloud differs.
            if scope and not args.cloud and not row["source"].startswith(("cm default --cloud", "cm.yaml clouds")):
                continue
            rows.append(row)
    ctx.emit(COLUMNS, rows, args)


def _validate(ctx: Context, key: str, value: str, cloud: str | None) -> Any:
    check_key(ctx, key)
    if key == "cloud":
        if cloud:
            raise UsageError("the active cloud is global; drop --cloud")
        ctx.config.cloud(value)  # must exist
    if key == "format" and value not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}")
    if key == "timeout":
        from cm.context import parse_seconds

        try:
            return parse_seconds(value)
        except ValueError as exc:
            raise UsageError(f"timeout must be a number of seconds (0 or more), got '{value}'") from exc
    return value


def set_defaults(ctx: Context, args: Namespace, pairs: list[str]) -> None:
    cloud = ctx.cloud_name(args) if args.cloud else None
    parsed = []
    for pair in pairs:
        key, _, value = pair.partition("=")
        if not key:
            raise UsageError(f"expected KEY=VALUE, got '{pair}'")
        parsed.append((key, _validate(ctx, key, value, cloud)))
    for key, value in parsed:
        ctx.mirror.set_default(key, value, cloud)
        scope = f" for cloud {cloud}" if cloud else ""
        ctx.say(f"{key}={MASK if is_secret(key) else value}{scope}")
        if not cloud and key != "cloud":
            _warn_if_shadowed(ctx, key)


def _warn_if_shadowed(ctx: Context, key: str) -> None:
    """A global default the active cloud overrides has no effect there: say so."""
    active = ctx.active_cloud()
    value, source = ctx.setting(key, active)
    if source.startswith(("cm default --cloud", "cm.yaml clouds")):
        ctx.warn(f"note: on the active cloud '{active}', {key} stays {value} ({source}); "
                 f"set it there with `cm default {key}=VALUE --cloud {active}`")


def delete_defaults(ctx: Context, args: Namespace, keys: list[str]) -> int:
    if not keys:
        raise UsageError("default delete: name the KEY to delete")
    cloud = ctx.cloud_name(args) if args.cloud else None
    missing = [k for k in keys if not ctx.mirror.delete_default(k, cloud)]
    if missing:
        raise UsageError(f"no default {', '.join(missing)} was set with `cm default`" + (f" for {cloud}" if cloud else ""))
    ctx.say(f"deleted {', '.join(keys)}")
    return 0


def run_default(ctx: Context, args: Namespace) -> int | None:
    words = list(args.words)
    if words and words[0] == "delete":
        return delete_defaults(ctx, args, words[1:])
    if words and words[0] == "list":
        words = words[1:]
    if any("=" in w for w in words):
        stray = [w for w in words if "=" not in w]
        if stray:
            raise UsageError(f"default: expected KEY=VALUE, got '{stray[0]}' (usage: cm default {USAGE})")
        set_defaults(ctx, args, words)
        return None
    for key in words:
        check_key(ctx, key)
    show_defaults(ctx, args, words)
    return None


def build(parser: ArgumentParser) -> None:
    parser.usage = f"{parser.prog} {USAGE}"
    completes(parser.add_argument("words", nargs="*", metavar="ARG", help="list, KEY, KEY=VALUE, or delete KEY"),
              "setting")
    add_cloud_option(parser)
    add_format_options(parser)
    parser.set_defaults(run=run_default)
