"""Neutron v2.0: networks, subnets, ports, security groups and rules,
floating IPs, routers (read-only), quotas, extensions."""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from .core import (Request, Response, Router, iso, neutron_error,
                   now, paginate, with_query)
from .state import NEUTRON_QUOTA_DEFAULTS, PROJECT_ID, State

router = Router()
V = r"/v2\.0"

_NON_FILTERS = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse",
                "tags", "tags-any", "not-tags", "not-tags-any"}


@router.route("GET", r"/?", auth=False)
def versions(req: Request) -> Response:
    return Response(200, {"versions": [{
        "id": "v2.0", "status": "CURRENT",
        "links": [{"href": f"{req.base_url}/networking/v2.0/", "rel": "self"}]}]})


@router.route("GET", V + r"/?")
def resources(req: Request) -> Response:
    names = ["subnet", "network", "port", "floatingip", "router", "security_group",
             "security_group_rule", "quota"]
    out = []
    for n in names:
        coll = n.replace("_", "-") + "s" if "security" in n else n + "s"
        out.append({"name": n, "collection": coll, "links": [
            {"href": f"{req.base_url}/networking/v2.0/{coll}", "rel": "self"}]})
    return Response(200, {"resources": out})


def _st(req: Request) -> State:
    return req.state


def _body(req: Request, key: str) -> dict[str, Any]:
    body = req.json("network")
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise neutron_error(400, "Resource body required", "HTTPBadRequest")
    return body[key]  # type: ignore[no-any-return]


def _truthy(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _match(item: dict[str, Any], key: str, values: list[str]) -> bool:
    if key == "fixed_ips":
        for cond in values:
            k, _, v = cond.partition("=")
            if not any(str(f.get(k)) == v for f in item.get("fixed_ips", [])):
                return False
        return True
    if key not in item:
        return True  # unknown filters are ignored
    cur = item[key]
    if isinstance(cur, list):
        return any(v in [str(c) for c in cur] for v in values)
    cv = _truthy(cur)
    return any(cv == v or (isinstance(cur, bool) and cv == v.lower()) for v in values)


def _listing(req: Request, coll: str, items: list[dict[str, Any]],
             view: Callable[[dict[str, Any]], dict[str, Any]]) -> Response:
    out = [view(i) for i in items]
    for k, vals in req.query.items():
        if k in _NON_FILTERS:
            continue
        out = [i for i in out if _match(i, k, vals)]
    if req.q("tags"):
        need = set((req.q("tags") or "").split(","))
        out = [i for i in out if need <= set(i.get("tags", []))]
    if req.q("tags-any"):
        anyt = set((req.q("tags-any") or "").split(","))
        out = [i for i in out if anyt & set(i.get("tags", []))]
    keys = req.query.get("sort_key", [])
    dirs = req.query.get("sort_dir", [])
    for idx in reversed(range(len(keys))):
        k = keys[idx]
        rev = (dirs[idx] if idx < len(dirs) else "asc") == "desc"
        out.sort(key=lambda i: _truthy(i.get(k)), reverse=rev)
    page, nxt = paginate(out, req, not_found=lambda m: neutron_error(
        404, f"Marker {m} could not be found.", "NotFound"))
    fields = req.query.get("fields")
    if fields:
        page = [{k: v for k, v in i.items() if k in fields} for i in page]
    body: dict[str, Any] = {coll: page}
    if nxt:
        body[f"{coll}_links"] = [{"rel": "next", "href": with_query(
            f"{req.base_url}/networking/v2.0/{coll}", req, marker=nxt)}]
    return Response(200, body)


def _ts(d: dict[str, Any]) -> dict[str, Any]:
    out = dict(d)
    for k in ("created_at", "updated_at"):
        if k in out:
            out[k] = iso(out[k])
    return out


def _one(req: Request, key: str, item: dict[str, Any], status: int = 200) -> Response:
    fields = req.query.get("fields")
    if fields:
        item = {k: v for k, v in item.items() if k in fields}
    return Response(status, {key: item})


def _quota_check(st: State, res: str, used: int) -> None:
    limit = st.neutron_quota.get(res, -1)
    if limit >= 0 and used + 1 > limit:
        raise neutron_error(409, f"Quota exceeded for resources: ['{res}'].", "OverQuota")


# ------------------------------------------------------------ networks / subnets

def _visible_net(n: dict[str, Any]) -> bool:
    return n["project_id"] == PROJECT_ID or n["shared"] or n["router:external"]


def _net(req: Request, nid: str | None = None) -> dict[str, Any]:
    nid = nid or req.match["id"]  # type: ignore[index]
    n = _st(req).networks.get(nid)
    if n is None or not _visible_net(n):
        raise neutron_error(404, f"Network {nid} could not be found.", "NetworkNotFound")
    return n


def net_view(n: dict[str, Any]) -> dict[str, Any]:
    out = _ts(n)
    out["subnets"] = list(n["subnets"])
    return out


@router.route("GET", V + r"/networks")
def list_networks(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        return _listing(req, "networks", [n for n in st.networks.values() if _visible_net(n)], net_view)


@router.route("GET", V + r"/networks/(?P<id>[^/]+)")
def show_network(req: Request) -> Response:
    with _st(req).lock:
        return _one(req, "network", net_view(_net(req)))


@router.route("POST", V + r"/networks")
def create_network(req: Request) -> Response:
    st = _st(req)
    b = _body(req, "network")
    with st.lock:
        _quota_check(st, "network", sum(1 for n in st.networks.values() if n["project_id"] == PROJECT_ID))
        if b.get("router:external") or b.get("shared"):
            raise neutron_error(403, "(rule:create_network and (rule:create_network:shared and "
                                     "rule:create_network:router:external)) is disallowed by policy",
                                "PolicyNotAuthorized")
        n = st.add_network(str(b.get("name", "")), PROJECT_ID, now(), external=False,
                           mtu=int(b.get("mtu", 1450)))
        n["admin_state_up"] = bool(b.get("admin_state_up", True))
        n["description"] = str(b.get("description", ""))
        return _one(req, "network", net_view(n), 201)


@router.route("PUT", V + r"/networks/(?P<id>[^/]+)")
def update_network(req: Request) -> Response:
    st = _st(req)
    b = _body(req, "network")
    with st.lock:
        n = _net(req)
        if n["project_id"] != PROJECT_ID:
            raise neutron_error(404, f"Network {n['id']} could not be found.", "NetworkNotFound")
        for k in ("name", "description", "admin_state_up", "mtu", "port_security_enabled"):
            if k in b:
                n[k] = b[k]
        n["updated_at"] = now()
        n["revision_number"] += 1
        return _one(req, "network", net_view(n))


@router.route("DELETE", V + r"/networks/(?P<id>[^/]+)")
def delete_network(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        n = _net(req)
        if n["project_id"] != PROJECT_ID:
            raise neutron_error(403, "disallowed by policy", "PolicyNotAuthorized")
        busy = [p for p in st.ports.values() if p["network_id"] == n["id"]
                and not p["device_owner"].startswith("network:dhcp")]
        if busy:
            raise neutron_error(409, f"Unable to complete operation on network {n['id']}. "
                                     "There are one or more ports still in use on the network.",
                                "NetworkInUse")
        for pid in [p["id"] for p in st.ports.values() if p["network_id"] == n["id"]]:
            del st.ports[pid]
        for sid in n["subnets"]:
            st.subnets.pop(sid, None)
        del st.networks[n["id"]]
    return Response(204)


def _subnet(req: Request) -> dict[str, Any]:
    sid = req.match["id"]  # type: ignore[index]
    s = _st(req).subnets.get(sid)
    if s is None or not _visible_net(_st(req).networks[s["network_id"]]):
        raise neutron_error(404, f"Subnet {sid} could not be found.", "SubnetNotFound")
    return s


@router.route("GET", V + r"/subnets")
def list_subnets(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        subs = [s for s in st.subnets.values() if _visible_net(st.networks[s["network_id"]])]
        return _listing(req, "subnets", subs, _ts)


@router.route("GET", V + r"/subnets/(?P<id>[^/]+)")
def show_subnet(req: Request) -> Response:
    with _st(req).lock:
        return _one(req, "subnet", _ts(_subnet(req)))


@router.route("POST", V + r"/subnets")
def create_subnet(req: Request) -> Response:
    st = _st(req)
    b = _body(req, "subnet")
    with st.lock:
        net = _net(req, str(b.get("network_id", "")))
        if net["project_id"] != PROJECT_ID:
            raise neutron_error(403, "disallowed by policy", "PolicyNotAuthorized")
        try:
            cidr = str(ipaddress.ip_network(str(b.get("cidr")), strict=True))
        except ValueError:
            raise neutron_error(400, f"Invalid input for cidr. Reason: '{b.get('cidr')}' is not a "
                                     "valid IP subnet.", "HTTPBadRequest")
        sub = st.add_subnet(net, str(b.get("name", "")), cidr, now(),
                            dns=list(b.get("dns_nameservers") or []))
        if "gateway_ip" in b:
            sub["gateway_ip"] = b["gateway_ip"]
        if b.get("allocation_pools"):
            sub["allocation_pools"] = list(b["allocation_pools"])
        sub["enable_dhcp"] = bool(b.get("enable_dhcp", True))
        return _one(req, "subnet", _ts(sub), 201)


@router.route("DELETE", V + r"/subnets/(?P<id>[^/]+)")
def delete_subnet(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        s = _subnet(req)
        if s["project_id"] != PROJECT_ID:
            raise neutron_error(403, "disallowed by policy", "PolicyNotAuthorized")
        if any(f["subnet_id"] == s["id"] for p in st.ports.values() for f in p["fixed_ips"]):
            raise neutron_error(409, f"Unable to complete operation on subnet {s['id']}: One or "
                                     "more ports have an IP allocation from this subnet.",
                                "SubnetInUse")
        st.networks[s["network_id"]]["subnets"].remove(s["id"])
        del st.subnets[s["id"]]
    return Response(204)


# ------------------------------------------------------------ ports

def port_view(p: dict[str, Any]) -> dict[str, Any]:
    out = _ts(p)
    out.pop("binding:host_id", None)  # admin-only attribute
    out["fixed_ips"] = [dict(f) for f in p["fixed_ips"]]
    out["security_groups"] = list(p["security_groups"])
    return out


def _port(req: Request, pid: str | None = None) -> dict[str, Any]:
    pid = pid or req.match["id"]  # type: ignore[index]
    p = _st(req).ports.get(pid)
    if p is None or p["project_id"] != PROJECT_ID:
        raise neutron_error(404, f"Port {pid} could not be found.", "PortNotFound")
    return p


@router.route("GET", V + r"/ports")
def list_ports(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        st.settle()
        return _listing(req, "ports", [p for p in st.ports.values()
                                       if p["project_id"] == PROJECT_ID], port_view)


@router.route("GET", V + r"/ports/(?P<id>[^/]+)")
def show_port(req: Request) -> Response:
    with _st(req).lock:
        _st(req).settle()
        return _one(req, "port", port_view(_port(req)))


def _sg_ids(st: State, refs: Any) -> list[str]:
    out = []
    for ref in refs or []:
        g = st.security_groups.get(str(ref))
        if g is None:
            raise neutron_error(404, f"Security group {ref} does not exist", "SecurityGroupNotFound")
        out.append(g["id"])
    return out


@router.route("POST", V + r"/ports")
def create_port(req: Request) -> Response:
    st = _st(req)
    b = _body(req, "port")
    with st.lock:
        net = _net(req, str(b.get("network_id", "")))
        _quota_check(st, "port", sum(1 for p in st.ports.values() if p["project_id"] == PROJECT_ID))
        sgs = _sg_ids(st, b["security_groups"]) if "security_groups" in b else [st.default_sg_id]
        wanted = None
        for f in b.get("fixed_ips") or []:
            wanted = f.get("ip_address") or wanted
        if wanted and wanted in st.used_ips(net["id"]):
            raise neutron_error(409, f"IP address {wanted} already allocated in subnet "
                                     f"{net['subnets'][0]}", "IpAddressAlreadyAllocated")
        try:
            p = st.create_port(net, now(), security_groups=sgs, fixed_ip=wanted,
                               name=str(b.get("name", "")))
        except LookupError:
            raise neutron_error(409, f"No more IP addresses available on network {net['id']}.",
                                "IpAddressGenerationFailure")
        for k in ("description", "admin_state_up", "device_id", "device_owner",
                  "port_security_enabled"):
            if k in b:
                p[k] = b[k]
        return _one(req, "port", port_view(p), 201)


@router.route("PUT", V + r"/ports/(?P<id>[^/]+)")
def update_port(req: Request) -> Response:
    st = _st(req)
    b = _body(req, "port")
    with st.lock:
        p = _port(req)
        if "security_groups" in b:
            p["security_groups"] = _sg_ids(st, b["security_groups"])
        for k in ("name", "description", "admin_state_up", "device_id", "device_owner",
                  "port_security_enabled", "allowed_address_pairs"):
            if k in b:
                p[k] = b[k]
        p["updated_at"] = now()
        p["revision_number"] += 1
        return _one(req, "port", port_view(p))


@router.route("DELETE", V + r"/ports/(?P<id>[^/]+)")
def delete_port(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        p = _port(req)
        if p["device_owner"].startswith("network:"):
            raise neutron_error(409, f"Port {p['id']} cannot be deleted directly via the port API: "
                                     "has device owner " + p["device_owner"] + ".",
                                "ServicePortInUse")
        del st.ports[p["id"]]
        for f in st.floating_ips.values():
            if f["port_id"] == p["id"]:
                f.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN",
                         updated_at=now())
        for s in st.servers.values():
            if p["id"] in s["owned_ports"]:
                s["owned_ports"].remove(p["id"])
    return Response(204)


# ------------------------------------------------------------ routers (read only)

@router.route("GET", V + r"/routers")
def list_routers(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        return _listing(req, "routers", [r for r in st.routers.values()
                                         if r["project_id"] == PROJECT_ID], _ts)


@router.route("GET", V + r"/routers/(?P<id>[^/]+)")
def show_router(req: Request) -> Response:
    st = _st(req)
    rid = req.match["id"]  # type: ignore[index]
    with st.lock:
        r = st.routers.get(rid)
        if r is None:
            raise neutron_error(404, f"Router {rid} could not be found", "RouterNotFound")
        return _one(req, "router", _ts(r))


# ------------------------------------------------------------ quotas, extensions

def _neutron_usage(st: State) -> dict[str, int]:
    mine = PROJECT_ID
    return {
        "network": sum(1 for n in st.networks.values() if n["project_id"] == mine),
        "subnet": sum(1 for s in st.subnets.values() if s["project_id"] == mine),
        "port": sum(1 for p in st.ports.values() if p["project_id"] == mine),
        "router": sum(1 for r in st.routers.values() if r["project_id"] == mine),
        "floatingip": sum(1 for f in st.floating_ips.values() if f["project_id"] == mine),
        "security_group": sum(1 for g in st.security_groups.values() if g["project_id"] == mine),
        "security_group_rule": sum(1 for r in st.sg_rules.values() if r["project_id"] == mine),
        "rbac_policy": 0, "subnetpool": 0, "trunk": 0,
    }


@router.route("GET", V + r"/quotas/(?P<pid>[^/]+?)(?P<kind>/details|/default)?(?:\.json)?")
def show_quota(req: Request) -> Response:
    st = _st(req)
    pid = req.match["pid"]  # type: ignore[index]
    kind = req.match["kind"]  # type: ignore[index]
    with st.lock:
        st.settle()
        q = NEUTRON_QUOTA_DEFAULTS if (kind == "/default" or pid != PROJECT_ID) else st.neutron_quota
        if kind == "/details":
            used = _neutron_usage(st) if pid == PROJECT_ID else {}
            return Response(200, {"quota": {k: {"limit": v, "used": used.get(k, 0), "reserved": 0}
                                            for k, v in q.items()}})
        return Response(200, {"quota": dict(q)})


@router.route("GET", V + r"/quotas")
def list_quotas(req: Request) -> Response:
    return Response(200, {"quotas": []})


@router.route("PUT", V + r"/quotas/(?P<pid>[^/]+)")
def update_quota(req: Request) -> Response:
    raise neutron_error(403, "rule:update_quota is disallowed by policy", "PolicyNotAuthorized")


_EXTENSIONS = [
    ("security-group", "security-group", "The security groups extension."),
    ("router", "Neutron L3 Router", "Router abstraction for basic L3 forwarding between L2 "
                                    "Neutron networks and access to external networks via a NAT "
                                    "gateway."),
    ("external-net", "Neutron external network", "Adds external network attribute to network "
                                                 "resource."),
    ("extraroute", "Neutron Extra Route", "Extra routes configuration for L3 router"),
    ("quotas", "Quota management support", "Expose functions for quotas management per tenant"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage "
                                                          "statistics per project"),
    ("port-security", "Port Security", "Provides port security"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields "
                                                       "to all Neutron resources that have "
                                                       "Neutron standard attributes."),
    ("standard-attr-tag", "Tag support for resources with standard attribute",
     "Enables to set tag on resources with standard attribute."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions "
                                                               "to standard attributes"),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the "
                                                             "revision number of neutron resources."),
    ("fip-port-details", "Floating IP Port Details Extension", "Add port_details attribute to "
                                                               "Floating IP resource"),
    ("availability_zone", "Availability Zone", "The availability zone extension."),
    ("network_availability_zone", "Network Availability Zone", "Availability zone support for "
                                                               "network."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("extra_dhcp_opt", "Neutron Extra DHCP options", "Extra options configuration for DHCP."),
    ("subnet_allocation", "Subnet Allocation", "Enables allocation of subnets from a subnet pool"),
    ("stateful-security-group", "Stateful security group", "Indicates if the security group "
                                                           "is stateful or not"),
    ("filter-validation", "Filter parameters validation", "Provides validation on filter "
                                                          "parameters."),
]


def _ext_view(alias: str, name: str, desc: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": desc, "links": [],
            "updated": "2017-01-01T00:00:00-00:00"}


@router.route("GET", V + r"/extensions")
def list_extensions(req: Request) -> Response:
    return Response(200, {"extensions": [_ext_view(*e) for e in _EXTENSIONS]})


@router.route("GET", V + r"/extensions/(?P<alias>[^/]+)")
def show_extension(req: Request) -> Response:
    alias = req.match["alias"]  # type: ignore[index]
    for e in _EXTENSIONS:
        if e[0] == alias:
            return Response(200, {"extension": _ext_view(*e)})
    raise neutron_error(404, f"Extension with alias {alias} does not exist", "NotFound")


@router.route("GET", V + r"/availability_zones")
def list_azs(req: Request) -> Response:
    return Response(200, {"availability_zones": [
        {"name": "nova", "resource": "network", "state": "available"},
        {"name": "nova", "resource": "router", "state": "available"}]})


# security groups and floating IPs register on the same router
from . import network_security  # noqa: E402

ROUTE_MODULES = (network_security,)
