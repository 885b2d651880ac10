"""Where a burst node's machine comes from: a VM booted through the generic provider contract, or
a compute node of a Comet virtual cluster powered on in a computeset.

power.py asks a source to ``start`` a node with its user-data and to ``stop`` it; burst.py asks it
to ``prepare`` at enable (check the options, say how many vCPUs a node has, what to remember) and
for a node's ``row`` in `burst status`.  Each source keeps what it needs in the node's state entry.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cm.errors import CmError, NotFound, ProviderError, UsageError
from cm.provider import VM, BootSpec, Provider

POLL = 0.2  # seconds between two looks at a booting VM or a starting computeset
FINAL = ("completed", "failed", "cancelled")
ENDED = (*FINAL, "ending")  # a computeset in these states is over (or going): nothing left to end


@dataclass
class Prepared:
    """What enable learned from the source: vCPUs of a node, what to remember, extra slurm.conf settings."""

    vcpus: int
    fields: dict[str, Any]
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class Started:
    """A node's machine is up: what backs it, and its address ("" when Slurm learns it at registration)."""

    address: str
    hostname: str
    what: str  # for the log: "VM NAME", "compute node NAME"
    entry: dict[str, Any] = field(default_factory=dict)


def vm_name(cluster: str, node: str) -> str:
    """The cloud VM of ``node``: the cluster's name in front, so two clusters never share one."""
    return f"{cluster}-{node}".replace("_", "-")


def _named(given: list[str], noun: str, cloud: str, listing: Any) -> list[str]:
    """The names of the networks or security groups given (by name or id): each must be on the cloud
    (found now, not when a job waits); names, since a VM's addresses are listed by network name."""
    if not given:
        return []
    names = {}
    for item in listing():
        names.update({item.name: item.name, item.id: item.name})
    for name in given:
        if name not in names:
            raise NotFound(f"unknown {noun} '{name}' on cloud '{cloud}' (see `cm {noun} list --refresh`)")
    return [names[name] for name in given]


def node_address(vm: VM, networks: list[str]) -> str:
    """Where slurmctld reaches the node: its fixed address on the first network named (a VM may sit on
    several), else its first fixed address; a public one only when it has none (a floating IP is for
    reaching the VM from outside the cloud, where the controller usually is not)."""
    by_network = vm.extra.get("addresses")
    if networks and isinstance(by_network, dict):
        return next(iter(by_network.get(networks[0], [])), "")   # not yet there: wait for it, not for another
    return next(iter([*vm.private_ips, *vm.public_ips]), "")


class VmSource:
    """Nodes as VMs: create_vm with the user-data, poll for an address, delete_vm."""

    def __init__(self, provider: Provider, home: Path, st: dict[str, Any]) -> None:
        self.provider, self.home, self.st = provider, home, st

    @staticmethod
    def prepare(ctx: Any, args: Any) -> Prepared:
        provider = ctx.provider(args.cloud)
        for option in ("comet_cluster", "allocation", "walltime"):
            if getattr(args, option, None):
                raise UsageError(f"--{option.replace('_', '-')} is for a Comet virtual cluster; cloud "
                                 f"'{args.cloud}' is of kind {provider.kind}")
        args.image = args.image or ctx.value("image", args.cloud)
        args.flavor = args.flavor or ctx.value("flavor", args.cloud)
        provider.require("create_vm")
        flavors = {f.name: f for f in provider.list_flavors()}
        if args.flavor not in flavors:
            raise NotFound(f"unknown flavor '{args.flavor}' on cloud '{args.cloud}' (flavors: {', '.join(sorted(flavors))})")
        images = {i.name for i in provider.list_images()}
        if args.image not in images:
            raise NotFound(f"unknown image '{args.image}' on cloud '{args.cloud}' (images: {', '.join(sorted(images))})")
        networks = _named(args.network, "network", args.cloud, provider.list_networks)
        secgroups = _named(args.secgroup, "secgroup", args.cloud, provider.list_secgroups)
        return Prepared(flavors[args.flavor].vcpus, {"image": args.image, "flavor": args.flavor,
                                                     "networks": networks, "secgroups": secgroups})

    def describe(self, cluster: str, node: str) -> str:
        return f"booting VM {vm_name(cluster, node)} on cloud {self.st['cloud']}"

    def start(self, cluster: str, node: str, user_data: str, timeout: float) -> Started:
        vm = vm_name(cluster, node)
        self._delete(vm)  # a VM left from an earlier life of this node would hold the name
        self.provider.create_vm(BootSpec(name=vm, image=self.st["image"], flavor=self.st["flavor"],
                                         user_data=user_data, networks=self.st.get("networks", []),
                                         secgroups=self.st.get("secgroups", [])))
        return Started(self._address(vm, timeout), vm, f"VM {vm}", {"vm": vm})

    def stop(self, cluster: str, node: str, entry: dict[str, Any]) -> str:
        """Delete the node's VM; returns what was done."""
        vm = vm_name(cluster, node)
        self._delete(vm)
        return f"deleted VM {vm}"

    def row(self, entry: dict[str, Any]) -> dict[str, Any]:
        return {"vm": entry.get("vm", "") if entry.get("since") else "", "computeset": ""}

    def may_hold(self, entry: dict[str, Any]) -> bool:
        """Whether the node may still have a VM: up, or failed (its VM's deletion may have failed)."""
        return bool(entry.get("since") or (entry.get("state") == "failed" and entry.get("vm")))

    def ended(self, nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Nodes whose VM ended under them: none looked for (a VM lives until it is deleted)."""
        return {}

    def forget(self, cluster: str, nodes: list[str]) -> list[str]:
        """What a disabled cluster leaves on the cloud besides its VMs: nothing (user-data goes with the VM)."""
        return []

    def _address(self, vm: str, timeout: float) -> str:
        """Poll the cloud until the VM reports an address; an error state or the timeout fails."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.provider.get_vm(vm)
            if str(found.state) == "error":
                raise ProviderError(f"VM {vm} went to ERROR" + (f": {found.fault}" if found.fault else ""))
            if str(found.state) in ("stopped", "deleted"):
                raise ProviderError(f"VM {vm} stopped while booting")
            address = node_address(found, self.st.get("networks", []))
            if address:
                return address
            if time.monotonic() >= deadline:
                raise ProviderError(f"VM {vm} had no address after {timeout:g} s")
            time.sleep(POLL)

    def _delete(self, vm: str) -> None:
        try:
            self.provider.delete_vm(vm)
        except NotFound:
            pass


class ComputesetSource:
    """Nodes as compute nodes of a Comet virtual cluster: a free one gets a NoCloud seed ISO with the
    user-data attached (a private ISO: it holds the munge key), then a computeset of its own (one per
    node: Slurm suspends nodes one by one, and a computeset's nodes end together); stopping ends that
    computeset, detaches the seed and deletes it from the service.

    The service knows no guest addresses, so Slurm learns each from the node's registration
    (``SlurmctldParameters=cloud_reg_addrs``)."""

    def __init__(self, provider: Any, home: Path, st: dict[str, Any]) -> None:
        self.provider, self.home, self.st = provider, home, st
        self.vc = st["comet_cluster"]

    @staticmethod
    def prepare(ctx: Any, args: Any) -> Prepared:
        from cm.commands.comet import allocation_of
        from cm_plugins.comet.walltime import minutes

        provider = ctx.provider(args.cloud)
        for option in ("image", "flavor", "network", "secgroup"):
            if getattr(args, option, None):
                raise UsageError(f"--{option} is for VMs; the compute nodes of cloud '{args.cloud}' boot their "
                                 "virtual cluster's own disk")
        walltime = minutes(args.walltime or "2d")
        if not args.comet_cluster:
            names = sorted(c["name"] for c in provider.clusters())
            if len(names) != 1:
                raise UsageError(f"cloud '{args.cloud}' has {len(names)} virtual clusters"
                                 f"{' (' + ', '.join(names) + ')' if names else ''}: name one with --comet-cluster")
            args.comet_cluster = names[0]
        data = provider.cluster(args.comet_cluster)
        computes = data.get("computes") or []
        if len(computes) < args.max:
            raise UsageError(f"virtual cluster {args.comet_cluster} has {len(computes)} compute nodes; "
                             f"--max {args.max} needs as many")
        allocation = allocation_of(ctx, data, args.allocation)
        return Prepared(min(int(n.get("cpus") or 1) for n in computes),
                        {"comet_cluster": args.comet_cluster, "allocation": allocation, "walltime_mins": walltime,
                         "image": "", "flavor": ""},
                        {"SlurmctldParameters": "idle_on_node_suspend,cloud_reg_addrs"})

    def describe(self, cluster: str, node: str) -> str:
        return f"starting a computeset on virtual cluster {self.vc} of cloud {self.st['cloud']}"

    def start(self, cluster: str, node: str, user_data: str, timeout: float) -> Started:
        from cm.elastic import state, watch

        compute = self._claim(cluster, node)
        began = time.monotonic()
        iso = self._seed(cluster, node, compute, user_data)
        state.log(self.home, cluster, f"resume {node}: compute node {compute} of {self.vc}; seed {iso} "
                                      f"attached in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        try:
            cs = self.provider.start_computeset(self.vc, allocation=self.st["allocation"],
                                                walltime_mins=int(self.st["walltime_mins"]), computes=compute)
        except CmError as exc:
            lost = self._end_lost(cluster, node, compute)
            if lost:
                raise ProviderError(f"{exc}{lost}") from None
            raise
        with state.changing(self.home, cluster) as now:
            now["nodes"][node].update(computeset=cs["id"])
        cs = self._running(cs, timeout)
        state.log(self.home, cluster, f"resume {node}: computeset {cs['id']} (job {cs.get('job_id')}) running "
                                      f"{time.monotonic() - began:.1f} s after it was asked for")
        try:
            watch.start(self.home, cluster, node, cs["id"])
        except CmError as exc:  # the node works without it; Slurm then finds an ended one not responding
            state.log(self.home, cluster, f"resume {node}: no watcher for computeset {cs['id']}: {exc}")
        return Started("", compute, f"compute node {compute}", {"vm": compute, "computeset": cs["id"], "seed": iso})

    def stop(self, cluster: str, node: str, entry: dict[str, Any]) -> str:
        """End the node's computeset (its compute node powers off), detach its seed and delete it from the
        service; nothing of the node (nor its munge key) is left there."""
        from cm.elastic import state

        done = []
        cs_id, compute = entry.get("computeset"), entry.get("compute")
        if cs_id:
            done.append(self._end(cs_id))
        if entry.get("seed"):
            done.append(self._drop_seed(entry["seed"], compute or ""))
        with state.changing(self.home, cluster) as now:  # the compute node stays only as a preference
            now["nodes"].setdefault(node, {}).update(computeset=None, seed="")
        return "; ".join(done) or "nothing to stop"

    def may_hold(self, entry: dict[str, Any]) -> bool:
        """Whether the node may still have a computeset or seed on the service: up, or one its stop left
        (a failed stop keeps both recorded; they would run, and be charged, until the walltime)."""
        return bool(entry.get("since") or entry.get("computeset") or entry.get("seed"))

    def row(self, entry: dict[str, Any]) -> dict[str, Any]:
        cs_id = entry.get("computeset") if entry.get("since") else None
        live = ""
        if cs_id:
            try:
                live = self.provider.computeset(cs_id)["state"]
            except CmError as exc:
                live = f"unknown: {exc}"
        return {"vm": f"{self.vc}/{entry['compute']}" if cs_id and entry.get("compute") else "",
                "computeset": f"{cs_id} ({live})" if cs_id else ""}

    def ended(self, nodes: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Booted nodes whose computeset ended (failed, cancelled, or its walltime over) -> why."""
        gone = {}
        for node, entry in nodes.items():
            if entry.get("state") != "booted" or not entry.get("computeset"):
                continue
            cs = self.provider.computeset(entry["computeset"])
            if cs["state"] in ENDED:
                why = {"completed": f"its walltime of {cs.get('walltime_mins')} min ended"}.get(cs["state"], cs["state"])
                if cs["state"] == "ending" and _walltime_over(cs):  # seen before the centre's Slurm says completed
                    why = f"its walltime of {cs.get('walltime_mins')} min ended"
                gone[node] = f"computeset {cs['id']} ended: {why}" + (f" ({cs['message']})" if cs.get("message") else "")
        return gone

    def _end(self, cs_id: int) -> str:
        """Shut the computeset down; one that ended (or began to) meanwhile is fine: what was done."""
        try:
            self.provider.computeset_action(cs_id, "shutdown")
        except ProviderError:
            # the service refuses to shut down what is ending or over: look again before failing
            live = self.provider.computeset(cs_id)["state"]
            if live not in ENDED:
                raise
            return f"computeset {cs_id} was {live}"
        return f"ended computeset {cs_id}"

    def _end_lost(self, cluster: str, node: str, compute: str) -> str:
        """After a start whose answer never came: end a computeset the service started on ``compute`` anyway
        (else it runs, and charges, until its walltime); what was found, for the error message."""
        from cm.elastic import state

        try:
            found = next((n.get("active_computeset") for n in self.provider.cluster(self.vc).get("computes") or []
                          if n.get("name") == compute), None)
            if not found or not self._as_asked(self.provider.computeset(int(found)), compute):
                return ""   # none, or not the one asked for (the service refused: the node was taken meanwhile)
            done = self._end(int(found))
        except CmError as exc:
            return f"; could not look for a computeset started on {compute} anyway: {exc}"
        state.log(self.home, cluster, f"resume {node}: the service started computeset {found} on {compute} "
                                      f"though its answer was lost; {done}")
        return f"; {done} (started on {compute} though the answer was lost)"

    def _as_asked(self, cs: dict[str, Any], compute: str) -> bool:
        """Whether the computeset is the one start() asks for: ``compute`` alone, our allocation and walltime."""
        return ([c.get("name") for c in cs.get("computes") or []] == [compute] and cs.get("account") ==
                self.st["allocation"] and int(cs.get("walltime_mins") or 0) == int(self.st["walltime_mins"]))

    def _claim(self, cluster: str, node: str) -> str:
        """A powered-off compute node of the VC no other burst node holds (the one it had before, if free)."""
        from cm.elastic import state

        free = [n["name"] for n in self.provider.cluster(self.vc).get("computes") or []
                if not n.get("active_computeset") and n.get("state") in ("shutoff", "nostate", "")]
        with state.changing(self.home, cluster) as now:
            held = {v.get("compute") for k, v in now["nodes"].items() if k != node and v.get("since")}
            mine = now["nodes"][node].get("compute")
            choices = [n for n in free if n not in held]
            if not choices:
                raise ProviderError(f"virtual cluster {self.vc} has no free compute node")
            compute = mine if mine in choices else choices[0]
            now["nodes"][node].update(compute=compute, computeset=None, seed="")
        return compute

    def _seed(self, cluster: str, node: str, compute: str, user_data: str) -> str:
        """Upload a NoCloud seed with the user-data as a private ISO (it holds the munge key: only this user
        may list, attach or delete it) and attach it; a fresh instance-id each boot, so cloud-init on the
        node's own disk runs the user-data again."""
        from cm.elastic import state
        from cm_plugins.kvm.seed import Seed, iso_bytes, meta_data

        iso = seed_name(cluster, node)
        with state.changing(self.home, cluster) as now:  # before the upload: a killed cm still knows to delete it
            now["nodes"][node].update(seed=iso)
        data = iso_bytes(Seed(meta_data(f"{compute}-{secrets.token_hex(4)}", compute), user_data))
        fd, path = tempfile.mkstemp(prefix=".cm-seed-", suffix=".iso")  # 0600: it holds the munge key
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            self.provider.upload_iso(path, iso.split("/", 1)[1], private=True)  # replaces a leftover of this node
        finally:
            os.unlink(path)
        self.provider.attach_iso(iso, self.vc, compute)
        return iso

    def _drop_seed(self, iso: str, compute: str) -> str:
        """Detach the seed from the compute node, then delete it from the service (detached first from any
        other compute node still holding it: a boot that a killed cm left half done)."""
        if compute:
            self.provider.attach_iso("", self.vc, compute)
        try:
            self.provider.delete_iso(iso)
        except NotFound:
            return f"detached the seed of {compute}" if compute else "no seed left"
        except ProviderError:  # still attached elsewhere: the service refuses
            others = [n["name"] for n in self.provider.cluster(self.vc).get("computes") or [] if n.get("iso") == iso]
            if not others:
                raise
            for other in others:
                self.provider.attach_iso("", self.vc, other)
            self.provider.delete_iso(iso)
            compute = ",".join(filter(None, [compute, *others]))
        return f"detached and deleted the seed {iso}" + (f" of {compute}" if compute else "")

    def forget(self, cluster: str, nodes: list[str]) -> list[str]:
        """Delete the seeds of the cluster's nodes still on the service (a cm killed mid-boot leaves one)."""
        mine = set(self.provider.isos())
        return [self._drop_seed(seed_name(cluster, n), "") for n in nodes if seed_name(cluster, n) in mine]

    def _running(self, cs: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Poll the computeset until it runs; one that ends first, or the timeout, fails."""
        deadline = time.monotonic() + timeout
        while cs["state"] != "running":
            if cs["state"] in ENDED:
                raise ProviderError(f"computeset {cs['id']} {cs['state']}"
                                    + (f": {cs['message']}" if cs.get("message") else ""))
            if time.monotonic() >= deadline:
                raise ProviderError(f"computeset {cs['id']} still {cs['state']} after {timeout:g} s "
                                    f"(its job {cs.get('job_id')} may be queued at the centre)")
            time.sleep(POLL)
            cs = self.provider.computeset(cs["id"])
        return cs


def _walltime_over(cs: dict[str, Any]) -> bool:
    """Whether the computeset has run its whole walltime (Slurm ends a job only after its time limit)."""
    start, minutes = cs.get("start_time"), cs.get("walltime_mins")
    return bool(start and minutes) and time.time() >= float(start) + 60 * float(minutes)


def seed_name(cluster: str, node: str) -> str:
    """The private ISO of a node's seed: one per node, replaced at each boot."""
    return f"private/cm-seed-{cluster}-{node}.iso".replace("_", "-")


def kind_for(ctx: Any, cloud: str) -> type[VmSource] | type[ComputesetSource]:
    """The source class a cloud's nodes come from."""
    return ComputesetSource if ctx.provider(cloud).kind == "comet" else VmSource


def source_for(ctx: Any, st: dict[str, Any]) -> VmSource | ComputesetSource:
    """The node source of an enabled cluster (its state ``st``)."""
    provider = ctx.provider(st["cloud"])
    return (ComputesetSource if st.get("comet_cluster") else VmSource)(provider, Path(ctx.home), st)
