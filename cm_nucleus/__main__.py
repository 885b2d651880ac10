"""`python -m cm_nucleus serve --config FILE [--port N]` and `python -m cm_nucleus hash` (argon2 a password)."""

from __future__ import annotations

import argparse
import getpass
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cm_nucleus", description=__doc__)
    subs = parser.add_subparsers(dest="what", required=True)
    run = subs.add_parser("serve", help="run the service")
    run.add_argument("--config", required=True)
    run.add_argument("--port", type=int)
    run.add_argument("--log-level", default="info")
    subs.add_parser("hash", help="read a password from the terminal (or stdin) and print its argon2 hash")
    args = parser.parse_args(argv)
    if args.what == "hash":
        from cm_nucleus.auth import hash_password

        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
        print(hash_password(password))
        return 0
    from cm_nucleus.app import serve
    from cm_nucleus.settings import SettingsError
    from cm_nucleus.store import SchemaError

    try:
        serve(args.config, args.port, args.log_level)
    except (SettingsError, SchemaError) as exc:
        print(f"cm_nucleus: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
