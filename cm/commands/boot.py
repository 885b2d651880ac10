"""`cm vm boot`: names, settings with their precedence, parallel create, wait, record.

Imported only when a VM is booted (the parser lives in cm.commands.vm).
"""

from __future__ import annotations

import dataclasses
import time
from argparse import Namespace
from pathlib import Path
from typing import Any

from cm import bulk, inventory
from cm.commands.key import resolve_key
from cm.errors import ConfigError, UsageError
from cm.names import MAX_NAMES, check_name, expand, generated
from cm.output import check_columns
from cm.provider import VM, BootSpec, State

BOOT_COLUMNS = ["name", "cloud", "state", "image", "flavor", "public_ips", "private_ips", "result"]
UNSETTLED = (State.PENDING, State.UNKNOWN, State.REBOOTING)


def _names(ctx: Any, args: Namespace, cloud: str) -> list[str]:
    if args.name is not None:
        names = [check_name(n) for n in expand([args.name])]
    else:
        count = 1 if args.n is None else args.n
        if not 1 <= count <= MAX_NAMES:
            raise UsageError(f"--n must be between 1 and {MAX_NAMES}")
        user = check_name(ctx.user(cloud), "user (the prefix of generated names)")
        if args.dryrun:  # a dry run does not use up counter numbers
            start = ctx.mirror.counter(f"vm:{user}")
            return generated(user, range(start + 1, start + 1 + count))
        names = generated(user, ctx.mirror.next_counter(f"vm:{user}", count))
    taken = [n for n in names if ctx.mirror.get("vm", cloud, n)]
    if taken:
        raise UsageError(f"a VM named {', '.join(repr(n) for n in taken)} already exists on cloud '{cloud}'")
    return names


def _check_known(ctx: Any, cloud: str, kind: str, value: str, dryrun: bool = False) -> None:
    """Refuse an image or flavor the mirror knows the cloud lacks, before any VM is created.

    When the mirror has no list, the real boot leaves it to the provider, so a dry run asks the
    cloud's list itself; a unique beginning of a name counts where the provider takes one.
    """
    known = [r for r in ctx.mirror.records(kind, cloud) if r.get("name")]
    listed = bool(known)  # an empty mirror list may just mean "never refreshed"
    if not known and dryrun:
        known = [inventory.as_record(i) for i in getattr(ctx.provider(cloud), inventory.FETCHERS[kind])()]
        listed = True
    if not listed or any(value in (r["name"], r.get("id")) for r in known):
        return
    if type(ctx.provider(cloud)).boot_matches_prefix and sum(r["name"].startswith(value) for r in known) == 1:
        return
    names = ", ".join(sorted(r["name"] for r in known)[:8]) or "none yet"
    hint = f"add it with `cm image add {value} PATH`" if kind == "image" else f"see `cm {kind} list --refresh`"
    raise UsageError(f"unknown {kind} '{value}' on cloud '{cloud}' (known: {names}); {hint}")


def _template(ctx: Any, args: Namespace, cloud: str) -> BootSpec:
    """What every VM of this boot gets; each VM's spec adds its name."""
    image = ctx.value("image", cloud, args.image)
    flavor = ctx.value("flavor", cloud, args.flavor)
    if not image:
        raise ConfigError(f"no image: give --image or set one with `cm default image=NAME --cloud {cloud}`")
    if not flavor:
        raise ConfigError(f"no flavor: give --flavor or set one with `cm default flavor=NAME --cloud {cloud}`")
    _check_known(ctx, cloud, "image", str(image), args.dryrun)
    _check_known(ctx, cloud, "flavor", str(flavor), args.dryrun)
    key_name, public_key = resolve_key(ctx, cloud, args.key)
    user_data = ""
    if args.user_data:
        try:
            user_data = Path(args.user_data).read_text()
        except OSError as exc:
            raise UsageError(f"cannot read user-data {args.user_data}: {exc.strerror}") from exc
    return BootSpec(name="", image=str(image), flavor=str(flavor), key_name=key_name, public_key=public_key,
                    user=ctx.user(cloud), user_data=user_data, secgroups=list(args.secgroup),
                    networks=list(args.network), public=args.public)


def _row(cloud: str, vm: VM | None, spec: BootSpec, result: str) -> dict[str, Any]:
    record = vm.to_dict() if vm else {"name": spec.name, "state": "", "image": spec.image, "flavor": spec.flavor}
    return {**record, "cloud": cloud, "result": result}


def _wait_all(ctx: Any, cloud: str, created: dict[str, VM], timeout: float) -> dict[str, str]:
    """Poll the cloud (one list per round) until every VM settles; return failures by name."""
    provider = ctx.provider(cloud)
    deadline = time.monotonic() + timeout
    pending = set(created)
    interval = 0.25
    failures: dict[str, str] = {}
    while pending:
        current = {vm.name: vm for vm in provider.list_vms()}
        with ctx.mirror.transaction():  # one write per polling round, however many VMs settled
            for name in [n for n in pending if n in current and current[n].state not in UNSETTLED]:
                vm = created[name] = current[name]
                pending.discard(name)
                inventory.store_vm(ctx, cloud, vm)
                if vm.state == State.ERROR:
                    failures[name] = f"went to ERROR: {vm.fault}" if vm.fault else "went to ERROR"
        if pending and time.monotonic() >= deadline:
            for name in pending:
                failures[name] = f"still {created[name].state} after {timeout:g} s"
            break
        if pending:
            time.sleep(interval)
            interval = min(interval * 1.5, 1.0)  # one list a second at most: a VM that is up shows soon
    return failures


def boot_vms(ctx: Any, args: Namespace) -> int:
    check_columns(BOOT_COLUMNS, args)
    cloud = ctx.cloud_name(args)
    template = _template(ctx, args, cloud)  # first: a bad image or flavor must not use up names
    names = _names(ctx, args, cloud)
    specs = {name: dataclasses.replace(template, name=name) for name in names}
    group = str(ctx.value("group", cloud, args.group) or "")
    provider = ctx.provider(cloud)
    provider.require("create_vm")  # a dry run checks what the real boot checks
    if args.public:
        provider.require("assign_public_ip")
    if args.dryrun:
        rows = [_row(cloud, None, spec, "would boot") for spec in specs.values()]
        ctx.emit(BOOT_COLUMNS, rows, args)
        return 0
    created: dict[str, VM] = {}

    def record(outcome: bulk.Outcome) -> None:
        created[outcome.name] = outcome.value
        with ctx.mirror.transaction():  # the VM and its group membership: one write
            inventory.store_vm(ctx, cloud, outcome.value)
            if group:
                from cm.commands.group import add_members

                add_members(ctx, group, cloud, [outcome.name])

    outcomes = bulk.run_each(names, lambda n: provider.create_vm(specs[n]), "boot", record)
    failures = {o.name: o.message for o in outcomes if not o.ok}
    if created and not args.no_wait:
        with bulk.waiting(f"waiting for {len(created)} VM(s) on {cloud} to run"):
            failures.update(_wait_all(ctx, cloud, created, ctx.timeout(cloud, args.timeout)))
    rows = [_row(cloud, created.get(n), specs[n], f"failed: {failures[n]}" if n in failures else "booted")
            for n in names]
    ctx.emit(BOOT_COLUMNS, rows, args)
    if failures:
        ctx.warn(f"{len(failures)} of {len(names)} failed")
        return 1
    ctx.warn(f"booted {len(names)} of {len(names)}")
    return 0
