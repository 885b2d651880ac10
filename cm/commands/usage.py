"""`cm usage`: what the project's VMs used over a period (hours, vcpus, ram, disk), asked live."""

from __future__ import annotations

import datetime as dt
from argparse import ArgumentParser, ArgumentTypeError, Namespace
from typing import TYPE_CHECKING

from cm.commands import add_cloud_option
from cm.commands.quota import live_rows, report_failures
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "Show per-VM usage over a period (default: the last 4 weeks) and the total VM-hours."
EXAMPLE = "cm usage --start 2024-01-01 --end 2024-02-01"
COLUMNS = ["cloud", "name", "state", "flavor", "hours", "vcpus", "ram", "disk", "started", "ended"]


def show_usage(ctx: Context, args: Namespace) -> int:
    today = dt.date.today()
    start = args.start or (today - dt.timedelta(days=28)).isoformat()
    end = args.end or (today + dt.timedelta(days=1)).isoformat()
    rows, failed = live_rows(ctx, args, lambda p: p.usage(start, end))
    ctx.emit(COLUMNS, rows, args)
    hours = sum(float(r.get("hours") or 0) for r in rows)
    vcpu_hours = sum(float(r.get("hours") or 0) * int(r.get("vcpus") or 0) for r in rows)
    ctx.warn(f"{len(rows)} VMs from {start} to {end}: {hours:.2f} VM-hours, {vcpu_hours:.2f} vCPU-hours")
    return report_failures(ctx, failed)


def _day(text: str) -> str:
    """A YYYY-MM-DD date, checked here so a typo is a usage error, not a cloud's."""
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError as exc:
        raise ArgumentTypeError(f"not a date (YYYY-MM-DD): '{text}'") from exc


def build(parser: ArgumentParser) -> None:
    parser.add_argument("--start", metavar="DATE", type=_day, help="first day (YYYY-MM-DD; default: 4 weeks ago)")
    parser.add_argument("--end", metavar="DATE", type=_day, help="day after the last (default: tomorrow)")
    add_cloud_option(parser, allow_all=True)
    add_format_options(parser)
    parser.set_defaults(run=show_usage)
