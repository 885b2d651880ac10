"""`cm vm save|restore|migrate`: checkpoint VMs to disk, continue them, move them between hosts."""

from __future__ import annotations

from argparse import ArgumentParser, Namespace
from collections.abc import Callable
from typing import Any

from cm.commands import add_cloud_option, add_dryrun_option, verb
from cm.output import add_format_options

# verb -> (provider method, the states the VM settles in, past tense for messages)
CHECKPOINT: dict[str, tuple[str, set[str], str]] = {
    "save": ("save_vm", {"stopped"}, "saved"),
    "restore": ("restore_vm", {"running"}, "restored"),
}


def _each_vm(ctx: Any, args: Namespace, label: str, method: str, done: str,
             act: Callable[[Any, str], Any]) -> int:
    """Run ``act(provider, name)`` on every target VM in parallel; a result row per VM, a summary."""
    from cm import bulk, inventory
    from cm.commands.vm import bulk_targets

    planned = bulk_targets(ctx, args, label, method)
    if planned is None:
        return 0
    cloud, names, provider = planned

    def record(outcome: bulk.Outcome) -> None:
        if outcome.value is not None:
            inventory.store_vm(ctx, cloud, outcome.value)

    outcomes = bulk.run_each(names, lambda name: act(provider, name), label.split()[0], record)
    return bulk.report(ctx, cloud, outcomes, done, args, state=True)


def checkpoint(verb_name: str) -> Callable[[Any, Namespace], int]:
    """The handler of `vm save` or `vm restore`: waits until each VM settles unless --no-wait."""
    method, settled, done = CHECKPOINT[verb_name]

    def handler(ctx: Any, args: Namespace) -> int:
        from cm import inventory

        timeout = ctx.timeout(ctx.cloud_name(args), args.timeout)

        def act(provider: Any, name: str) -> Any:
            getattr(provider, method)(name)
            return None if args.no_wait else inventory.wait_for(provider, name, settled, timeout, interval=0.1)

        return _each_vm(ctx, args, verb_name, method, done, act)

    handler.__doc__ = f"{verb_name.capitalize()} VMs."
    return handler


def migrate(ctx: Any, args: Namespace) -> int:
    """Move VMs to another host of their cloud: live while they run, offline when stopped."""
    return _each_vm(ctx, args, f"migrate to host {args.to}", "migrate_vm", f"migrated to {args.to}",
                    lambda provider, name: provider.migrate_vm(name, args.to))


def add_checkpoint_verbs(subs: Any) -> None:
    """`vm save`, `vm restore` and `vm migrate` on the `vm` noun's subcommand table."""
    from cm.commands.vm import add_targets, seconds

    for name, (_, _, done) in CHECKPOINT.items():
        what = ("checkpoint VMs' memory to disk and stop them" if name == "save"
                else "continue saved VMs exactly where they stopped")
        sub = verb(subs, name, checkpoint(name), what, example=f"cm vm {name} node[01-04]")
        _common(sub, add_targets)
        sub.add_argument("--no-wait", action="store_true", help=f"return without waiting until {done}")
        sub.add_argument("--timeout", type=seconds, help="seconds to wait (default: the 'timeout' default)")
    sub = verb(subs, "migrate", migrate, "move VMs to another host of their cloud (live while they run)",
               example="cm vm migrate node01 --to h2")
    _common(sub, add_targets)
    sub.add_argument("--to", required=True, metavar="HOST", help="a host of the cloud (its hosts: in cm.yaml)")


def _common(sub: ArgumentParser, add_targets: Callable[[ArgumentParser], None]) -> None:
    add_targets(sub)
    add_cloud_option(sub)
    add_dryrun_option(sub)
    add_format_options(sub)
