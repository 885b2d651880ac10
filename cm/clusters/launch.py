"""The launch engine: boot a cluster's nodes in parallel, watch them configure themselves
(cloud-init, no ssh loop) through their consoles, replace failures, and keep the record.

Where the cloud can fix addresses ahead of boot (``Provider.reserve_addresses``), every node
gets its address first and all roles boot in one wave; a failed node that others were given
the address of (the head) boots again under its name on its reservation
(``Provider.renew_addresses``).  Otherwise a role that ``needs`` another boots once that
one has addresses (a wave per dependency).

Every step is written to the mirror as it happens, so Ctrl-C or ``kill -9`` leaves a
record that ``cm cluster delete`` cleans up and that a second launch resumes.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cm import bulk
from cm.clusters import markers, model, plan, store, teardown
from cm.errors import CmError, NotFound, Unsupported
from cm.provider import Reservation

if TYPE_CHECKING:
    from cm.provider import BootSpec, Provider
    from cm.recipes import Recipe

BOOT_TIMEOUT, CONFIGURE_TIMEOUT = 600.0, 1800.0
CONSOLE_READERS = 16


class Launch:
    """One run of the engine over a cluster record (a new launch, a resume or a resize)."""

    def __init__(self, ctx: Any, cloud: str, recipe: Recipe, cluster: dict[str, Any], template: BootSpec,
                 timeout: float | None = None) -> None:
        self.ctx, self.cloud, self.recipe, self.cluster, self.template = ctx, cloud, recipe, cluster, template
        self.provider: Provider = ctx.provider(cloud)
        self.secrets = store.secrets(ctx, cloud, cluster["name"], list(recipe.data.get("secrets", [])))
        timeouts = recipe.data.get("timeouts", {})
        self.boot_timeout = float(timeouts.get("boot", BOOT_TIMEOUT))
        self.configure_timeout = float(timeouts.get("configure", CONFIGURE_TIMEOUT))
        self.timeout = timeout  # --timeout: every phase's limit, over the recipe's
        self.replace = int(recipe.data.get("replace", 1))
        self.vms: dict[str, dict[str, Any]] = {}  # VM records to write with the next save
        self.console_ok = True
        self.reserving = "reserve_addresses" in type(self.provider).verbs()

    # -- the record ---------------------------------------------------------------------------
    def save(self) -> None:
        store.save(self.ctx, self.cloud, self.cluster, list(self.vms.values()))
        self.vms.clear()

    def _keep_vm(self, node: dict[str, Any], vm: Any) -> None:
        self.vms[node["name"]] = store.tagged(vm, self.cluster["name"], node["role"])
        if vm.private_ips and not node.get("reserved"):  # a reserved address is the one the others were given
            node["address"] = vm.private_ips[0]
        if vm.public_ips:
            node["public"] = vm.public_ips[0]
            if vm.public_ips[0] not in self.cluster["made"]["ips"]:
                self.cluster["made"]["ips"].append(vm.public_ips[0])

    # -- addresses ahead of boot --------------------------------------------------------------
    def _reserve(self) -> None:
        """Reserve an address for every planned node without one; a cloud that cannot leaves the waves."""
        nodes = [n for n in model.live_nodes(self.cluster) if n["state"] == model.NODE_PLANNED and not n["address"]]
        if not self.reserving or not nodes:
            return
        network = self.template.networks[0] if self.template.networks else ""
        try:
            held = self.provider.reserve_addresses([n["name"] for n in nodes], network)
        except CmError as exc:
            self.reserving = False
            teardown.release_addresses(self.provider, [n["name"] for n in nodes])  # any held before the failure
            if not isinstance(exc, Unsupported):
                self.ctx.warn(f"cm: could not reserve addresses ({exc}); booting role by role instead")
            return
        for node in nodes:
            if node["name"] in held:
                node["address"] = held[node["name"]].address
                node["reserved"] = held[node["name"]].to_dict()
        self.save()

    def _release(self, node: dict[str, Any]) -> None:
        if node.get("reserved"):
            teardown.release_addresses(self.provider, [node["name"]])  # on failure cm cluster delete tries again

    # -- booting ------------------------------------------------------------------------------
    def _bootable(self) -> list[dict[str, Any]]:
        """Planned nodes whose needed roles all have addresses: booted, or reserved ahead (every node, simulated)."""
        def served(role: str) -> bool:
            return all(n["address"] and (n["state"] != model.NODE_PLANNED or n.get("reserved"))
                       for n in model.live_nodes(self.cluster, role))

        return [n for n in self.cluster["nodes"] if n["state"] == model.NODE_PLANNED
                and (self.cluster["simulated"] or all(served(r) for r in self.recipe.roles[n["role"]].get("needs", [])))]

    def boot(self, nodes: list[dict[str, Any]]) -> None:
        """Create ``nodes`` in parallel; each is recorded as requested before and created after."""
        specs = {}
        for node in nodes:
            spec_role = self.recipe.roles[node["role"]]
            text = plan.user_data(self.cluster, self.recipe, self.secrets, node)
            specs[node["name"]] = plan.boot_spec(self.template, self.cluster, node, text,
                                                 plan.wants_public(self.provider, spec_role))
            if node.get("reserved"):
                specs[node["name"]].reservation = Reservation(**node["reserved"])
            model.mark(node, "requested")
        self.save()  # before the first create: a kill -9 now still leaves names to clean up
        by_name = {n["name"]: n for n in nodes}

        def created(outcome: bulk.Outcome) -> None:
            node = by_name[outcome.name]
            model.mark(node, "created")
            self._keep_vm(node, outcome.value)

        try:
            outcomes = bulk.run_each(list(specs), lambda n: self.provider.create_vm(specs[n]), "boot", created)
        finally:
            self.save()
        for outcome in outcomes:
            node = by_name[outcome.name]
            if outcome.message == bulk.NOT_STARTED:
                node["state"], node["times"] = model.NODE_PLANNED, {}  # never sent: a resume boots it
            elif outcome.interrupted:
                pass  # abandoned in flight: it may exist; delete and resume look for it by name
            elif not outcome.ok:
                self._failed(node, f"could not be created: {outcome.message}")
        if outcomes.interrupted:
            self.save()
            raise KeyboardInterrupt

    # -- failures -----------------------------------------------------------------------------
    def _failed(self, node: dict[str, Any], why: str) -> None:
        """Mark the node failed, delete its VM, and plan a replacement while attempts remain."""
        model.fail(node, why)
        gone = not node["times"].get("created")
        if not gone:
            try:
                self.provider.delete_vm(node["name"])
                node["deleted"] = gone = True
            except NotFound:
                gone = True
            except CmError:
                pass  # cm cluster delete tries again
        if node["attempt"] < self.replace and self._depended_on(node):
            if gone and self._replace_on_reservation(node, why):
                return
        self._release(node)
        if node["attempt"] < self.replace and not self._depended_on(node):
            base = node["replaces"] or node["name"]
            new = model.new_node(f"{base}-r{node['attempt'] + 1}", node["role"], node["attempt"] + 1, base)
            node["replaced_by"] = new["name"]
            nodes = self.cluster["nodes"]
            nodes.insert(nodes.index(node) + 1, new)  # beside the one it replaces: the head stays first
            self.ctx.warn(f"cm: {node['name']} failed ({why}); replacing it with {new['name']}")

    def _replace_on_reservation(self, node: dict[str, Any], why: str) -> bool:
        """Boot a node that others were given the address of again, under its name on its reservation (MAC and IP,
        or port): the nodes configured with its name and address stay right.  False where that cannot be."""
        if not node.get("reserved") or "renew_addresses" not in type(self.provider).verbs():
            return False
        try:
            self.provider.renew_addresses([Reservation(**node["reserved"])])
        except CmError as exc:
            self.ctx.warn(f"cm: {node['name']} failed ({why}) and its address cannot be had back ({exc})")
            return False
        new = model.new_node(node["name"], node["role"], node["attempt"] + 1, node["replaces"] or node["name"])
        new["address"], new["reserved"] = node["address"], node["reserved"]
        node["replaced_by"] = new["name"]
        nodes = self.cluster["nodes"]
        nodes.insert(nodes.index(node) + 1, new)
        self.ctx.warn(f"cm: {node['name']} failed ({why}); booting it again on its reserved address {node['address']}")
        return True

    def _depended_on(self, node: dict[str, Any]) -> bool:
        """True once nodes that were given this node's address have booted: a replacement would strand them."""
        needers = [r for r, spec in self.recipe.roles.items() if node["role"] in spec.get("needs", [])]
        return any(n["state"] != model.NODE_PLANNED for r in needers for n in model.live_nodes(self.cluster, r))

    # -- watching -----------------------------------------------------------------------------
    def _watch_cloud(self) -> None:
        """One list of the cloud: nodes that run, have addresses, or went to ERROR."""
        current = {vm.name: vm for vm in self.provider.list_vms()}
        now = time.time()
        for node in model.live_nodes(self.cluster):
            if node["state"] in (model.NODE_PLANNED, "requested"):
                continue
            vm = current.get(node["name"])
            if vm is None:
                self._failed(node, "disappeared from the cloud")
            elif str(vm.state) == "error":
                self._failed(node, f"went to ERROR{': ' + vm.fault if vm.fault else ''}")
            else:
                self._keep_vm(node, vm)
                if str(vm.state) == "running":
                    model.mark(node, "running")
                elif now - node["times"]["requested"] > (self.timeout or self.boot_timeout):
                    self._failed(node, f"still {vm.state} after {self.timeout or self.boot_timeout:g} s")

    def _read_console(self, node: dict[str, Any]) -> tuple[str, str]:
        marker = (self.recipe.roles[node["role"]].get("ready") or {}).get("marker", markers.READY)
        return markers.read(self.provider.console_log(node["name"]), marker)

    def _watch_consoles(self, pool: ThreadPoolExecutor) -> None:
        """Read the console of every running node not yet ready, in parallel."""
        nodes = [n for n in model.live_nodes(self.cluster) if n["state"] in ("running", "configured")]
        if not nodes:
            return
        futures = {n["name"]: pool.submit(self._read_console, n) for n in nodes}
        now = time.time()
        for node in nodes:
            try:
                seen, why = futures[node["name"]].result()
            except Unsupported:
                self.console_ok = False
                return
            except CmError:
                seen, why = "", ""  # a console that cannot be read this round: try the next
            if seen == "failed":
                self._failed(node, f"failed to configure: {why}")
                continue
            if seen in ("configured", "ready"):
                model.mark(node, "configured")
            if seen == "ready":
                model.mark(node, "ready")
            timeout = self.timeout or float((self.recipe.roles[node["role"]].get("ready") or {}).get(
                "timeout", self.configure_timeout))
            if node["state"] != "ready" and now - node["times"]["running"] > timeout:
                self._failed(node, f"not ready {timeout:g} s after it started running")

    def run(self, wait: bool = True) -> str:
        """Boot what is planned and, unless told not to or nothing can boot, wait for readiness."""
        self.cluster["pid"] = os.getpid()
        self._reserve()
        if self.cluster["simulated"]:
            self.boot(self._bootable())
            self._watch_cloud()
            self.cluster["pid"] = 0
            self.save()
            return self.cluster["state"]
        interval = 0.2
        with ThreadPoolExecutor(CONSOLE_READERS) as pool, bulk.waiting(f"launching {self.cluster['name']}"):
            try:
                while True:
                    self._reserve()  # a replacement planned last round gets its address now
                    bootable = self._bootable()
                    if bootable:
                        self.boot(bootable)
                    self._watch_cloud()
                    if wait and self.console_ok:
                        self._watch_consoles(pool)
                    state = model.settle_state(self.cluster)
                    self.save()
                    if state != "launching" or not wait or not self.console_ok:
                        break
                    if not self._bootable():
                        time.sleep(interval)  # Ctrl-C lands here as KeyboardInterrupt: the record is saved below
                    interval = min(interval * 1.4, 1.0)
            finally:
                self.cluster["pid"] = 0
                self.save()
        if self.cluster["state"] in ("ready", "degraded"):
            self.outputs()
        return self.cluster["state"]

    def outputs(self) -> None:
        set_outputs(self.recipe, self.cluster)
        self.save()


def set_outputs(recipe: Recipe, cluster: dict[str, Any]) -> None:
    """What the user needs: the login address (public where there is one) and the recipe's outputs."""
    head = model.head(cluster)
    ctx = plan.context(cluster, recipe, {}, None)
    if head:
        ctx["head"]["address"] = head.get("public") or head["address"]
    access = {k: v for k, v in (cluster.get("access") or {}).items() if v}  # the user and key nodes let in
    cluster["outputs"] = {"login": ctx["head"].get("address", ""), **access, **recipe.render_outputs(ctx)}


def interrupted_elsewhere(cluster: dict[str, Any]) -> bool:
    """True if another live cm process is launching this cluster right now."""
    pid = int(cluster.get("pid") or 0)
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile(provider: Any, cluster: dict[str, Any]) -> None:
    """Before resuming: nodes requested but never created go back to planned; those the cloud has are created."""
    names = {vm.name for vm in provider.list_vms()}
    for node in model.live_nodes(cluster):
        if node["state"] == "requested" and node["name"] not in names:
            node["state"], node["times"] = model.NODE_PLANNED, {}
        elif node["state"] == "requested":  # created, but cm was stopped before it could note so
            model.mark(node, "created")


def ensure_secgroup(ctx: Any, cloud: str, recipe: Recipe, cluster: dict[str, Any]) -> None:
    """A security group of the cluster's own (its ports open, all traffic among its nodes), where the cloud has them."""
    from cm.provider import SecRule

    provider = ctx.provider(cloud)
    if cluster["made"]["secgroups"] or "add_secgroup" not in type(provider).verbs():
        return
    name = f"{cluster['name']}-cluster"
    cluster["made"]["secgroups"] = [name]
    store.save(ctx, cloud, cluster)  # recorded before it exists: an interrupt still leaves it to delete
    provider.add_secgroup(name, f"cm cluster {cluster['name']}")
    provider.add_secgroup_rule(name, SecRule(protocol="", remote_group=name))
    for port in recipe.data.get("ports", [22]):
        provider.add_secgroup_rule(name, SecRule(protocol="tcp", port_min=port, port_max=port, cidr="0.0.0.0/0"))
