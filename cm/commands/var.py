"""`cm var`: variables that expand as $NAME in commands and scripts."""

from __future__ import annotations

import re
from argparse import ArgumentParser, Namespace
from typing import TYPE_CHECKING

from cm.config import MASK, is_secret
from cm.errors import UsageError
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Set, list and delete variables; $NAME expands in every command and script line."
EXAMPLE = "cm var img=ubuntu-22.04; cm vm boot --image $img"
USAGE = "[list | NAME | NAME=VALUE ... | delete NAME ...] [-f FORMAT]"
_NAME = re.compile(r"^[A-Za-z_]\w*$")  # what $name can expand


def _shown(name: str, value: str) -> str:
    """A value as cm prints it: masked when the name looks secret (os_password, api_token...)."""
    return MASK if is_secret(name) and value else value


def _row(name: str, value: str) -> dict[str, str]:
    return {"name": name, "value": _shown(name, value)}


def run_var(ctx: Context, args: Namespace) -> None:
    words = list(args.words)
    if not words or words == ["list"]:
        rows = [_row(k, v) for k, v in sorted(ctx.mirror.variables().items())]
        ctx.emit(["name", "value"], rows, args)
    elif words[0] == "delete":
        if len(words) < 2:
            raise UsageError("var delete: name the variable to delete")
        for name in words[1:]:
            if not ctx.mirror.delete_variable(name):
                raise UsageError(f"unknown variable '{name}'")
            ctx.say(f"deleted {name}")
    elif all("=" in w for w in words):
        for word in words:
            name, _, value = word.partition("=")
            if not _NAME.match(name):
                raise UsageError(f"bad variable name '{name}': a letter or _, then letters, digits and _")
            ctx.mirror.set_variable(name, value)
            ctx.say(f"{name}={_shown(name, value)}")
    elif len(words) == 1:
        variables = ctx.mirror.variables()
        if words[0] not in variables:
            raise UsageError(f"unknown variable '{words[0]}'")
        ctx.emit(["name", "value"], [_row(words[0], variables[words[0]])], args)
    else:
        stray = next(w for w in words if "=" not in w)
        raise UsageError(f"var: expected NAME=VALUE, got '{stray}' (usage: cm var {USAGE})")


def build(parser: ArgumentParser) -> None:
    parser.usage = f"{parser.prog} {USAGE}"
    parser.add_argument("words", nargs="*", metavar="ARG", help="list, NAME, NAME=VALUE, or delete NAME")
    add_format_options(parser)
    parser.set_defaults(run=run_var)
