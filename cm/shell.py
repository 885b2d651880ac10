"""The interactive shell: cmd2, with one CommandSet per noun built from the same
parsers and handlers that one-shot and script modes use."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, NoReturn

import cmd2
from cmd2 import Cmd2ArgumentParser, CommandSet, with_argparser
from cmd2.completion import Choices
from cmd2.rich_utils import RawDescriptionCmd2HelpFormatter

from cm import runner
from cm.config import mask_url
from cm.context import Context
from cm.errors import CmError, UsageError

CATEGORY = "cm commands"
# KEY=VALUE words whose key looks secret (password=, os_token=, api_key= ...).
_SECRET_SETTING = re.compile(r"\b\w*(password|secret|token|api_?key|credential)\w*=", re.IGNORECASE)
# What a completion hint names -> (mirror kind); "cloud" completes registered clouds.
MIRROR_KINDS = {"vm", "image", "flavor", "key", "group", "secgroup", "network", "ip"}


class ShellParser(runner.IntermixedParsing, Cmd2ArgumentParser):
    """cmd2's parser, but a usage error is one line and the shell keeps running."""

    raw_formatter = RawDescriptionCmd2HelpFormatter
    prog_prefix = ""  # at the cm prompt commands are typed without `cm`

    def error(self, message: str) -> NoReturn:
        raise UsageError(runner.usage_message(self.prog, message))


def _walk(parser: argparse.ArgumentParser):  # type: ignore[no-untyped-def]
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _walk(sub)


def _attach_completion(parser: argparse.ArgumentParser) -> None:
    """Turn the commands' completion hints into cmd2 choices providers."""
    for action in _walk(parser):
        what = getattr(action, "cm_complete", None)
        if what:
            action.set_choices_provider(_provider_for(what))  # type: ignore[attr-defined]


def _provider_for(what: str):  # type: ignore[no-untyped-def]
    def provide(app: "Shell", arg_tokens: dict[str, list[str]]) -> Choices:
        cloud = (arg_tokens.get("cloud") or [None])[0]  # `vm stop --cloud lab <Tab>`: lab's VMs
        return Choices.from_values(app.known_names(what, cloud))

    return provide


def command_set(noun: str) -> CommandSet[Any]:
    """A CommandSet holding ``do_<noun>``, parsed by the noun's own parser."""
    module = runner.noun_module(noun)

    def make_parser() -> Cmd2ArgumentParser:
        parser = runner.build_parser(noun, ShellParser)
        _attach_completion(parser)
        return parser  # type: ignore[return-value]

    @with_argparser(make_parser)
    def do_command(self: CommandSet[Any], args: argparse.Namespace) -> None:
        self._cmd.run_parsed(args)

    do_command.__doc__ = module.HELP
    # cmd2 keys parsers by the function's qualified name; each noun needs its own.
    do_command.__name__ = f"do_{noun}"
    do_command.__qualname__ = f"{noun.capitalize()}Commands.do_{noun}"
    cls = type(f"{noun.capitalize()}Commands", (CommandSet,), {"DEFAULT_CATEGORY": CATEGORY, f"do_{noun}": do_command})
    return cls()


class _ExpandingStatements(cmd2.parsing.StatementParser):
    """cmd2's line parser, but a command's words come as in scripts: split with # comments dropped,
    then each word's $variables expanded once (a value is never split again nor read as | or #)."""

    def __init__(self, ctx: Context, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ctx = ctx

    def get_command_arg_list(self, command_name: str, to_parse: cmd2.Statement | str,
                             preserve_quotes: bool) -> tuple[cmd2.Statement, list[str]]:
        statement, words = super().get_command_arg_list(command_name, to_parse, preserve_quotes)
        if preserve_quotes:
            return statement, words
        return statement, runner.expand_words(self.ctx, runner.split_line(statement.args))


# cmd2's own commands cm does not document (they run editors, Python, shell scripts, macros).
CMD2_COMMANDS = ("alias", "edit", "history", "ipy", "macro", "py", "run_pyscript", "run_script", "_relative_run_script",
                 "set", "shell", "shortcuts")


class Shell(cmd2.Cmd):
    """`cm` with no arguments: the prompt shows the active cloud."""

    def __init__(self, ctx: Context, debug: bool = False, **kwargs: Any) -> None:
        from cm.plugins import registry

        history = str(ctx.home / "history")
        super().__init__(allow_cli_args=False, auto_load_commands=False, persistent_history_file=history,
                         command_sets=[command_set(noun) for noun in sorted(registry().nouns)],
                         shortcuts={"?": "help"}, **kwargs)  # `!` lines are cm's own (onecmd_plus_hooks)
        self.ctx = ctx
        for name in CMD2_COMMANDS:  # not callable: not commands at all (`edit` is an unknown command)
            setattr(self, f"do_{name}", None)
        parser = self.statement_parser
        self.statement_parser = _ExpandingStatements(ctx, terminators=parser.terminators,
                                                     multiline_commands=parser.multiline_commands,
                                                     shortcuts=dict(parser.shortcuts))
        self.debug = debug
        ctx.out = self.poutput
        ctx.err = self.perror
        ctx.interactive = True
        self.intro = "cm: a multi-cloud shell. Type `help` for commands, `help vm boot` for one, `quit` to leave."
        self._update_prompt()

    # -- running commands ------------------------------------------------------------
    def run_parsed(self, args: argparse.Namespace) -> None:
        code = runner.execute(self.ctx, args, self.debug)
        self.last_result = code

    def onecmd_plus_hooks(self, line: str, **kwargs: Any) -> bool:
        """A `!shell` line runs exactly as in a script; everything else through cmd2."""
        if line.lstrip().startswith("!"):
            self.last_result = runner.run_line(self.ctx, line, self.debug)
            return False
        return super().onecmd_plus_hooks(line, **kwargs)

    def pexcept(self, exception: BaseException, **kwargs: Any) -> None:
        """Errors are one line; tracebacks only with --debug."""
        if isinstance(exception, CmError):
            runner.report(self.ctx, exception)
            self.last_result = exception.exit_code
        elif self.debug:
            super().pexcept(exception, **kwargs)
        else:
            self.perror(f"cm: {type(exception).__name__}: {exception} (start with `cm --debug` for details)")

    def default(self, statement: cmd2.Statement) -> None:  # type: ignore[override]
        from cm.plugins import registry

        hint = runner.suggest(statement.command, registry().nouns)
        self.perror(f"cm: unknown command '{statement.command}'{hint or '; try `help`'}")
        self.last_result = 2

    def postcmd(self, stop: bool, statement: cmd2.Statement | str) -> bool:
        self._forget_secrets(statement)
        self._update_prompt()
        return stop

    def _forget_secrets(self, statement: cmd2.Statement | str) -> None:
        """A line that typed a password (password=..., or one in a URL: qemu+ssh://me:PW@host) is not kept."""
        raw = statement.raw if isinstance(statement, cmd2.Statement) else statement
        if (_SECRET_SETTING.search(raw) or mask_url(raw) != raw) and len(self.history) and self.history[-1].statement.raw == raw:
            self.history.pop()

    def _persist_history(self) -> None:
        super()._persist_history()
        if self.persistent_history_file and os.path.exists(self.persistent_history_file):
            os.chmod(self.persistent_history_file, 0o600)  # it holds what the user typed

    def _print_documented_command_topics(self, category: str, commands: list[str], verbose: bool) -> None:
        super()._print_documented_command_topics(category, commands, True)  # always with descriptions

    def _update_prompt(self) -> None:
        try:
            cloud = self.ctx.active_cloud()
        except CmError:
            cloud = "?"
        self.prompt = f"cm ({cloud})> "

    # -- completion ---------------------------------------------------------------------
    def known_names(self, what: str, cloud: str | None = None) -> list[str]:
        """Names for tab completion: clouds from the config, the rest from the mirror (of ``cloud``,
        else the active cloud; ``all``: every cloud)."""
        try:
            if what == "cloud":
                return sorted(self.ctx.config.clouds())
            if what == "setting":  # `default cloud=<Tab>`: verbs, KEY=, and cloud=NAME
                from cm.commands.default import declared_keys

                keys = sorted(declared_keys(self.ctx))
                return ["list", "delete", *(f"{k}=" for k in keys), *(f"cloud={c}" for c in self.ctx.config.clouds())]
            if what not in MIRROR_KINDS:
                return []
            if what == "group":
                scopes = [""]
            elif cloud == "all":
                scopes = sorted(self.ctx.config.clouds())
            else:
                scopes = [cloud or self.ctx.active_cloud()]
            return sorted({str(r["name"]) for scope in scopes for r in self.ctx.mirror.records(what, scope)})
        except CmError:
            return []

    def run(self) -> int:
        self.cmdloop()
        return 0
