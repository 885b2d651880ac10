"""Neutron routers (the ``router`` and ``extraroute`` extensions): create, show, update with an
external gateway and extra routes, delete, and add/remove interfaces by subnet or port."""

from __future__ import annotations

import ipaddress
from typing import Any

from .core import Request, Response, neutron_error, new_id, now
from .network_common import V, Kind, Record, parse_routes, router
from .state import ADMIN_PROJECT_ID, AZ, PROJECT_ID, State, owned

GATEWAY, INTERFACE = "network:router_gateway", "network:router_interface"

# Any router can be looked up by id; a list shows the project's own.
ROUTERS = Kind("router", "routers", "routers", "Router {} could not be found", "RouterNotFound",
               visible=lambda st, r: True, listed=lambda st, r: owned(r))
ROUTERS.serve("index", "show")


def _gateway_ports(st: State, rid: str) -> list[Record]:
    return [p for p in st.ports.values() if p["device_id"] == rid and p["device_owner"] == GATEWAY]


def _interfaces(st: State, rid: str) -> list[Record]:
    return [p for p in st.ports.values() if p["device_id"] == rid and p["device_owner"] == INTERFACE]


def _set_gateway(st: State, r: Record, info: Any) -> None:
    """Replace the router's external gateway with ``info`` (None or {} clears it)."""
    if info is not None and not isinstance(info, dict):
        raise neutron_error(400, "Invalid input for external_gateway_info.", "HTTPBadRequest")
    for p in _gateway_ports(st, r["id"]):
        del st.ports[p["id"]]
    r["external_gateway_info"] = None
    if not info:
        return
    net = st.networks.get(str(info.get("network_id", "")))
    if net is None:
        raise neutron_error(404, f"Network {info.get('network_id')} could not be found.", "NetworkNotFound")
    if not net["router:external"]:
        raise neutron_error(400, f"Bad router request: Network {net['id']} is not an external network.",
                            "BadRequest")
    wanted = next((x.get("ip_address") for x in info.get("external_fixed_ips") or [] if x.get("ip_address")),
                  None)
    try:
        port = st.create_port(net, now(), device_id=r["id"], device_owner=GATEWAY, project_id=ADMIN_PROJECT_ID,
                              security_groups=[], status="ACTIVE", fixed_ip=wanted)
    except LookupError:
        raise neutron_error(409, f"No more IP addresses available on network {net['id']}.",
                            "IpAddressGenerationFailure")
    r["external_gateway_info"] = {"network_id": net["id"], "enable_snat": bool(info.get("enable_snat", True)),
                                  "external_fixed_ips": [dict(x) for x in port["fixed_ips"]]}


def _check_routes(st: State, r: Record, routes: Any) -> list[Record]:
    """Extra routes: each a destination CIDR and a next hop on a subnet the router is attached to."""
    attached = [ipaddress.ip_network(st.subnets[f["subnet_id"]]["cidr"])
                for p in _interfaces(st, r["id"]) for f in p["fixed_ips"] if f["subnet_id"] in st.subnets]
    out = parse_routes(routes, "routes")
    for route in out:
        if not any(ipaddress.ip_address(route["nexthop"]) in net for net in attached):
            raise neutron_error(400, f"Invalid format for routes: {route}, the nexthop is not connected with "
                                     "router.", "InvalidRoutes")
    return out


@ROUTERS.creates
def _new_router(req: Request, st: State, b: Record) -> Record:
    ROUTERS.quota_check(st)
    t = now()
    r = {"id": new_id(), "name": str(b.get("name", "")), "status": "ACTIVE",
         "admin_state_up": bool(b.get("admin_state_up", True)), "tenant_id": PROJECT_ID,
         "project_id": PROJECT_ID, "description": str(b.get("description", "")),
         "external_gateway_info": None, "routes": [], "distributed": False, "ha": False,
         "availability_zone_hints": list(b.get("availability_zone_hints") or []), "availability_zones": [AZ],
         "flavor_id": None, "tags": [], "created_at": t, "updated_at": t, "revision_number": 1}
    _set_gateway(st, r, b.get("external_gateway_info"))
    st.routers[r["id"]] = r
    return r


@ROUTERS.updates("name", "description", "admin_state_up")
def _change_router(st: State, r: Record, body: Record) -> None:
    if not owned(r):
        raise neutron_error(404, f"Router {r['id']} could not be found", "RouterNotFound")
    if "external_gateway_info" in body:
        _set_gateway(st, r, body["external_gateway_info"])
    if "routes" in body:
        r["routes"] = _check_routes(st, r, body["routes"])


@ROUTERS.deletes
def _idle_router(st: State, r: Record) -> None:
    if not owned(r):
        raise neutron_error(404, f"Router {r['id']} could not be found", "RouterNotFound")
    if _interfaces(st, r["id"]):
        raise neutron_error(409, f"Router {r['id']} still has ports", "RouterInUse")
    if any(f["router_id"] == r["id"] for f in st.floating_ips.values()):
        raise neutron_error(409, f"Router {r['id']} still has floating IPs associated", "RouterInUse")
    for p in _gateway_ports(st, r["id"]):
        del st.ports[p["id"]]


# ------------------------------------------------------------ interfaces

def _interface_info(r: Record, port: Record) -> Record:
    subnets = [f["subnet_id"] for f in port["fixed_ips"]]
    return {"id": r["id"], "tenant_id": r["tenant_id"], "project_id": r["project_id"], "port_id": port["id"],
            "network_id": port["network_id"], "subnet_id": subnets[0] if subnets else None,
            "subnet_ids": subnets}


def _one_of(body: Record) -> tuple[str, str]:
    has_subnet, has_port = bool(body.get("subnet_id")), bool(body.get("port_id"))
    if has_subnet == has_port:
        raise neutron_error(400, "Bad router request: Either subnet_id or port_id must be specified.",
                            "BadRequest")
    return ("subnet", str(body["subnet_id"])) if has_subnet else ("port", str(body["port_id"]))


def _attach_subnet(st: State, r: Record, sid: str) -> Record:
    sub = st.subnets.get(sid)
    if sub is None or not (owned(sub) or st.networks[sub["network_id"]]["shared"]):
        raise neutron_error(404, f"Subnet {sid} could not be found.", "SubnetNotFound")
    if not sub["gateway_ip"]:
        raise neutron_error(400, f"Bad router request: Subnet {sid} does not have a gateway IP.", "BadRequest")
    for p in st.ports.values():
        if p["device_owner"] == INTERFACE and any(f["subnet_id"] == sid for f in p["fixed_ips"]):
            if p["device_id"] == r["id"]:
                raise neutron_error(400, f"Bad router request: Router already has a port on subnet {sid}.",
                                    "BadRequest")
    if sub["gateway_ip"] in st.used_ips(sub["network_id"]):
        raise neutron_error(409, f"IP address {sub['gateway_ip']} already allocated in subnet {sid}",
                            "IpAddressAlreadyAllocated")
    return st.create_port(st.networks[sub["network_id"]], now(), device_id=r["id"], device_owner=INTERFACE,
                          security_groups=[], status="ACTIVE", fixed_ip=sub["gateway_ip"])


def _attach_port(st: State, r: Record, pid: str) -> Record:
    port = st.ports.get(pid)
    if port is None or not owned(port):
        raise neutron_error(404, f"Port {pid} could not be found.", "PortNotFound")
    if port["device_id"] or port["device_owner"]:
        raise neutron_error(409, f"Port {pid} is in use by {port['device_owner'] or 'a device'}.", "PortInUse")
    if not port["fixed_ips"]:
        raise neutron_error(400, "Bad router request: Router port must have at least one fixed IP.",
                            "BadRequest")
    port.update(device_id=r["id"], device_owner=INTERFACE, status="ACTIVE", security_groups=[],
                updated_at=now())
    return port


def _interface_request(req: Request) -> tuple[State, str, str]:
    """(state, "subnet" or "port", its id) of an add/remove_router_interface request."""
    body = req.json("network")
    if not isinstance(body, dict):
        raise neutron_error(400, "Resource body required", "HTTPBadRequest")
    return (req.state, *_one_of(body))


@router.route("PUT", V + r"/routers/(?P<id>[^/]+)/add_router_interface")
def add_interface(req: Request) -> Response:
    st, kind, ref = _interface_request(req)
    with st.lock:
        r = ROUTERS.find(req)
        if not owned(r):
            raise neutron_error(404, f"Router {r['id']} could not be found", "RouterNotFound")
        port = _attach_subnet(st, r, ref) if kind == "subnet" else _attach_port(st, r, ref)
        r["updated_at"], r["revision_number"] = now(), r["revision_number"] + 1
        return Response(200, _interface_info(r, port))


@router.route("PUT", V + r"/routers/(?P<id>[^/]+)/remove_router_interface")
def remove_interface(req: Request) -> Response:
    st, kind, ref = _interface_request(req)
    with st.lock:
        r = ROUTERS.find(req)
        ports = _interfaces(st, r["id"])
        if kind == "port":
            port = next((p for p in ports if p["id"] == ref), None)
            if port is None:
                raise neutron_error(404, f"Router {r['id']} does not have an interface with id {ref}",
                                    "RouterInterfaceNotFound")
        else:
            port = next((p for p in ports if any(f["subnet_id"] == ref for f in p["fixed_ips"])), None)
            if port is None:
                raise neutron_error(404, f"Router {r['id']} has no interface on subnet {ref}",
                                    "RouterInterfaceNotFoundForSubnet")
        subnets = {f["subnet_id"] for f in port["fixed_ips"]}
        if any(f["router_id"] == r["id"] and any(x["subnet_id"] in subnets for x in
                                                  st.ports.get(f["port_id"] or "", {}).get("fixed_ips", []))
               for f in st.floating_ips.values()):
            raise neutron_error(409, f"Router interface for subnet {sorted(subnets)[0]} on router {r['id']} "
                                     "cannot be deleted, as it is required by one or more floating IPs.",
                                "RouterInterfaceInUseByFloatingIP")
        nets = [ipaddress.ip_network(st.subnets[s]["cidr"]) for s in subnets if s in st.subnets]
        if any(ipaddress.ip_address(x["nexthop"]) in net for x in r["routes"] for net in nets):
            raise neutron_error(409, f"Router interface for subnet {sorted(subnets)[0]} on router {r['id']} "
                                     "cannot be deleted, as it is required by one or more routes.",
                                "RouterInterfaceInUseByRoute")
        info = _interface_info(r, port)
        del st.ports[port["id"]]
        r["updated_at"], r["revision_number"] = now(), r["revision_number"] + 1
        return Response(200, info)
