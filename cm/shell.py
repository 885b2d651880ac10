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
    def provide(app: "Shell") -> Choices:
        return Choices.from_values(app.known_names(what))

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


class Shell(cmd2.Cmd):
    """`cm` with no arguments: the prompt shows the active cloud."""

    def __init__(self, ctx: Context, debug: bool = False, **kwargs: Any) -> None:
        from cm.plugins import registry

        history = str(ctx.home / "history")
        super().__init__(allow_cli_args=False, auto_load_commands=False, persistent_history_file=history,
                         command_sets=[command_set(noun) for noun in sorted(registry().nouns)], **kwargs)
        self.ctx = ctx
        self.debug = debug
        ctx.out = self.poutput
        ctx.err = self.perror
        ctx.interactive = True
        self.intro = "cm: a multi-cloud shell. Type `help` for commands, `help vm boot` for one, `quit` to leave."
        self.register_postparsing_hook(self._expand_variables)
        # cmd2's own scripting and macro commands are not part of cm; keep help about cm.
        self.hidden_commands += ["alias", "macro", "run_pyscript", "run_script", "edit", "set", "shortcuts",
                                 "ipy", "py"]
        self._update_prompt()

    # -- running commands ------------------------------------------------------------
    def run_parsed(self, args: argparse.Namespace) -> None:
        code = runner.execute(self.ctx, args, self.debug)
        self.last_result = code

    def _expand_variables(self, data: cmd2.plugin.PostparsingData) -> cmd2.plugin.PostparsingData:
        """$name expands as in scripts; on !shell lines only cm's own variables do."""
        raw = data.statement.raw
        if "$" in raw:
            shell_line = raw.lstrip().startswith(("!", "shell "))
            expanded = runner.expand_variables(raw, self.ctx.mirror.variables(), strict=not shell_line)
            data.statement = self.statement_parser.parse(expanded)
        return data

    def pexcept(self, exception: BaseException, **kwargs: Any) -> None:
        """Errors are one line; tracebacks only with --debug."""
        if isinstance(exception, CmError):
            self.perror(f"cm: {exception}")
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
    def known_names(self, what: str) -> list[str]:
        """Names for tab completion: clouds from the config, the rest from the mirror."""
        try:
            if what == "cloud":
                return sorted(self.ctx.config.clouds())
            if what == "setting":  # `default cloud=<Tab>`: verbs, KEY=, and cloud=NAME
                from cm.commands.default import declared_keys

                keys = sorted(declared_keys(self.ctx))
                return ["list", "delete", *(f"{k}=" for k in keys), *(f"cloud={c}" for c in self.ctx.config.clouds())]
            if what not in MIRROR_KINDS:
                return []
            scope = "" if what == "group" else self.ctx.active_cloud()
            return sorted({str(r["name"]) for r in self.ctx.mirror.records(what, scope)})
        except CmError:
            return []

    def run(self) -> int:
        self.cmdloop()
        return 0
