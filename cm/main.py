"""The `cm` command: interactive shell, one-shot command, or script runner."""

from __future__ import annotations

import os
import sys
from argparse import Namespace
from collections.abc import Iterable
from pathlib import Path

from cm.context import Context
from cm.errors import CmError
from cm.runner import parse_global, read_script, report, run_script, run_words, script_lines

USAGE = """usage: cm [--debug] [--keep-going] [--echo] [COMMAND ... | SCRIPT | --file SCRIPT]

  cm                      open the interactive shell (or run commands piped on stdin)
  cm vm list -f json      run one command and exit with its status
  cm batch.cm             run a script of commands, one per line

  --debug       show a traceback with an error
  --keep-going  run a script's later lines after one fails
  --echo        show each script line (and its comments) before its output
  --version     print cm's version
"""


def _looks_like_script(words: list[str]) -> bool:
    from cm.plugins import registry

    first = words[0]
    return len(words) == 1 and first not in registry().nouns and (first.endswith(".cm") or Path(first).is_file())


def run_file(ctx: Context, path: str, opts: Namespace) -> int:
    try:
        lines = read_script(path)
    except CmError as exc:
        report(ctx, exc)
        return exc.exit_code
    return run_script(ctx, lines, path, keep_going=opts.keep_going, debug=opts.debug, echo=opts.echo)


def run_stdin(ctx: Context, opts: Namespace) -> int:
    """Commands on stdin: a redirected file is checked whole first, as a script file is; a pipe
    runs line by line as the lines come (and stops at one that is not UTF-8)."""
    import stat

    lines: Iterable[str] = script_lines(sys.stdin.buffer, "<stdin>")
    if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        try:
            lines = list(lines)
        except CmError as exc:
            report(ctx, exc)
            return exc.exit_code
    return run_script(ctx, lines, "<stdin>", keep_going=opts.keep_going, debug=opts.debug, echo=opts.echo)


def run(argv: list[str]) -> int:
    try:
        opts, words = parse_global(argv)
    except CmError as exc:
        print(f"cm: {exc}", file=sys.stderr)
        return exc.exit_code
    if opts.version:
        from cm import __version__

        print(f"cm {__version__}")
        return 0
    ctx = Context()
    try:
        if opts.file:
            return run_file(ctx, opts.file, opts)
        if not words:
            if sys.stdin.isatty():
                from cm.shell import Shell  # cmd2 is imported only for the interactive shell

                try:
                    return Shell(ctx, debug=opts.debug).run()
                except CmError as exc:  # e.g. an unusable CM_HOME, before the prompt
                    print(f"cm: {exc}", file=sys.stderr)
                    return exc.exit_code
            return run_stdin(ctx, opts)
        if words[0] in ("-h", "--help") and len(words) == 1:
            print(USAGE, end="")
            return 0
        if _looks_like_script(words):
            return run_file(ctx, words[0], opts)
        return run_words(ctx, words, opts.debug)
    finally:
        ctx.close()


def main() -> None:
    if sys.stdout is None:  # `cm ... >&-`: nowhere to put results, so do nothing
        print("cm: standard output is closed; nothing was done (redirect it instead, e.g. >/dev/null)", file=sys.stderr)
        sys.exit(2)  # usage: nothing was done
    try:
        code = run(sys.argv[1:])
        sys.stdout.flush()
    except KeyboardInterrupt:
        print("cm: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:  # `cm vm list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
