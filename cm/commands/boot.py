"""`cm vm boot`: names, settings with their precedence, parallel create, wait, record.

Imported only when a VM is booted (the parser lives in cm.commands.vm).
"""

from __future__ import annotations

import dataclasses
import time
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cm import bulk, groups, inventory
from cm.commands.key import resolve_key
from cm.errors import CmError, ConfigError, UsageError
from cm.names import MAX_NAMES, check_name, expand, generated
from cm.output import check_columns
from cm.provider import VM, BootSpec, State

if TYPE_CHECKING:
    from cm.context import Context

BOOT_COLUMNS = ["name", "cloud", "state", "image", "flavor", "public_ips", "private_ips", "result"]
UNSETTLED = (State.PENDING, State.UNKNOWN, State.REBOOTING)


def _names(ctx: Context, args: Namespace, cloud: str) -> list[str]:
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


def _check_known(ctx: Context, cloud: str, kind: str, value: str, dryrun: bool = False) -> None:
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


def _template(ctx: Context, args: Namespace, cloud: str) -> BootSpec:
    """What every VM of this boot gets; each VM's spec adds its name."""
    user_data = _user_data(args.user_data) if args.user_data else ""  # the user's own files first: no cloud asked
    key_name, public_key = resolve_key(ctx, cloud, args.key)
    image = ctx.value("image", cloud, args.image)
    flavor = ctx.value("flavor", cloud, args.flavor)
    if not image:
        raise ConfigError(f"no image: give --image or set one with `cm default image=NAME --cloud {cloud}`")
    if not flavor:
        raise ConfigError(f"no flavor: give --flavor or set one with `cm default flavor=NAME --cloud {cloud}`")
    _check_known(ctx, cloud, "image", str(image), args.dryrun)
    _check_known(ctx, cloud, "flavor", str(flavor), args.dryrun)
    return BootSpec(name="", image=str(image), flavor=str(flavor), key_name=key_name, public_key=public_key,
                    user=ctx.user(cloud), user_data=user_data, secgroups=list(args.secgroup),
                    networks=list(args.network), public=args.public)


def _user_data(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read user-data {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot use user-data {path}: it is not UTF-8 text "
                         f"(byte {exc.start} is 0x{exc.object[exc.start]:02x})") from exc


def _row(cloud: str, vm: VM | dict[str, Any] | None, spec: BootSpec, result: str) -> dict[str, Any]:
    record = vm.to_dict() if isinstance(vm, VM) else vm or {"name": spec.name, "state": "", "image": spec.image,
                                                              "flavor": spec.flavor}
    return {**record, "cloud": cloud, "result": result}


def _wait_all(ctx: Context, cloud: str, created: dict[str, VM], timeout: float) -> dict[str, str]:
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
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            interval = min(interval * 1.5, 0.5)  # two lists a second at most: a VM that is up shows soon
    return failures


def _refuse_unsupported(ctx: Context, cloud: str) -> None:
    """A cloud that cannot boot VMs (a batch system) says so in one line before any default is looked up."""
    from cm.plugins import provider_class

    if "create_vm" not in provider_class(ctx.config.cloud(cloud)["kind"]).verbs():
        ctx.provider(cloud).require("create_vm")


class Boot:
    """One `vm boot`: what was created, what failed, and what an interrupt left open."""

    def __init__(self, ctx: Context, cloud: str, specs: dict[str, BootSpec], group: str) -> None:
        self.ctx, self.cloud, self.specs, self.group = ctx, cloud, specs, group
        self.created: dict[str, VM] = {}
        self.failures: dict[str, str] = {}
        self.unsure: dict[str, dict[str, Any]] = {}  # abandoned after the create was sent: placeholders
        self.not_started: set[str] = set()

    def record(self, outcome: bulk.Outcome) -> None:
        """Keep a created VM and its group membership (inside the run's batch: one write)."""
        vm: VM = outcome.value
        problem = vm.extra.pop("public_ip_error", "")
        if problem:
            self.failures[vm.name] = problem
        self.created[outcome.name] = vm
        self._store(outcome.name, vm.to_dict())

    def _store(self, name: str, record: dict[str, Any]) -> None:
        self.ctx.mirror.put("vm", self.cloud, record)
        if self.group:
            groups.add_members(self.ctx, self.group, self.cloud, [name])

    def settle(self, outcomes: bulk.Outcomes, gated: bool) -> None:
        """Sort the outcomes; after a Ctrl-C, find what the abandoned calls created."""
        for o in outcomes:
            if o.message == bulk.ABANDONED and (o.maybe_done or not gated):
                self.unsure[o.name] = self._placeholder(o.name)
            elif o.interrupted:
                self.not_started.add(o.name)
            elif not o.ok:
                self.failures[o.name] = o.message
        if not self.unsure:
            return
        with self.ctx.mirror.transaction():  # first: even a third Ctrl-C leaves them in the mirror
            for name, record in self.unsure.items():
                self._store(name, record)
        self.ctx.warn(f"cm: looking for the {len(self.unsure)} VM(s) abandoned in flight on {self.cloud}")
        try:
            found = {vm.name: vm for vm in self.ctx.provider(self.cloud).list_vms() if vm.name in self.unsure}
        except CmError as exc:
            self.ctx.warn(f"cm: could not look: {exc}")
            return
        with self.ctx.mirror.transaction():
            for name, vm in found.items():
                self.created[name] = vm
                del self.unsure[name]
                self._store(name, vm.to_dict())

    def _placeholder(self, name: str) -> dict[str, Any]:
        spec = self.specs[name]
        return {"name": name, "id": "", "state": str(State.UNKNOWN), "image": spec.image, "flavor": spec.flavor,
                "public_ips": [], "private_ips": [],
                "extra": {"note": "the create was sent when the boot was interrupted; "
                                  f"see `cm vm status {name}` or `cm refresh vm`"}}

    def result(self, name: str, waited: bool) -> str:
        if name in self.failures:
            return f"failed: {self.failures[name]}"
        if name in self.unsure:
            return "unknown: interrupted while the cloud was creating it"
        if name in self.not_started:
            return bulk.NOT_STARTED
        if self.created[name].state in UNSETTLED:
            return "created; interrupted before it was running" if not waited else "created"
        return "booted"

    def report(self, args: Namespace, interrupted: bool, waited: bool) -> int:
        names = list(self.specs)
        rows = [_row(self.cloud, self.created.get(n) or self.unsure.get(n), self.specs[n], self.result(n, waited))
                for n in names]
        self.ctx.emit(BOOT_COLUMNS, rows, args)
        booted = sum(self.result(n, waited) == "booted" for n in names)
        if not interrupted:
            if self.failures:
                self.ctx.warn(f"{len(self.failures)} of {len(names)} failed")
                return 1
            self.ctx.warn(f"booted {booted} of {len(names)}")
            return 0
        failed_created = len(set(self.failures) & set(self.created))
        counts = [(len(self.created) - booted - failed_created, "created, not yet running"),
                  (len(self.failures) - failed_created, "failed"), (len(self.not_started), "not started"),
                  (len(self.unsure), "unknown (abandoned in flight; kept in the mirror as unknown)")]
        self.ctx.warn(f"interrupted: booted {booted} of {len(names)}" +
                      "".join(f", {n} {what}" for n, what in counts if n))
        return bulk.EXIT_INTERRUPTED


def boot_vms(ctx: Context, args: Namespace) -> int:
    check_columns(BOOT_COLUMNS, args)
    cloud = ctx.cloud_name(args)
    _refuse_unsupported(ctx, cloud)
    template = _template(ctx, args, cloud)  # first: a bad image or flavor must not use up names
    names = _names(ctx, args, cloud)
    specs = {name: dataclasses.replace(template, name=name) for name in names}
    group = str(ctx.value("group", cloud, args.group) or "")
    timeout = ctx.timeout(cloud, args.timeout)  # a bad 'timeout' default stops the boot before any VM exists
    provider = ctx.provider(cloud)
    provider.require("create_vm")  # a dry run checks what the real boot checks
    if args.public:
        provider.require("assign_public_ip")
    if args.dryrun:
        rows = [_row(cloud, None, spec, "would boot") for spec in specs.values()]
        ctx.emit(BOOT_COLUMNS, rows, args)
        return 0
    boot = Boot(ctx, cloud, specs, group)
    outcomes = bulk.run_each(names, lambda n: provider.create_vm(specs[n]), "boot", boot.record,
                             batch=ctx.mirror.transaction)
    boot.settle(outcomes, gated=getattr(provider, "gates_calls", False))
    if args.public and boot.created:
        inventory.refresh_quietly(ctx, cloud, "ip")  # `ip list` shows the new addresses at once
    interrupted, waited = outcomes.interrupted, False
    if boot.created and not args.no_wait and not interrupted:
        try:
            with bulk.waiting(f"waiting for {len(boot.created)} VM(s) on {cloud} to run"):
                boot.failures.update(_wait_all(ctx, cloud, boot.created, timeout))
            waited = True
        except KeyboardInterrupt:
            interrupted = True
    return boot.report(args, interrupted, waited or bool(args.no_wait))
