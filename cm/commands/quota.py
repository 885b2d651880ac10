"""`cm quota`: how much of each resource the project may use, and how much it uses."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cm.commands import add_cloud_option
from cm.errors import CmError, Unsupported
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Show the project's quotas (limit and use of instances, cores, ram, IPs ...), asked live."
EXAMPLE = "cm quota --cloud chameleon"
COLUMNS = ["cloud", "service", "resource", "limit", "used"]


def live_rows(ctx: Context, args: Namespace,
              fetch: Callable[[Any], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows fetched from each cloud, with a cloud column, and the errors of the clouds that failed.

    One cloud: its error is the command's.  Several (``--cloud all``): a cloud
    that cannot answer this (Unsupported) is skipped, and one that fails does not
    keep the others from answering (see :func:`report_failures`).
    """
    clouds = ctx.cloud_names(args)
    if len(clouds) == 1:
        return [{"cloud": clouds[0], **row} for row in fetch(ctx.provider(clouds[0]))], []
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for cloud in clouds:
        try:
            rows += [{"cloud": cloud, **row} for row in fetch(ctx.provider(cloud))]
        except Unsupported:
            continue
        except Exception as exc:  # noqa: BLE001 - one cloud's failure must not hide the others' answers
            message = str(exc) if isinstance(exc, CmError) else f"{type(exc).__name__}: {exc}"
            failed.append(message if f"'{cloud}'" in message else f"cloud '{cloud}': {message}")
    return rows, failed


def report_failures(ctx: Context, failed: list[str]) -> int:
    """One stderr line per cloud that failed; the exit code (1 if any did)."""
    for message in failed:
        ctx.warn(f"cm: {message}")
    return 1 if failed else 0


def emit_live(ctx: Context, args: Namespace, columns: list[str], fetch: Callable[[Any], list[dict[str, Any]]]) -> int:
    """Ask each cloud live, show the rows, report the clouds that failed; the exit code."""
    rows, failed = live_rows(ctx, args, fetch)
    ctx.emit(columns, rows, args)
    return report_failures(ctx, failed)


def show_quota(ctx: Context, args: Namespace) -> int:
    return emit_live(ctx, args, COLUMNS, lambda p: p.quotas())


def build(parser: ArgumentParser) -> None:
    add_cloud_option(parser, allow_all=True)
    add_format_options(parser)
    parser.set_defaults(run=show_quota)
