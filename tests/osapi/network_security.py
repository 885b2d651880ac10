"""Neutron security groups, security group rules and floating IPs
(registered on the Neutron router of network_common.py)."""

from __future__ import annotations

import ipaddress
from typing import Any

from .core import ApiError, Request, neutron_error, new_id, now
from .network import NETWORKS
from .network_common import Kind, Record, _ts
from .state import PROJECT_ID, State, owned

# ------------------------------------------------------------ security groups

def sg_view(st: State, g: Record) -> Record:
    out = _ts(g)
    out["security_group_rules"] = [_ts(r) for r in st.sg_rules.values()
                                   if r["security_group_id"] == g["id"]]
    return out


SECURITY_GROUPS = Kind("security_group", "security_groups", "security-groups",
                       "Security group {} does not exist", "SecurityGroupNotFound", sg_view)
RULES = Kind("security_group_rule", "sg_rules", "security-group-rules",
             "Security group rule {} does not exist", "SecurityGroupRuleNotFound")
SECURITY_GROUPS.serve("index", "show")
RULES.serve("index", "show", "delete")


@SECURITY_GROUPS.creates
def _new_group(req: Request, st: State, b: Record) -> Record:
    name = b.get("name", "")
    if name == "default":
        raise neutron_error(409, "Default security group already exists.",
                            "SecurityGroupDefaultAlreadyExists")
    SECURITY_GROUPS.quota_check(st)
    g = st.add_security_group(str(name), str(b.get("description", "")), now())
    if "stateful" in b:
        g["stateful"] = bool(b["stateful"])
    return g


@SECURITY_GROUPS.updates("name", "description", "stateful")
def _keep_default_name(st: State, g: Record, body: Record) -> None:
    if g["id"] == st.default_sg_id and body.get("name", "default") != "default":
        raise neutron_error(409, "Updating default security group not allowed.",
                            "SecurityGroupCannotUpdateDefault")


@SECURITY_GROUPS.deletes
def _unused_group(st: State, g: Record) -> None:
    st.settle()  # a server being deleted may still hold the group
    if g["id"] == st.default_sg_id:
        raise neutron_error(409, "Insufficient rights for removing default security group.",
                            "SecurityGroupCannotRemoveDefault")
    if any(g["id"] in p["security_groups"] for p in st.ports.values()):
        raise neutron_error(409, f"Security Group {g['id']} in use.", "SecurityGroupInUse")
    for rid in [r["id"] for r in st.sg_rules.values() if r["security_group_id"] == g["id"]]:
        del st.sg_rules[rid]


_PROTO_NUM = {"tcp": "6", "udp": "17", "icmp": "1", "icmpv6": "58", "ipv6-icmp": "58"}


def _bad_rule(msg: str) -> ApiError:
    return neutron_error(400, msg, "HTTPBadRequest")


def _rule_spec(b: Record) -> tuple[Any, ...]:
    """The checked (direction, ethertype, protocol, port min, port max,
    remote prefix, remote group) of a new rule's body."""
    direction = b.get("direction")
    if direction not in ("ingress", "egress"):
        raise _bad_rule(f"Invalid input for direction. Reason: '{direction}' is not in "
                        "['ingress', 'egress'].")
    ethertype = b.get("ethertype", "IPv4")
    if ethertype not in ("IPv4", "IPv6"):
        raise _bad_rule(f"Invalid input for ethertype. Reason: '{ethertype}' is not in "
                        "['IPv4', 'IPv6'].")
    proto = b.get("protocol")
    if proto is not None:
        proto = str(proto).lower()
        if proto in ("any", "0"):
            proto = None
        elif proto not in _PROTO_NUM and not (proto.isdigit() and 0 <= int(proto) <= 255):
            raise neutron_error(400, f"Security group rule protocol {proto} not supported. Only "
                                     "protocol values [None, 'ah', 'dccp', 'egp', 'esp', 'gre', "
                                     "'icmp', 'icmpv6', 'igmp', 'ipip', 'ipv6-encap', 'ipv6-frag', "
                                     "'ipv6-icmp', 'ipv6-nonxt', 'ipv6-opts', 'ipv6-route', 'ospf', "
                                     "'pgm', 'rsvp', 'sctp', 'tcp', 'udp', 'udplite', 'vrrp'] and "
                                     "integer representations [0 to 255] are supported.",
                                "SecurityGroupRuleInvalidProtocol")
    pmin, pmax = b.get("port_range_min"), b.get("port_range_max")
    try:
        pmin = int(pmin) if pmin is not None else None
        pmax = int(pmax) if pmax is not None else None
    except (TypeError, ValueError):
        raise _bad_rule("Invalid input for port_range_min. Reason: not an integer.")
    if (pmin is not None or pmax is not None) and proto is None:
        raise neutron_error(400, "Must also specify protocol if port range is given.",
                            "SecurityGroupProtocolRequiredWithPorts")
    if proto in ("tcp", "udp", "6", "17") and pmin is not None:
        if pmax is None:
            pmax = pmin
        if pmin > pmax or not (0 < pmin <= 65535) or pmax > 65535:
            raise neutron_error(400, "For TCP/UDP protocols, port_range_min must be <= "
                                     "port_range_max", "SecurityGroupInvalidPortRange")
    prefix = b.get("remote_ip_prefix")
    rgroup = b.get("remote_group_id")
    if prefix and rgroup:
        raise neutron_error(400, "Only remote_ip_prefix or remote_group_id may be provided.",
                            "SecurityGroupRemoteGroupAndRemoteIpPrefix")
    if prefix:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            raise _bad_rule(f"Invalid input for remote_ip_prefix. Reason: '{prefix}' is not a "
                            "valid IP subnet.")
        if (net.version == 4) != (ethertype == "IPv4"):
            raise neutron_error(400, f"Conflicting value ethertype {ethertype} for CIDR {prefix}",
                                "BadRequest")
    return direction, ethertype, proto, pmin, pmax, prefix, rgroup


@RULES.creates
def _new_rule(req: Request, st: State, b: Record) -> Record:
    direction, ethertype, proto, pmin, pmax, prefix, rgroup = _rule_spec(b)
    g = SECURITY_GROUPS.find(req, str(b.get("security_group_id", "")))
    if rgroup:
        SECURITY_GROUPS.find(req, str(rgroup))
    for r in st.sg_rules.values():
        if (r["security_group_id"] == g["id"] and r["direction"] == direction
                and r["ethertype"] == ethertype and r["protocol"] == proto
                and r["port_range_min"] == pmin and r["port_range_max"] == pmax
                and (r["normalized_cidr"] == (str(ipaddress.ip_network(prefix, strict=False))
                                              if prefix else None))
                and r["remote_group_id"] == rgroup):
            raise neutron_error(409, f"Security group rule already exists. Rule id is "
                                     f"{r['id']}.", "SecurityGroupRuleExists")
    RULES.quota_check(st)
    r = st.add_rule(g["id"], direction, ethertype, now(), proto, pmin, pmax, prefix, rgroup,
                    str(b.get("description", "")))
    g["revision_number"] += 1
    return r


# ------------------------------------------------------------ floating IPs

def fip_view(st: State, f: Record) -> Record:
    out = _ts(f)
    p = st.ports.get(f["port_id"] or "")
    out["port_details"] = None if p is None else {
        "name": p["name"], "network_id": p["network_id"], "mac_address": p["mac_address"],
        "admin_state_up": p["admin_state_up"], "status": p["status"],
        "device_id": p["device_id"], "device_owner": p["device_owner"]}
    out["port_forwardings"] = []
    return out


FLOATING_IPS = Kind("floatingip", "floating_ips", "floatingips",
                    "Floating IP {} could not be found", "FloatingIPNotFound", fip_view)
FLOATING_IPS.serve("index", "show", "delete")


def _associate(st: State, f: Record, port_id: str | None, fixed: str | None) -> None:
    if not port_id:
        f.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN")
        return
    p = st.ports.get(port_id)
    if p is None or not owned(p):
        raise neutron_error(404, f"Port {port_id} could not be found.", "PortNotFound")
    v4 = [x for x in p["fixed_ips"] if ":" not in x["ip_address"]]
    if not v4:
        raise neutron_error(400, f"Bad floatingip request: Port {port_id} does not have any IPv4 "
                                 "addresses.", "BadRequest")
    chosen = next((x for x in v4 if x["ip_address"] == fixed), None) if fixed else v4[0]
    if chosen is None:
        raise neutron_error(400, f"Bad floatingip request: Port {port_id} does not have fixed ip "
                                 f"{fixed}.", "BadRequest")
    # reachability: a router with a gateway on the floating network and an
    # interface on the port's subnet
    router_id = None
    for r in st.routers.values():
        gw = r.get("external_gateway_info") or {}
        if gw.get("network_id") != f["floating_network_id"]:
            continue
        for q in st.ports.values():
            if q["device_id"] == r["id"] and q["device_owner"] == "network:router_interface" and \
                    any(x["subnet_id"] == chosen["subnet_id"] for x in q["fixed_ips"]):
                router_id = r["id"]
    if router_id is None:
        raise neutron_error(404, f"External network {f['floating_network_id']} is not reachable "
                                 f"from subnet {chosen['subnet_id']}.  Therefore, cannot associate "
                                 f"Port {port_id} with a Floating IP.",
                            "ExternalGatewayForFloatingIPNotFound")
    for other in st.floating_ips.values():
        if other is not f and other["port_id"] == port_id and \
                other["fixed_ip_address"] == chosen["ip_address"]:
            raise neutron_error(409, f"Cannot associate floating IP "
                                     f"{f['floating_ip_address']} ({f['id']}) with port {port_id} "
                                     f"using fixed IP {chosen['ip_address']}, as that fixed IP "
                                     f"already has a floating IP on external network "
                                     f"{other['floating_network_id']}.",
                                "FloatingIPPortAlreadyAssociated")
    f.update(port_id=port_id, fixed_ip_address=chosen["ip_address"], router_id=router_id,
             status="ACTIVE")


@FLOATING_IPS.creates
def _new_fip(req: Request, st: State, b: Record) -> Record:
    nid = b.get("floating_network_id")
    if not nid:
        raise neutron_error(400, "Invalid input for operation: 'floating_network_id' is required",
                            "HTTPBadRequest")
    net = NETWORKS.find(req, str(nid))
    if not net["router:external"]:
        raise neutron_error(400, f"Bad floatingip request: Network {net['id']} is not a valid "
                                 "external network.", "BadRequest")
    FLOATING_IPS.quota_check(st)
    wanted = b.get("floating_ip_address")
    if wanted:
        raise neutron_error(403, "(rule:create_floatingip and rule:create_floatingip:"
                                 "floating_ip_address) is disallowed by policy",
                            "PolicyNotAuthorized")
    alloc = st.allocate_ip(net)
    if alloc is None:
        raise neutron_error(409, f"No more IP addresses available on network {net['id']}.",
                            "IpAddressGenerationFailure")
    t = now()
    f = {"id": new_id(), "floating_ip_address": alloc[1], "floating_network_id": net["id"],
         "router_id": None, "port_id": None, "fixed_ip_address": None, "status": "DOWN",
         "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
         "description": str(b.get("description", "")), "dns_domain": "", "dns_name": "",
         "qos_policy_id": None, "tags": [], "created_at": t, "updated_at": t,
         "revision_number": 0}
    st.floating_ips[f["id"]] = f
    try:
        _associate(st, f, b.get("port_id"), b.get("fixed_ip_address"))
    except ApiError:
        del st.floating_ips[f["id"]]
        raise
    return f


@FLOATING_IPS.updates("description")
def _reassociate(st: State, f: Record, body: Record) -> None:
    if "port_id" in body:
        _associate(st, f, body.get("port_id"), body.get("fixed_ip_address"))

