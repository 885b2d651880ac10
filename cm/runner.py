"""Running command lines: parsing, $variables, !shell escapes, errors and exit codes.

One-shot mode and scripts use this directly (no cmd2 import, so ``cm vm list``
starts fast); the interactive cmd2 shell calls :func:`execute` from its ``do_``
methods, so all three modes run the same parsers and handlers.
"""

from __future__ import annotations

import argparse
import importlib
import re
from argparse import Namespace
from collections.abc import Iterable, Iterator
from functools import lru_cache
from types import ModuleType
from typing import Any, NoReturn

from cm.context import Context
from cm.errors import EXIT_FAILED, EXIT_OK, CmError, UsageError

EXIT_INTERRUPTED = 130
# $name or ${name} (a name starts with a letter or _), and $$ for a literal dollar.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")


def _untranslated_argparse() -> None:
    """Skip argparse's gettext look-ups when there is no catalog to find.

    argparse translates every title and help string it creates through the
    default gettext domain; with no catalog installed (the usual case) each
    look-up still searches the locale directories, which is most of the time
    it takes to build the vm parser.  The text is the same either way.
    """
    import gettext

    if gettext.find("messages") is None:
        argparse._ = lambda text: text  # type: ignore[attr-defined]
        argparse.ngettext = lambda one, many, n: one if n == 1 else many  # type: ignore[attr-defined]


_untranslated_argparse()


class IntermixedParsing:
    """Let options and a list of positionals mix (`cloud add lab --kind kvm uri=...`).

    Plain argparse stops filling a positional list at the first option; its
    intermixed mode does not, but cannot handle subcommands, so leaf parsers
    with a list positional use it and everything else parses as usual.
    """

    _intermixing = False

    def _wants_intermixed(self) -> bool:
        actions = self._actions  # type: ignore[attr-defined]
        return (not any(isinstance(a, argparse._SubParsersAction) for a in actions)
                and any(not a.option_strings and a.nargs in ("*", "+") for a in actions))

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        if self._intermixing or not self._wants_intermixed():
            return super().parse_known_args(args, namespace)  # type: ignore[misc]
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)  # type: ignore[attr-defined]
        finally:
            self._intermixing = False


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def suggest(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'list'?' for a near miss, else ''."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def usage_message(prog: str, message: str) -> str:
    """argparse's message, with a suggestion when a subcommand was mistyped."""
    match = _INVALID_CHOICE.search(message)
    if match:
        choices = re.findall(r"'([^']*)'", match.group(2))
        option = re.match(r"argument (-[^:]*): ", message)  # which option was wrong (a subcommand needs no name)
        message = (f"{option.group(0) if option else ''}invalid choice: '{match.group(1)}' "
                   f"(choose from {', '.join(choices)}){suggest(match.group(1), choices)}")
    return f"{prog.removeprefix('cm ')}: {message}"


class CmParser(IntermixedParsing, argparse.ArgumentParser):
    """argparse that raises a one-line UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(usage_message(self.prog, message))


def noun_module(noun: str) -> ModuleType:
    from cm.plugins import registry

    nouns = registry().nouns
    if noun not in nouns:
        if noun.startswith("-"):
            raise UsageError(f"unknown option '{noun}'; try `cm --help`")
        raise UsageError(f"unknown command '{noun}'{suggest(noun, nouns) or '; try `cm help`'}")
    return importlib.import_module(nouns[noun])


@lru_cache(maxsize=None)
def build_parser(noun: str, parser_class: type[argparse.ArgumentParser] = CmParser) -> argparse.ArgumentParser:
    """The parser of one noun, from its module's ``build``; the same in every mode.

    Cached: building the vm parser costs more than running most commands, and a
    script would otherwise build it once per line.
    """
    module = noun_module(noun)
    example = getattr(module, "EXAMPLE", "")
    formatter = getattr(parser_class, "raw_formatter", argparse.RawDescriptionHelpFormatter)
    prog = getattr(parser_class, "prog_prefix", "cm ") + noun  # usage lines read as what the user types
    parser = parser_class(prog=prog, description=module.HELP,
                          epilog=f"example:\n  {example}" if example else None, formatter_class=formatter)
    module.build(parser)
    for sub in _subparsers(parser):  # examples keep their line breaks at every level
        sub.formatter_class = formatter
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers(sub)]
    return found


def expand_variables(text: str, variables: dict[str, str], strict: bool = True) -> str:
    """Replace $name and ${name} with cm variables and $$ with a dollar.

    An unknown name is an error when ``strict``; otherwise (a !shell line) it is
    left for the shell, so `!echo $HOME` still works.
    """
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$" if strict else "$$"
        name = match.group(1) or match.group(2)
        if name in variables:
            return variables[name]
        if strict:
            raise UsageError(f"unknown variable '${name}'; define it with `cm var {name}=VALUE` (write $$ for a $)")
        return match.group(0)

    return _VAR.sub(replace, text) if "$" in text else text


def report(ctx: Context, exc: CmError) -> None:
    """An error as the one line the user sees; names and values in it cannot drive the terminal."""
    from cm.table import harmless

    ctx.warn(f"cm: {harmless(str(exc))}")


def execute(ctx: Context, args: Namespace, debug: bool = False) -> int:
    """Run a parsed command; turn every error into one line and an exit code."""
    try:
        code = args.run(ctx, args)
        return EXIT_OK if code is None else int(code)
    except CmError as exc:
        report(ctx, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        ctx.warn("cm: interrupted; the mirror keeps what was done before the interrupt")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the reader of a pipe left (`cm vm list | head`): main() ends quietly
    except Exception as exc:  # a bug or an untranslated SDK error: still one line
        if debug:
            import traceback

            ctx.warn(traceback.format_exc().rstrip())
        from cm.table import harmless

        ctx.warn(f"cm: {type(exc).__name__}: {harmless(str(exc))} (run `cm --debug ...` for details)")
        return EXIT_FAILED


def show_help(ctx: Context, words: list[str]) -> int:
    """``help`` and ``help NOUN [VERB]`` for one-shot and script modes."""
    if not words:
        from cm.plugins import registry

        ctx.say("cm: a multi-cloud shell. Commands (help COMMAND for details):")
        for noun in sorted(registry().nouns):
            ctx.say(f"  {noun:<10} {noun_module(noun).HELP}")
        return EXIT_OK
    parser = build_parser(words[0])
    for word in words[1:]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            raise UsageError(f"no help for '{' '.join(words)}'")
        parser = subs[0].choices[word]
    ctx.say(parser.format_help().rstrip())
    return EXIT_OK


def expand_words(ctx: Context, words: list[str]) -> list[str]:
    """Each word's $variables, expanded once: a value is never split again nor read as | or #."""
    if not any("$" in w for w in words):
        return words
    variables = ctx.mirror.variables()
    return [expand_variables(w, variables) for w in words]


def split_line(line: str) -> list[str]:
    """A command line's words, quotes removed and a # comment dropped (before any $variable expands)."""
    import shlex

    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise UsageError(f"cannot parse the line: {exc}") from None


def run_words(ctx: Context, words: list[str], debug: bool = False) -> int:
    """Run one command given as words: split, with variables not yet expanded (each is, once)."""
    try:
        words = expand_words(ctx, words)
        if not words:
            return EXIT_OK
        if words[0] in ("help", "-h", "--help"):
            return show_help(ctx, words[1:])
        if words == ["quit"] or words == ["exit"]:
            return EXIT_OK  # a script stops at it (run_script); one-shot there is nothing to leave
        parser = build_parser(words[0])
        try:
            args = parser.parse_args(words[1:])
        except SystemExit as exc:  # --help printed its text
            return int(exc.code or 0)
    except CmError as exc:
        report(ctx, exc)
        return exc.exit_code
    return execute(ctx, args, debug)


def run_line(ctx: Context, line: str, debug: bool = False) -> int:
    """Run one script or stdin line: a command, a !shell escape, a comment or nothing."""
    line = line.strip()
    if not line or line.startswith("#"):
        return EXIT_OK
    try:
        if line.startswith("!"):
            import subprocess

            command = expand_variables(line[1:], ctx.mirror.variables(), strict=False)
            return subprocess.run(command, shell=True).returncode
        words = split_line(line)  # variables expand per word, after comments are gone
        redirect = next((w for w in words if w in (">", ">>", "|", "<")), None)
        if redirect:
            raise UsageError(f"'{redirect}' works in the interactive shell only; in a script use a !shell line "
                             "or run `cm ...` from bash")
    except CmError as exc:
        report(ctx, exc)
        return exc.exit_code
    return run_words(ctx, words, debug)


def script_lines(data: Iterable[bytes], source: str) -> Iterator[str]:
    """The one reader of scripts, files and stdin alike: lines end only at a newline (so a U+2028
    inside a line neither splits it nor shifts line numbers), a BOM before the first is dropped,
    and bytes that are not UTF-8 are refused, naming the line."""
    for number, raw in enumerate(data, start=1):
        if number == 1:
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"cannot read script {source}: line {number} is not UTF-8 text") from None
        yield text.removesuffix("\n").removesuffix("\r")


def read_script(path: str) -> list[str]:
    """A script file's lines, all checked before the first one runs."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError(f"cannot read script {path}: {exc.strerror}") from None
    import io

    return list(script_lines(io.BytesIO(data), path))


def run_script(ctx: Context, lines: Iterable[str], source: str, *, keep_going: bool = False,
               debug: bool = False, echo: bool = False) -> int:
    """Run lines in order; stop at the first failure (naming file:line) unless keep_going.

    With ``echo`` each command is shown before its output, and comments too, so a
    script reads as a tutorial (the tour of `make run`).
    """
    failures = 0
    last = EXIT_OK
    in_comment = False
    try:
        for number, line in enumerate(lines, start=1):
            code = _script_line(ctx, number, line, echo, in_comment, debug)
            in_comment = echo and line.lstrip().startswith("#") if line.strip() else in_comment
            if code is None:
                break
            if code == EXIT_OK:
                continue
            failures += 1
            last = code
            where = f"{source}:{number}"
            if not keep_going:
                ctx.warn(f"cm: {where}: stopped at `{line.strip()}` (exit {code})")
                return code
            ctx.warn(f"cm: {where}: `{line.strip()}` failed (exit {code}); going on")
    except CmError as exc:  # stdin turned out not to be text: what ran stays done
        report(ctx, exc)
        return exc.exit_code
    if failures:
        ctx.warn(f"cm: {source}: {failures} line(s) failed")
    return last if failures else EXIT_OK


def _script_line(ctx: Context, number: int, line: str, echo: bool, in_comment: bool, debug: bool) -> int | None:
    """Run one script line (shown first with ``echo``); None at quit or exit."""
    if line.strip() in ("quit", "exit"):
        return None
    if echo and line.strip():
        comment = line.lstrip().startswith("#")
        ctx.say(("" if in_comment or number == 1 else "\n") + line.rstrip() if comment else f"cm> {line.strip()}")
    return run_line(ctx, line, debug)


def parse_global(argv: list[str]) -> tuple[Namespace, list[str]]:
    """The options that come before the command: --debug, --file, --keep-going, --echo, --version."""
    options: dict[str, Any] = {"debug": False, "file": None, "keep_going": False, "version": False, "echo": False}
    rest = list(argv)
    while rest and rest[0].startswith("--") and rest[0].split("=")[0] in ("--debug", "--file", "--keep-going",
                                                                          "--version", "--echo"):
        word = rest.pop(0)
        if word == "--file":
            if not rest:
                raise UsageError("--file needs the path of a script")
            options["file"] = rest.pop(0)
        elif word.startswith("--file="):
            options["file"] = word.split("=", 1)[1]
        else:
            options[word[2:].replace("-", "_")] = True
    return Namespace(**options), rest
