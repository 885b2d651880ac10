"""Make the database agree with Slurm and libvirt: at start-up (after a crash) and as a safety net.

Slurm's callbacks drive computesets; this pass catches what a crash or a lost
callback missed: a computeset whose job is gone ends and its nodes go off, a
running job gets its nodes back, a node running outside a running computeset
is powered off, and a computeset the service never submitted is found by its
job name or failed.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from cm_nucleus.computesets import end, nodes_by_key, start_nodes
from cm_nucleus.core import JOB_PREFIX, Service, log
from cm_nucleus.hypervisor import HypervisorError
from cm_nucleus.slurm import FINAL, SlurmError
from cm_nucleus.store import ComputeSet, Node


def reconcile(service: Service) -> None:
    """One pass; Slurm or a hypervisor that does not answer only postpones the part that needs it."""
    try:
        jobs = service.slurm.jobs(JOB_PREFIX)
    except SlurmError as exc:
        log.warning("reconcile: Slurm does not answer: %s", exc)
        jobs = None
    with service.lock, service.store.session() as s:
        if jobs is not None:
            for cs in service.active_sets(s):
                _computeset(service, s, cs, jobs)
        _domains(service, s)


def _computeset(service: Service, s, cs: ComputeSet, jobs: dict) -> None:
    if cs.state == "created":
        name = f"{JOB_PREFIX}{cs.cluster}-cs{cs.id}"
        found = [j for j in jobs.values() if j.name == name]
        if not found:
            cs.state, cs.message, cs.end_time = "failed", "the service stopped before submitting the job", time.time()
            return
        cs.job_id, cs.state = found[0].id, "submitted"
    job = jobs.get(cs.job_id)
    state = job.state if job else None
    if state == "RUNNING" and cs.state == "submitted":
        import hostlist

        log.info("reconcile: computeset %s runs without its start callback", cs.id)
        start_nodes(service, s, cs, hostlist.expand_hostlist(job.nodes))
    elif state == "RUNNING" and cs.state == "running":
        nodes = nodes_by_key(s, cs.cluster)
        for key in cs.nodes:
            node = nodes[key]
            if node.want_on and not _alive(service, node):
                log.info("reconcile: powering %s on again (its job %s runs)", node.name, cs.job_id)
                _quietly(service.power_on, node)
    elif state in (None, "COMPLETING") or state in FINAL:
        if cs.state in ("submitted", "running"):
            log.info("reconcile: job %s of computeset %s is %s", cs.job_id, cs.id, state or "gone")
            end(service, s, cs)
        elif cs.state == "ending" and state is None:
            end(service, s, cs)  # the finisher died with the old process


def _alive(service: Service, node: Node) -> bool:
    try:
        return service.hv.state(service.uri(node), node.domain or service.domain_name(node)) in ("active", "paused",
                                                                                                 "blocked")
    except HypervisorError:
        return True  # cannot tell: do not start a second copy


def _quietly(action, node: Node) -> None:
    try:
        action(node)
    except HypervisorError as exc:
        log.warning("reconcile: %s: %s", node.name, exc)


def _domains(service: Service, s) -> None:
    """No compute runs outside a running computeset; every node's recorded power matches libvirt."""
    running: dict[str, set[str] | None] = {}
    for uri in set(service.settings.hosts.values()):
        try:
            running[uri] = service.hv.running(uri)
        except HypervisorError as exc:
            log.warning("reconcile: %s", exc)
            running[uri] = None
    member = {key for cs in service.active_sets(s) if cs.state == "running" for key in [f"{cs.cluster}/{k}" for k in
                                                                                         cs.nodes]}
    for node in s.scalars(select(Node)):
        if node.cluster not in service.settings.clusters:
            continue
        spec = service.spec(node.cluster, node.key) if _configured(service, node) else None
        if spec is None:
            continue
        names = {node.domain, service.domain_name(node)} - {""}
        uris = {service.settings.hosts[h] for h in spec.hosts}
        on = {(uri, n) for uri in uris for n in names if running.get(uri) and n in running[uri]}
        if node.kind == "compute" and f"{node.cluster}/{node.key}" not in member:
            for uri, name in on:
                log.info("reconcile: %s runs without a computeset: powering it off", name)
                try:
                    service.hv.power_off(uri, name)
                except HypervisorError as exc:
                    log.warning("reconcile: %s", exc)
            node.power, node.want_on = "shutoff", 0
        elif all(running.get(u) is not None for u in uris):
            node.power = "active" if on else "shutoff"


def _configured(service: Service, node: Node) -> bool:
    spec = service.settings.clusters[node.cluster]
    return node.key == spec.frontend.name or any(c.name == node.key for c in spec.computes)
