"""Computesets: a Slurm job each, whose start and end power the virtual nodes on and off."""

from __future__ import annotations

import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from cm_nucleus.core import ACTIVE_STATES, JOB_PREFIX, ApiError, PowerOn, Service, bad, log
from cm_nucleus.hypervisor import HypervisorError
from cm_nucleus.slurm import FINAL, SlurmError, holder_script
from cm_nucleus.store import ComputeSet, Node

NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
DEFAULT_WALLTIME = 2880


def to_json(cs: ComputeSet, nodes: dict[str, Node]) -> dict[str, Any]:
    computes = []
    for key in cs.nodes:
        node = nodes.get(key)
        computes.append({"name": node.name if node else key, "host": cs.hosts.get(key, ""),
                         "state": node.power if node else ""})
    return {"id": cs.id, "cluster": cs.cluster, "account": cs.account, "state": cs.state,
            "walltime_mins": cs.walltime_mins, "start_time": int(cs.start_time) if cs.start_time else None,
            "end_time": int(cs.end_time) if cs.end_time else None, "computes": computes,
            "reservation": cs.reservation or None, "job_id": cs.job_id or None, "user": cs.user,
            "message": cs.message}


def nodes_by_key(s: Session, cluster: str) -> dict[str, Node]:
    return {n.key: n for n in s.scalars(select(Node).where(Node.cluster == cluster))}


def _walltime(value: Any, limit: int) -> int:
    if value in (None, ""):
        return DEFAULT_WALLTIME
    try:
        minutes = int(str(value).strip())
    except ValueError:
        raise bad(f"walltime_mins must be a whole number of minutes, not '{value}'") from None
    if minutes < 1 or minutes > limit:
        raise bad(f"walltime_mins must be between 1 and {limit}")
    return minutes


def _allocation(service: Service, cluster: Any, user: str, value: Any) -> str:
    mine = [a for a in cluster.allocations if a in service.user(user).allocations]
    if value in (None, ""):
        if len(mine) == 1:
            return mine[0]
        raise bad("Please specify the allocation")
    if str(value) not in cluster.allocations:
        raise bad(f"Allocation {value} does not belong to the cluster")
    if str(value) not in mine:
        raise ApiError(403, f"you may not charge allocation {value}")
    return str(value)


def _choose(service: Service, s: Session, cluster: Any, body: dict[str, Any]) -> list[Node]:
    """The nodes asked for: ``computes`` (a hostlist of current names) or ``count`` free ones."""
    import hostlist

    by_key = nodes_by_key(s, cluster.name)
    busy = service.busy(s, cluster.name)
    computes = [n for n in by_key.values() if n.kind == "compute"]
    free = sorted((n for n in computes if n.key not in busy), key=lambda n: n.name)
    if body.get("computes") not in (None, ""):
        if body.get("count") not in (None, ""):
            raise bad("give either count or computes, not both")
        try:
            names = hostlist.expand_hostlist(str(body["computes"]))
        except hostlist.BadHostlist:
            raise bad(f"malformed hostlist '{body['computes']}'") from None
        by_name = {n.name: n for n in computes}
        unknown = [n for n in names if n not in by_name]
        if unknown or not names:
            raise bad(f"Unknown compute nodes: {hostlist.collect_hostlist(unknown) or 'none given'}")
        taken = [n for n in names if by_name[n].key in busy]
        if taken:
            raise bad(f"Compute nodes {hostlist.collect_hostlist(taken)} are in an active computeset")
        return [by_name[n] for n in names]
    try:
        count = int(str(body.get("count", "")).strip())
    except ValueError:
        raise bad("give count (a number of nodes) or computes (a hostlist)") from None
    if count < 1 or count > len(free):
        raise bad(f"There are {len(free)} nodes available")
    return free[:count]


def create(service: Service, user: str, body: dict[str, Any]) -> dict[str, Any]:
    """Check the request, record the computeset and submit its job; nothing is kept if Slurm refuses."""
    if not isinstance(body.get("cluster"), (str, int)) or body.get("cluster") in ("",):
        raise bad("cluster is required")
    cluster = service.cluster(str(body["cluster"]), user)
    minutes = _walltime(body.get("walltime_mins"), service.settings.max_walltime_mins)
    account = _allocation(service, cluster, user, body.get("allocation"))
    reservation = str(body.get("reservation") or "")
    if reservation and not NAME.match(reservation):
        raise bad(f"bad reservation name '{reservation}'")
    with service.lock:
        with service.store.session() as s:
            nodes = _choose(service, s, cluster, body)
            hosts = sorted({h for n in nodes for h in service.spec(cluster.name, n.key).hosts})
            if len(hosts) < len(nodes):
                raise bad(f"{len(nodes)} nodes need {len(nodes)} hosts; they may run on {len(hosts)}")
            cs = ComputeSet(cluster=cluster.name, user=user, account=account, state="created", walltime_mins=minutes,
                            reservation=reservation, secret=secrets.token_hex(16), nodes=[n.key for n in nodes],
                            hosts={}, created=time.time())
            s.add(cs)
        try:
            job_id = _submit(service, cs, hosts)
        except SlurmError as exc:
            with service.store.session() as s:
                s.delete(s.get(ComputeSet, cs.id))
            raise bad(f"Slurm refused the computeset: {exc}") from exc
        with service.store.session() as s:
            row = s.get(ComputeSet, cs.id)
            row.job_id, row.state = job_id, "submitted"
            log.info("computeset %s: job %s submitted for %s (%s)", cs.id, job_id, user, account)
            return to_json(row, nodes_by_key(s, cluster.name))


def _submit(service: Service, cs: ComputeSet, hosts: list[str]) -> str:
    settings = service.settings
    callback = f"{settings.callback_url}/v1/internal/computeset/{cs.id}/event"
    everywhere = set(settings.hosts) - set(hosts)
    return service.slurm.submit(holder_script(callback, cs.secret), name=f"{JOB_PREFIX}{cs.cluster}-cs{cs.id}",
                                nodes=len(cs.nodes), minutes=cs.walltime_mins, account=cs.account,
                                reservation=cs.reservation, exclude=sorted(everywhere),
                                output=str(settings.job_dir / f"cs{cs.id}.out"))


def assign(service: Service, cs: ComputeSet, given: list[str]) -> dict[str, str]:
    """Put each node on one of the hosts Slurm gave, where it may run (a bipartite matching)."""
    allowed = {key: [h for h in service.spec(cs.cluster, key).hosts if h in given] for key in cs.nodes}
    owner: dict[str, str] = {}

    def place(key: str, seen: set[str]) -> bool:
        for host in allowed[key]:
            if host not in seen:
                seen.add(host)
                if host not in owner or place(owner[host], seen):
                    owner[host] = key
                    return True
        return False

    for key in cs.nodes:
        if not place(key, set()):
            raise HypervisorError(f"Slurm gave hosts {','.join(given)}, where node {key} may not run")
    return {key: host for host, key in owner.items()}


def on_each(nodes: list[Node], action: Any) -> list[str]:
    """Run ``action(node)`` on every node at once (QEMU starts take a while); the errors."""
    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(nodes))) as pool:
        results = list(pool.map(lambda n: _try(action, n), nodes))
    return [r for r in results if r]


def _try(action: Any, node: Node) -> str:
    try:
        action(node)
        return ""
    except HypervisorError as exc:
        return str(exc)


@dataclass
class Claim:
    """A computeset's power-on, claimed under the lock and done outside it."""

    cs_id: int
    plans: list[PowerOn]
    after: list[threading.Event] = field(default_factory=list)  # power-ons of the same nodes by an ended computeset


def start_nodes(service: Service, s: Session, cs: ComputeSet, given: list[str]) -> Claim | None:
    """Under the lock, in the session: the job runs on ``given``, so place the nodes there; their power-on.

    Returns what ``hold`` claims once the session committed, and ``power_on_claimed`` then does outside
    the lock (None: the computeset failed), so two computesets starting at once power on at the same time."""
    nodes = nodes_by_key(s, cs.cluster)
    try:
        cs.hosts = assign(service, cs, given)
    except HypervisorError as exc:
        _fail(service, s, cs, str(exc))
        return None
    members = [nodes[k] for k in cs.nodes]
    for node in members:
        node.host = cs.hosts[node.key]
    return Claim(cs.id, [service.power_plan(n) for n in members])


def hold(service: Service, claim: Claim) -> Claim:
    """Under the lock, after the commit that placed the nodes: mark them as being powered on.

    Only then: a session that rolled back (a failed commit, an error further on) leaves no claim
    behind that would make the reconciler skip the computeset and a retried callback wait for nothing."""
    keys = [f"{p.cluster}/{p.key}" for p in claim.plans]
    claim.after = [service.starting[c] for c in {service.powering[k] for k in keys if k in service.powering}]
    service.starting[claim.cs_id] = threading.Event()
    service.powering.update(dict.fromkeys(keys, claim.cs_id))
    return claim


def power_on_claimed(service: Service, claim: Claim) -> str:
    """Outside the lock: create the claimed domains at once, then record the outcome under it; the failure."""
    cs_id, plans = claim.cs_id, claim.plans
    failed: dict[str, str] = {}

    def one(plan: PowerOn) -> None:
        try:
            service.create(plan, f"computeset {cs_id}")
        except HypervisorError as exc:
            failed[plan.key] = str(exc)
            raise

    try:
        for earlier in claim.after:  # that one powers its domain off again unless it is ours by then
            earlier.wait(600)
        on_each(plans, one)
    finally:
        with service.lock:
            try:
                with service.store.session() as s:
                    failure = _record_start(service, s, s.get(ComputeSet, cs_id), plans, failed)
            finally:
                for key in (f"{p.cluster}/{p.key}" for p in plans):
                    if service.powering.get(key) == cs_id:
                        del service.powering[key]
                service.starting.pop(cs_id).set()
    return failure


def _record_start(service: Service, s: Session, cs: ComputeSet, plans: list[PowerOn], failed: dict[str, str]) -> str:
    """The state after the power-on, checked again: a computeset ended meanwhile gets its new domains off."""
    if cs.state != "submitted":  # cancelled, ended or reconciled while libvirt worked
        busy = service.busy(s, cs.cluster)
        for plan in plans:
            other = busy.get(plan.key)
            host = other.hosts.get(plan.key) if other is not None and other.id != cs.id else None
            if plan.key in failed:
                log.info("computeset %s is %s: %s did not power on (%s)", cs.id, cs.state, plan.name, failed[plan.key])
                continue
            if host and service.settings.hosts[host] == plan.uri:
                continue  # the computeset that claimed the node since wants it there: it is theirs now
            log.info("computeset %s is %s: powering %s off again", cs.id, cs.state, plan.name)
            try:
                service.hv.power_off(plan.uri, plan.domain)
            except HypervisorError as exc:
                log.warning("computeset %s: %s", cs.id, exc)
        return ""
    nodes = nodes_by_key(s, cs.cluster)
    for plan in plans:
        if plan.key not in failed:
            node = nodes[plan.key]
            node.domain, node.power, node.want_on = plan.domain, "active", 1
    if failed:
        _fail(service, s, cs, "; ".join(failed[p.key] for p in plans if p.key in failed))
        return cs.message
    cs.state, cs.start_time = "running", time.time()
    log.info("computeset %s running on %s", cs.id, ",".join(sorted(set(cs.hosts.values()))))
    return ""


def stop_nodes(service: Service, s: Session, cs: ComputeSet) -> None:
    nodes = nodes_by_key(s, cs.cluster)
    errors = on_each([nodes[k] for k in cs.nodes], service.power_off)
    if errors:
        cs.message = "; ".join(errors)
        log.warning("computeset %s: %s", cs.id, cs.message)


def _fail(service: Service, s: Session, cs: ComputeSet, message: str) -> None:
    log.warning("computeset %s failed: %s", cs.id, message)
    stop_nodes(service, s, cs)
    cs.message, cs.end_time = message, time.time()
    if cs.job_id:
        try:
            service.slurm.cancel(cs.job_id)
        except SlurmError:
            pass
    cs.state = "failed"


def event(service: Service, cs_id: int, secret: str, what: str, job: str, nodes: str) -> dict[str, Any]:
    """A callback from the computeset's job script: ``started`` or ``ending``."""
    try:
        return _event(service, cs_id, secret, what, job, nodes)
    except SQLAlchemyError as exc:  # rolled back, nothing claimed: the job's script retries on 503 (curl --retry)
        log.warning("computeset %s: the %s callback was not recorded (%s); its job retries", cs_id, what,
                    str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0])
        raise ApiError(503, "the service's database did not take the change; try again") from None


def _event(service: Service, cs_id: int, secret: str, what: str, job: str, nodes: str) -> dict[str, Any]:
    import hmac

    import hostlist

    failure, claim, underway = "", None, None
    with service.lock:
        with service.store.session() as s:
            cs = s.get(ComputeSet, cs_id)
            if cs is None or not hmac.compare_digest(cs.secret, secret or ""):
                raise ApiError(403, "unknown computeset or wrong callback secret")
            if job and cs.job_id and job != cs.job_id:
                raise ApiError(409, f"computeset {cs_id} belongs to job {cs.job_id}, not {job}")
            if what == "started":
                underway = service.starting.get(cs.id)  # a retried callback, or the reconciler was first
                if cs.state == "running":
                    return {"id": cs.id, "state": cs.state}  # the reconciler saw the job run first
                if underway is None and cs.state != "submitted":
                    raise ApiError(409, f"computeset {cs_id} is {cs.state}")
                if underway is None:
                    try:
                        given = hostlist.expand_hostlist(nodes)
                    except hostlist.BadHostlist:
                        raise bad(f"malformed hostlist '{nodes}'") from None
                    claim = start_nodes(service, s, cs, given)
                    failure = cs.message if claim is None else ""
            elif what == "ending":
                if cs.state in ("submitted", "running"):
                    end(service, s, cs)
            else:
                raise bad(f"unknown event '{what}'")
            answer = {"id": cs.id, "state": cs.state}
        if claim:
            hold(service, claim)  # committed: the nodes are placed
    if claim or underway is not None:
        answer, failure = _started_outcome(service, cs_id, claim, underway)
    if failure:  # after the commit: the failed state is kept, and the job's script gives up
        raise ApiError(409, failure)
    return answer


def _started_outcome(service: Service, cs_id: int, claim: Claim | None,
                     underway: threading.Event | None) -> tuple[dict[str, Any], str]:
    """After the claim's commit, outside the lock (another computeset's start need not wait for libvirt): power
    the nodes on, or wait for the start already under way; the computeset's state and its failure."""
    failure = power_on_claimed(service, claim) if claim else ""
    if underway is not None:
        underway.wait(600)
    with service.store.session() as s:
        cs = s.get(ComputeSet, cs_id)
        return {"id": cs_id, "state": cs.state}, failure or (cs.message if cs.state == "failed" else "")


def end(service: Service, s: Session, cs: ComputeSet) -> None:
    """The job is ending (or being cancelled): nodes off now, the final state once Slurm has it."""
    stop_nodes(service, s, cs)
    cs.state, cs.end_time = "ending", time.time()
    threading.Thread(target=_finish_when_gone, args=(service, cs.id, cs.job_id), daemon=True).start()


def _finish_when_gone(service: Service, cs_id: int, job_id: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not service.stopping.is_set():
        try:
            state = service.slurm.final_state(job_id) if job_id else "CANCELLED"
        except SlurmError:
            state = None
        if state:
            with service.lock, service.store.session() as s:
                cs = s.get(ComputeSet, cs_id)
                if cs.state == "ending":
                    cs.state = FINAL.get(state.split()[0], "failed")
                    log.info("computeset %s %s (job %s %s)", cs_id, cs.state, job_id, state)
            return
        service.stopping.wait(0.5)


def terminate(service: Service, user: str, cs_id: int, action: str) -> dict[str, Any]:
    """PUT computeset/ID/{shutdown,poweroff,reboot,reset}."""
    with service.lock, service.store.session() as s:
        cs = s.get(ComputeSet, cs_id)
        spec = service.settings.clusters.get(cs.cluster) if cs else None
        if cs is None or spec is None or not service.visible(spec, user):
            raise ApiError(404, f"computeset {cs_id} not found")
        if cs.state not in ACTIVE_STATES or cs.state == "ending":
            raise bad(f"computeset {cs_id} is {cs.state}")
        if action in ("shutdown", "poweroff"):
            if cs.job_id:
                try:
                    service.slurm.cancel(cs.job_id)
                except SlurmError as exc:
                    raise ApiError(502, f"Slurm: {exc}") from exc
            end(service, s, cs)
        else:
            if cs.state != "running":
                raise bad(f"computeset {cs_id} is {cs.state}, not running")
            nodes = nodes_by_key(s, cs.cluster)
            errors = on_each([nodes[k] for k in cs.nodes],
                           lambda n: getattr(service.hv, action)(service.uri(n), n.domain))
            if errors:
                raise ApiError(502, "; ".join(errors))
        return to_json(cs, nodes_by_key(s, cs.cluster))


def listing(service: Service, user: str, states: list[str]) -> list[dict[str, Any]]:
    with service.store.session() as s:
        query = select(ComputeSet).order_by(ComputeSet.id)
        if states:
            query = query.where(ComputeSet.state.in_(states))
        clusters = service.settings.clusters
        sets = [cs for cs in s.scalars(query) if cs.cluster in clusters and service.visible(clusters[cs.cluster], user)]
        nodes = {c: nodes_by_key(s, c) for c in {cs.cluster for cs in sets}}
        return [to_json(cs, nodes[cs.cluster]) for cs in sets]


def one(service: Service, user: str, cs_id: int) -> dict[str, Any]:
    with service.store.session() as s:
        cs = s.get(ComputeSet, cs_id)
        spec = service.settings.clusters.get(cs.cluster) if cs else None
        if cs is None or spec is None or not service.visible(spec, user):
            raise ApiError(404, f"computeset {cs_id} not found")
        return to_json(cs, nodes_by_key(s, cs.cluster))
