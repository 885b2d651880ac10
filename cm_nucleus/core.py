"""What every part of the service shares: settings, the database, Slurm, the hypervisors and one lock."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cm_nucleus.hypervisor import Hypervisors
from cm_nucleus.settings import ClusterSpec, NodeSpec, Settings, User
from cm_nucleus.slurm import Slurm
from cm_nucleus.store import ComputeSet, Node, Store

log = logging.getLogger("cm_nucleus")

ACTIVE_STATES = ("created", "submitted", "running", "ending")
JOB_PREFIX = "nucleus-"


class ApiError(Exception):
    """A refused request: the status code and the one-line message the client shows."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass(frozen=True)
class PowerOn:
    """One node's power-on, as plain values: the node (cluster, key, name, host) and its domain (URI, name, XML)."""

    cluster: str
    key: str
    name: str
    host: str
    uri: str
    domain: str
    xml: str


class Service:
    """The running service; routes and background work reach everything through it."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        for directory in (settings.state_dir, settings.iso_dir / "public", settings.console_dir, settings.job_dir):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store = store or Store(settings.database)
        self.store.sync_nodes(settings.clusters)
        self.slurm = Slurm(settings.slurm_env, settings.partition)
        self.hv = Hypervisors()
        # Every change of a computeset or a node's power happens under this lock,
        # so a Slurm callback, a request and the reconciler never interleave.
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        # Computesets whose nodes libvirt is powering on outside the lock (id -> set when done), and those
        # nodes ("cluster/key" -> that computeset): the reconciler neither starts them again nor powers them off
        # meanwhile, and a computeset claiming such a node next waits for that power-on to be recorded.
        self.starting: dict[int, threading.Event] = {}
        self.powering: dict[str, int] = {}

    # -- lookups ------------------------------------------------------------------------
    def user(self, name: str) -> User:
        return self.settings.users[name]

    def cluster(self, name: str, user: str) -> ClusterSpec:
        """The cluster if the user may see it (shares an allocation with it); 404 otherwise."""
        spec = self.settings.clusters.get(name)
        if spec is None or not self.visible(spec, user):
            raise ApiError(404, f"cluster '{name}' not found")
        return spec

    def visible(self, spec: ClusterSpec, user: str) -> bool:
        return bool(set(spec.allocations) & set(self.user(user).allocations))

    def spec(self, cluster: str, key: str) -> NodeSpec:
        spec = self.settings.clusters[cluster]
        if spec.frontend.name == key:
            return spec.frontend
        return next(n for n in spec.computes if n.name == key)

    def node(self, s: Session, cluster: str, name: str, kind: str = "compute") -> Node:
        """A node of the cluster by its current name; 404 if there is none."""
        node = s.scalar(select(Node).where(Node.cluster == cluster, Node.name == name, Node.kind == kind))
        if node is None:
            raise ApiError(404, f"{kind} '{name}' not found in cluster '{cluster}'")
        return node

    def frontend(self, s: Session, cluster: str) -> Node:
        return s.scalar(select(Node).where(Node.cluster == cluster, Node.kind == "frontend"))

    def active_sets(self, s: Session, cluster: str | None = None) -> list[ComputeSet]:
        query = select(ComputeSet).where(ComputeSet.state.in_(ACTIVE_STATES))
        if cluster:
            query = query.where(ComputeSet.cluster == cluster)
        return list(s.scalars(query))

    def busy(self, s: Session, cluster: str) -> dict[str, ComputeSet]:
        """Node key -> the active computeset it belongs to."""
        return {key: cs for cs in self.active_sets(s, cluster) for key in cs.nodes}

    # -- libvirt -------------------------------------------------------------------------
    def uri(self, node: Node) -> str:
        host = node.host or self.spec(node.cluster, node.key).hosts[0]
        return self.settings.hosts[host]

    def domain_name(self, node: Node) -> str:
        return f"{node.cluster}-{node.name}"

    def console_log(self, domain: str) -> str:
        return str(self.settings.console_dir / f"{domain}.log")

    def power_plan(self, node: Node) -> PowerOn:
        """What powering the node on (node.host set) takes, read from the database so libvirt can work unlocked."""
        from cm_nucleus.hypervisor import domain_xml

        spec = self.spec(node.cluster, node.key)
        uri = self.uri(node)
        domain = node.domain if node.power == "active" and node.domain else self.domain_name(node)
        iso = str(self.settings.iso_dir / node.iso) if node.iso else ""
        xml = domain_xml(self.settings.clusters[node.cluster].domain_xml, domain=domain, name=node.name,
                         cluster=node.cluster, memory=spec.memory, cpus=spec.cpus, mac=mac(node.cluster, node.key),
                         console_log=self.console_log(domain), iso_path=iso,
                         domain_type="test" if uri.startswith("test:") else "qemu")
        return PowerOn(node.cluster, node.key, node.name, node.host, uri, domain, xml)

    def power_on(self, node: Node, why: str = "power on") -> None:
        """Create the node's domain on its host (node.host set) from the cluster's template."""
        plan = self.power_plan(node)
        self.create(plan, why)
        node.domain, node.power, node.want_on = plan.domain, "active", 1

    def create(self, plan: PowerOn, why: str) -> None:
        """Create one domain, logging when it began and how long libvirt took (the benchmark reads these lines)."""
        began = time.monotonic()
        log.info("%s: powering on %s on %s", why, plan.name, plan.host)
        self.hv.power_on(plan.uri, plan.domain, plan.xml)
        log.info("%s: %s powered on in %.2f s", why, plan.name, time.monotonic() - began)

    def power_off(self, node: Node) -> None:
        if node.domain:
            self.hv.power_off(self.uri(node), node.domain)
        node.power, node.want_on = "shutoff", 0


def mac(cluster: str, key: str) -> str:
    """A stable locally administered MAC per node."""
    digest = hashlib.sha256(f"{cluster}/{key}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


