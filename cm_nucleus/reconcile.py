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

from cm_nucleus.computesets import Claim, end, hold, nodes_by_key, on_each, power_on_claimed, start_nodes
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
    # libvirt is asked outside the lock too (a busy libvirtd answers slowly, and a job's start callback waits on
    # the lock): a node missing from this answer is powered on again (a no-op if it started meanwhile); power
    # states and power-offs come from it only if no computeset or node changed since, else at the next pass
    version = service.store.version
    running = _running(service)
    placed: list[Claim] = []
    with service.lock:
        with service.store.session() as s:
            if jobs is not None:
                placed = [c for cs in service.active_sets(s) if (c := _computeset(service, s, cs, jobs, running))]
            if not placed and service.store.version == version and not (s.new or s.dirty or s.deleted
                                                                        or s.info.get("changed")):
                _domains(service, s, running)
        claims = [hold(service, claim) for claim in placed]  # committed: a rolled-back pass claims nothing
    for claim in claims:  # libvirt works outside the lock
        try:
            failure = power_on_claimed(service, claim)
        except Exception as exc:  # noqa: BLE001 - its claim is released; the next claims must still run
            failure = f"{type(exc).__name__}: {exc}"
        if failure:
            log.warning("reconcile: computeset %s: %s", claim.cs_id, failure)


def _computeset(service: Service, s, cs: ComputeSet, jobs: dict,
                running: dict[str, set[str] | None]) -> Claim | None:
    """Bring one active computeset in line with its job; the power-ons it claimed (to run after the lock)."""
    if cs.id in service.starting:
        return None  # its nodes are being powered on right now; the start records the outcome
    if cs.state == "created":
        name = f"{JOB_PREFIX}{cs.cluster}-cs{cs.id}"
        found = [j for j in jobs.values() if j.name == name]
        if not found:
            cs.state, cs.message, cs.end_time = "failed", "the service stopped before submitting the job", time.time()
            return None
        cs.job_id, cs.state = found[0].id, "submitted"
    job = jobs.get(cs.job_id)
    state = job.state if job else None
    if state == "RUNNING" and cs.state == "submitted":
        import hostlist

        log.info("reconcile: computeset %s runs without its start callback", cs.id)
        try:
            given = hostlist.expand_hostlist(job.nodes)
        except hostlist.BadHostlist:  # this computeset waits for its callback; the others carry on
            log.warning("reconcile: job %s of computeset %s runs on '%s', not a hostlist", cs.job_id, cs.id, job.nodes)
            return None
        return start_nodes(service, s, cs, given)
    elif state == "RUNNING" and cs.state == "running":
        nodes = nodes_by_key(s, cs.cluster)
        gone = [nodes[key] for key in cs.nodes if nodes[key].want_on and not _alive(service, nodes[key], running)]
        for node in gone:
            log.info("reconcile: powering %s on again (its job %s runs)", node.name, cs.job_id)
        for error in on_each(gone, lambda node: service.power_on(node, f"reconcile of computeset {cs.id}")):
            log.warning("reconcile: %s", error)
    elif state in (None, "COMPLETING") or state in FINAL:
        if cs.state in ("submitted", "running"):
            log.info("reconcile: job %s of computeset %s is %s", cs.job_id, cs.id, state or "gone")
            end(service, s, cs)
        elif cs.state == "ending" and state is None:
            end(service, s, cs)  # the finisher died with the old process
    return None


def _alive(service: Service, node: Node, running: dict[str, set[str] | None]) -> bool:
    """Whether the node's domain runs (or is paused) on its host; a host that did not answer counts as yes."""
    on = running.get(service.uri(node))
    return on is None or (node.domain or service.domain_name(node)) in on


def _running(service: Service) -> dict[str, set[str] | None]:
    """Each host URI -> the domains running there (None: its libvirt does not answer)."""
    running: dict[str, set[str] | None] = {}
    for uri in set(service.settings.hosts.values()):
        try:
            running[uri] = service.hv.running(uri)
        except HypervisorError as exc:
            log.warning("reconcile: %s", exc)
            running[uri] = None
    return running


def _domains(service: Service, s, running: dict[str, set[str] | None]) -> None:
    """No compute runs outside a running computeset; every node's recorded power matches libvirt."""
    member = {key for cs in service.active_sets(s) if cs.state == "running" for key in [f"{cs.cluster}/{k}" for k in
                                                                                         cs.nodes]}
    for node in s.scalars(select(Node)):
        if node.cluster not in service.settings.clusters or f"{node.cluster}/{node.key}" in service.powering:
            continue  # a node being powered on is not seen yet in ``running``: its start records it
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
