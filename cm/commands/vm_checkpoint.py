"""`cm vm save|restore|migrate`: checkpoint VMs to disk, continue them, move them between hosts."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from typing import Any

from cm.commands import add_cloud_option, add_dryrun_option, verb
from cm.output import add_format_options, check_columns

RESULT_COLUMNS = ["name", "cloud", "state", "result"]
# verb -> (provider method, the states the VM settles in, past tense for messages)
CHECKPOINT: dict[str, tuple[str, set[str], str]] = {
    "save": ("save_vm", {"stopped"}, "saved"),
    "restore": ("restore_vm", {"running"}, "restored"),
}


def checkpoint(verb_name: str) -> Callable[[Any, Namespace], int]:
    """The handler of `vm save` or `vm restore`: every target in parallel, a result per VM."""
    method, settled, done = CHECKPOINT[verb_name]

    def handler(ctx: Any, args: Namespace) -> int:
        from cm import bulk, inventory
        from cm.commands.vm import _targets

        check_columns(RESULT_COLUMNS, args)
        cloud = ctx.cloud_name(args)
        names = _targets(ctx, args, cloud)
        if args.dryrun:
            for name in names:
                ctx.say(f"would {verb_name} {name} on {cloud}")
            return 0
        provider = ctx.provider(cloud)
        provider.require(method)
        timeout = ctx.timeout(cloud, args.timeout)

        def act(name: str) -> Any:
            getattr(provider, method)(name)
            return None if args.no_wait else inventory.wait_for(provider, name, settled, timeout, interval=0.1)

        def record(outcome: bulk.Outcome) -> None:
            if outcome.value is not None:
                inventory.store_vm(ctx, cloud, outcome.value)

        return bulk.report(ctx, cloud, bulk.run_each(names, act, verb_name, record), done, args, state=True)

    handler.__doc__ = f"{verb_name.capitalize()} VMs."
    return handler


def migrate(ctx: Any, args: Namespace) -> int:
    """Move VMs to another host of their cloud: live while they run, offline when stopped."""
    from cm import bulk, inventory
    from cm.commands.vm import _targets

    check_columns(RESULT_COLUMNS, args)
    cloud = ctx.cloud_name(args)
    names = _targets(ctx, args, cloud)
    if args.dryrun:
        for name in names:
            ctx.say(f"would migrate {name} to host {args.to} on {cloud}")
        return 0
    provider = ctx.provider(cloud)
    provider.require("migrate_vm")

    def record(outcome: bulk.Outcome) -> None:
        inventory.store_vm(ctx, cloud, outcome.value)

    outcomes = bulk.run_each(names, lambda name: provider.migrate_vm(name, args.to), "migrate", record)
    return bulk.report(ctx, cloud, outcomes, f"migrated to {args.to}", args, state=True)


def add_checkpoint_verbs(subs: Any) -> None:
    """`vm save`, `vm restore` and `vm migrate` on the `vm` noun's subcommand table."""
    from cm.commands.vm import add_targets

    for name, (_, _, done) in CHECKPOINT.items():
        what = ("checkpoint VMs' memory to disk and stop them" if name == "save"
                else "continue saved VMs exactly where they stopped")
        sub = verb(subs, name, checkpoint(name), what, example=f"cm vm {name} node[01-04]")
        _common(sub, add_targets)
        sub.add_argument("--no-wait", action="store_true", help=f"return without waiting until {done}")
        sub.add_argument("--timeout", type=float, help="seconds to wait (default: the 'timeout' default)")
    sub = verb(subs, "migrate", migrate, "move VMs to another host of their cloud (live while they run)",
               example="cm vm migrate node01 --to h2")
    _common(sub, add_targets)
    sub.add_argument("--to", required=True, metavar="HOST", help="a host of the cloud (its hosts: in cm.yaml)")


def _common(sub: ArgumentParser, add_targets: Callable[[ArgumentParser], None]) -> None:
    add_targets(sub)
    add_cloud_option(sub)
    add_dryrun_option(sub)
    add_format_options(sub)
