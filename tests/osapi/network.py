"""Neutron v2.0: networks, subnets, ports, routers (read-only), quotas,
extensions.  Security groups, their rules and floating IPs live in
network_security.py (same router); shared helpers in network_common.py."""

from __future__ import annotations

import ipaddress
from typing import Any

from .core import Request, Response, neutron_error, now, quota_request
from .network_common import V, Kind, Record, _copy_fields, _own_or_403, _ts, parse_routes, router
from .state import PROJECT_ID, State


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


# ------------------------------------------------------------ networks / subnets

def _visible_net(n: Record) -> bool:
    return n["project_id"] == PROJECT_ID or n["shared"] or n["router:external"]


def net_view(st: State, n: Record) -> Record:
    out = _ts(n)
    out["subnets"] = list(n["subnets"])
    return out


NETWORKS = Kind("network", "networks", "networks", "Network {} could not be found.",
                "NetworkNotFound", net_view, lambda st, n: _visible_net(n))
SUBNETS = Kind("subnet", "subnets", "subnets", "Subnet {} could not be found.", "SubnetNotFound",
               visible=lambda st, s: _visible_net(st.networks[s["network_id"]]))
NETWORKS.serve("index", "show")
SUBNETS.serve("index", "show")


@NETWORKS.creates
def _new_network(req: Request, st: State, b: Record) -> Record:
    NETWORKS.quota_check(st)
    if b.get("router:external") or b.get("shared"):
        raise neutron_error(403, "(rule:create_network and (rule:create_network:shared and "
                                 "rule:create_network:router:external)) is disallowed by policy",
                            "PolicyNotAuthorized")
    n = st.add_network(str(b.get("name", "")), PROJECT_ID, now(), external=False,
                       mtu=int(b.get("mtu", 1450)))
    n["admin_state_up"] = bool(b.get("admin_state_up", True))
    n["description"] = str(b.get("description", ""))
    n["port_security_enabled"] = bool(b.get("port_security_enabled", True))
    return n


@NETWORKS.updates("name", "description", "admin_state_up", "mtu",
                  "port_security_enabled")
def _own_network(st: State, n: Record, body: Record) -> None:
    if n["project_id"] != PROJECT_ID:  # shared/external ones are seen, not changed
        raise neutron_error(404, f"Network {n['id']} could not be found.", "NetworkNotFound")


@NETWORKS.deletes
def _empty_network(st: State, n: Record) -> None:
    _own_or_403(n)
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


def _nameservers(servers: Any) -> list[str]:
    try:
        return [str(ipaddress.ip_address(str(x))) for x in servers or []]
    except ValueError:
        raise neutron_error(400, f"Invalid input for dns_nameservers. Reason: '{servers}' is not a "
                                 "valid nameserver.", "HTTPBadRequest")


def _subnet_settings(sub: Record, b: Record) -> None:
    """What subnet create and update both take: checked, then applied."""
    net = ipaddress.ip_network(sub["cidr"])
    if "host_routes" in b:
        sub["host_routes"] = parse_routes(b["host_routes"], "host_routes")
    if "dns_nameservers" in b:
        sub["dns_nameservers"] = _nameservers(b["dns_nameservers"])
    if "gateway_ip" in b:
        gw = b["gateway_ip"]
        if gw is not None:
            try:
                inside = ipaddress.ip_address(str(gw)) in net
            except ValueError:
                inside = False
            if not inside:
                raise neutron_error(400, f"Invalid input for operation: Gateway IP {gw} is not in subnet "
                                         f"{sub['cidr']}.", "InvalidInput")
        sub["gateway_ip"] = gw
    if b.get("allocation_pools"):
        sub["allocation_pools"] = list(b["allocation_pools"])
    if "enable_dhcp" in b:
        sub["enable_dhcp"] = bool(b["enable_dhcp"])


@SUBNETS.creates
def _new_subnet(req: Request, st: State, b: Record) -> Record:
    net = NETWORKS.find(req, str(b.get("network_id", "")))
    _own_or_403(net)
    try:  # host bits are allowed, as in Neutron: 10.99.99.0/16 is the subnet 10.99.0.0/16
        cidr = str(ipaddress.ip_network(str(b.get("cidr")), strict=False))
    except ValueError:
        raise neutron_error(400, f"Invalid input for cidr. Reason: '{b.get('cidr')}' is not a "
                                 "valid IP subnet.", "HTTPBadRequest")
    sub = st.add_subnet(net, str(b.get("name", "")), cidr, now(), dns=[])
    try:
        _subnet_settings(sub, b)
    except Exception:
        del st.subnets[sub["id"]]
        net["subnets"].remove(sub["id"])
        raise
    sub["description"] = str(b.get("description", ""))
    return sub


@SUBNETS.updates("name", "description")
def _change_subnet(st: State, s: Record, body: Record) -> None:
    _own_or_403(s)
    for fixed in ("cidr", "network_id", "ip_version"):
        if fixed in body:
            raise neutron_error(400, f"Cannot update read-only attribute {fixed}", "HTTPBadRequest")
    _subnet_settings(s, body)


@SUBNETS.deletes
def _unused_subnet(st: State, s: Record) -> None:
    _own_or_403(s)
    if any(f["subnet_id"] == s["id"] for p in st.ports.values() for f in p["fixed_ips"]):
        raise neutron_error(409, f"Unable to complete operation on subnet {s['id']}: One or "
                                 "more ports have an IP allocation from this subnet.",
                            "SubnetInUse")
    st.networks[s["network_id"]]["subnets"].remove(s["id"])


# ------------------------------------------------------------ ports

def port_view(st: State, p: Record) -> Record:
    out = _ts(p)
    out.pop("binding:host_id", None)  # admin-only attribute
    out["fixed_ips"] = [dict(f) for f in p["fixed_ips"]]
    out["security_groups"] = list(p["security_groups"])
    return out


PORTS = Kind("port", "ports", "ports", "Port {} could not be found.", "PortNotFound", port_view,
             settle=True)
PORTS.serve("index", "show")


def _sg_ids(st: State, refs: Any) -> list[str]:
    out = []
    for ref in refs or []:
        g = st.security_groups.get(str(ref))
        if g is None:
            raise neutron_error(404, f"Security group {ref} does not exist", "SecurityGroupNotFound")
        out.append(g["id"])
    return out


@PORTS.creates
def _new_port(req: Request, st: State, b: Record) -> Record:
    net = NETWORKS.find(req, str(b.get("network_id", "")))
    PORTS.quota_check(st)
    secured = bool(b.get("port_security_enabled", net.get("port_security_enabled", True)))
    if not secured:  # no security groups without port security (and none by default)
        if b.get("security_groups"):
            raise neutron_error(400, "Port security must be enabled and port must have an IP address in "
                                     "order to use security groups.",
                                "PortSecurityAndIPRequiredForSecurityGroups")
        sgs: list[str] = []
    else:
        sgs = _sg_ids(st, b["security_groups"]) if "security_groups" in b else [st.default_sg_id]
    wanted = None
    for f in b.get("fixed_ips") or []:
        wanted = f.get("ip_address") or wanted
    if wanted and not net["subnets"]:
        raise neutron_error(400, f"Invalid input for operation: IP address {wanted} is not a valid IP for "
                                 f"the specified network {net['id']}: it has no subnet.", "InvalidInput")
    if wanted and wanted in st.used_ips(net["id"]):
        raise neutron_error(409, f"IP address {wanted} already allocated in subnet "
                                 f"{net['subnets'][0]}", "IpAddressAlreadyAllocated")
    try:
        p = st.create_port(net, now(), security_groups=sgs, fixed_ip=wanted,
                           name=str(b.get("name", "")))
    except LookupError:
        raise neutron_error(409, f"No more IP addresses available on network {net['id']}.",
                            "IpAddressGenerationFailure")
    _copy_fields(p, b, ("description", "admin_state_up", "device_id", "device_owner"))
    p["port_security_enabled"] = secured
    return p


@PORTS.updates("name", "description", "admin_state_up", "device_id", "device_owner",
               "port_security_enabled", "allowed_address_pairs")
def _port_groups(st: State, p: Record, body: Record) -> None:
    groups = _sg_ids(st, body["security_groups"]) if "security_groups" in body else p["security_groups"]
    if not body.get("port_security_enabled", p["port_security_enabled"]) and groups:
        raise neutron_error(409, "Port has security group associated. Cannot disable port security or ip "
                                 "address until security group is removed", "PortSecurityPortHasSecurityGroup")
    p["security_groups"] = groups


@PORTS.deletes
def _unplug_port(st: State, p: Record) -> None:
    if p["device_owner"].startswith("network:"):
        raise neutron_error(409, f"Port {p['id']} cannot be deleted directly via the port API: "
                                 "has device owner " + p["device_owner"] + ".",
                            "ServicePortInUse")
    st.detach_floating_ips(p["id"])
    for s in st.servers.values():
        if p["id"] in s["owned_ports"]:
            s["owned_ports"].remove(p["id"])


# ------------------------------------------------------------ quotas, extensions

@router.route("GET", V + r"/quotas/(?P<pid>[^/]+?)(?P<kind>/details|/default)?(?:\.json)?")
def show_quota(req: Request) -> Response:
    _pid, kind, q, used = quota_request(req, "network")
    if kind == "/details":
        return Response(200, {"quota": {k: {"limit": v, "used": used.get(k, 0), "reserved": 0}
                                        for k, v in q.items()}})
    return Response(200, {"quota": q})


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


# security groups, floating IPs, routers and tags register on the same router
from . import network_routers, network_security, network_tags  # noqa: E402

ROUTE_MODULES = (network_security, network_routers, network_tags)
