"""Clusters and their nodes: what the API shows, power, rename, consoles and ISO images."""

from __future__ import annotations

import re
import secrets
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cm_nucleus.core import ApiError, Service, bad, mac
from cm_nucleus.hypervisor import HypervisorError
from cm_nucleus.images import resolve, shown
from cm_nucleus.store import ComputeSet, ConsoleToken, Node

ACTIONS = ("poweron", "poweroff", "reboot", "reset", "shutdown")
RENAME = re.compile(r"^[a-zA-Z0-9_-]+$")
CONSOLE_TTL = 3600


def _interface(node: Node) -> list[dict[str, str]]:
    return [{"mac": mac(node.cluster, node.key), "iface": "private"}]


def compute_json(service: Service, node: Node, busy: dict[str, ComputeSet]) -> dict[str, Any]:
    spec = service.spec(node.cluster, node.key)
    cs = busy.get(node.key)
    return {"name": node.name, "interface": _interface(node), "memory": spec.memory, "cpus": spec.cpus,
            "disksize": spec.disksize, "cluster": node.cluster, "type": "compute", "state": node.power,
            "active_computeset": cs.id if cs else None, "active_computeset_state": cs.state if cs else None,
            "compute_state": "ready", "host": node.host if cs else "", "iso": shown(node.iso)}


def frontend_json(service: Service, node: Node) -> dict[str, Any]:
    spec = service.spec(node.cluster, node.key)
    return {"name": node.name, "state": node.power, "memory": spec.memory, "cpus": spec.cpus,
            "disksize": spec.disksize, "type": "frontend", "interface": _interface(node),
            **{k: spec.extra.get(k, "") for k in ("pub_ip", "pub_mac", "pub_netmask", "gateway", "dns1", "dns2", "ntp")},
            "frontend_state": "ready", "host": spec.hosts[0], "iso": shown(node.iso)}


def cluster_json(service: Service, s: Session, name: str, user: str) -> dict[str, Any]:
    spec = service.cluster(name, user)
    busy = service.busy(s, name)
    nodes = list(s.scalars(select(Node).where(Node.cluster == name).order_by(Node.name)))
    configured = {c.name for c in spec.computes}
    return {"name": spec.name, "description": spec.description, "project": spec.project, "vlan": spec.vlan,
            "frontend": frontend_json(service, service.frontend(s, name)),
            "computes": [compute_json(service, n, busy) for n in nodes if n.kind == "compute" and n.key in configured],
            "allocations": [a for a in spec.allocations if a in service.user(user).allocations]}


def clusters(service: Service, user: str) -> list[dict[str, Any]]:
    with service.store.session() as s:
        return [cluster_json(service, s, name, user) for name, spec in sorted(service.settings.clusters.items())
                if service.visible(spec, user)]


def cluster(service: Service, name: str, user: str) -> dict[str, Any]:
    with service.store.session() as s:
        return cluster_json(service, s, name, user)


def node_info(service: Service, cluster: str, name: str | None, user: str) -> dict[str, Any]:
    """One node, its power state asked of libvirt now (a guest may have powered itself off)."""
    service.cluster(cluster, user)
    with service.lock, service.store.session() as s:
        node = service.frontend(s, cluster) if name is None else service.node(s, cluster, name)
        if node.domain:
            try:
                node.power = service.hv.state(service.uri(node), node.domain)
            except HypervisorError:
                pass  # the hypervisor does not answer: show what was seen last
        if name is None:
            return frontend_json(service, node)
        return compute_json(service, node, service.busy(s, cluster))


def _act(service: Service, node: Node, action: str) -> None:
    try:
        if action == "poweron":
            service.power_on(node)
        elif action == "poweroff":
            service.power_off(node)
        elif node.power != "active" or not node.domain:
            raise bad("The VM is not running")
        else:
            getattr(service.hv, action)(service.uri(node), node.domain or service.domain_name(node))
            if action == "shutdown":
                node.want_on = 0  # the guest powers itself off; the reconciler records it
    except HypervisorError as exc:
        raise ApiError(502, str(exc)) from exc


def power(service: Service, cluster: str, name: str | None, action: str, user: str) -> None:
    """PUT .../frontend/ACTION or .../compute/NODE/ACTION."""
    service.cluster(cluster, user)
    if action not in ACTIONS:
        raise ApiError(404, f"unknown action '{action}' (actions: {', '.join(ACTIONS)})")
    with service.lock, service.store.session() as s:
        if name is None:
            _act(service, service.frontend(s, cluster), action)
            return
        node = service.node(s, cluster, name)
        cs = service.busy(s, cluster).get(node.key)
        if cs is None or cs.state != "running":
            raise bad("Compute is not a member of an active computeset")
        _act(service, node, action)


def rename(service: Service, cluster: str, name: str, new: Any, user: str) -> None:
    service.cluster(cluster, user)
    if not isinstance(new, str) or not RENAME.match(new):
        raise bad("name must match ^[a-zA-Z0-9_-]+$")
    with service.lock, service.store.session() as s:
        node = service.node(s, cluster, name)
        if new != name and s.scalar(select(Node).where(Node.cluster == cluster, Node.name == new)):
            raise bad(f"a node of cluster '{cluster}' is already called '{new}'")
        node.name = new  # a running domain keeps its libvirt name until its next power on


def console_url(service: Service, cluster: str, name: str | None, user: str) -> str:
    """A one-time console link valid for an hour (the route answers 303 to it)."""
    service.cluster(cluster, user)
    with service.store.session() as s:
        node = service.frontend(s, cluster) if name is None else service.node(s, cluster, name)
        if node.power != "active" or not node.domain:
            raise bad("The VM is not running")
        token = secrets.token_urlsafe(24)
        s.query(ConsoleToken).filter(ConsoleToken.expires < time.time()).delete()
        s.add(ConsoleToken(token=token, cluster=cluster, node=node.key, expires=time.time() + CONSOLE_TTL))
    return f"{service.settings.public_url}/console/{token}"


def console_text(service: Service, token: str, lines: int = 200) -> tuple[str, str]:
    """(node name, the tail of its serial console) for a console token; 404 if the token is unknown or old."""
    with service.store.session() as s:
        row = s.get(ConsoleToken, token)
        if row is None or row.expires < time.time():
            raise ApiError(404, "this console link is unknown or expired; ask for a new one")
        node = s.get(Node, (row.cluster, row.node))
        path = service.settings.console_dir / f"{node.domain}.log"
    try:
        data = path.read_bytes()[-256 * 1024:]
    except OSError:
        data = b""
    text = data.decode("utf-8", "replace").replace("\r\n", "\n")
    return node.name, "\n".join(text.splitlines()[-lines:])


# -- ISO images (their files: cm_nucleus.images) ----------------------------------------------------
def attach_iso(service: Service, cluster: str, name: str | None, iso: str | None, user: str) -> None:
    """Attach ``public/NAME`` or the caller's ``private/NAME`` (empty: detach) to a node; a running node
    changes its CD-ROM at once."""
    service.cluster(cluster, user)
    if iso is None:
        raise bad("iso_name is required (empty to detach)")
    with service.lock, service.store.session() as s:  # under the lock: a private ISO cannot be deleted meanwhile
        stored = resolve(service, iso, user) if iso else ""
        node = service.frontend(s, cluster) if name is None else service.node(s, cluster, name)
        if node.power == "active" and node.domain:
            try:
                service.hv.change_media(service.uri(node), node.domain,
                                        str(service.settings.iso_dir / stored) if stored else "")
            except HypervisorError as exc:
                raise ApiError(502, str(exc)) from exc
        node.iso = stored
