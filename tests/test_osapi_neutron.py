"""Neutron in the local OpenStack API server, driven by the real openstacksdk over HTTP:
routers, tags, subnet updates, port security, subnet-less networks, CIDRs with host bits."""

from __future__ import annotations

import pytest

openstack = pytest.importorskip("openstack")
from openstack import exceptions as os_exc  # noqa: E402

from tests.test_osapi import _boot, conn, fake  # noqa: E402,F401  (fixtures)


def _network_with_subnet(conn, name: str, cidr: str):
    net = conn.network.create_network(name=name)
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr, name=f"{name}-subnet")
    return net, sub


def test_router_lifecycle_with_gateway_interfaces_and_routes(conn):
    public = conn.network.find_network("public", ignore_missing=False)
    net, sub = _network_with_subnet(conn, "lab", "10.20.0.0/24")
    router = conn.network.create_router(name="r1", external_gateway_info={"network_id": public.id})
    assert router.status == "ACTIVE" and router.external_gateway_info["network_id"] == public.id
    gateway_ip = router.external_gateway_info["external_fixed_ips"][0]["ip_address"]
    assert gateway_ip.startswith("172.24.4.")

    info = conn.network.add_interface_to_router(router, subnet_id=sub.id)
    assert info["subnet_id"] == sub.id and info["network_id"] == net.id
    port = conn.network.get_port(info["port_id"])
    assert port.device_owner == "network:router_interface" and port.device_id == router.id
    assert port.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.20.0.1"}]  # the subnet's gateway
    with pytest.raises(os_exc.BadRequestException, match="already has a port on subnet"):
        conn.network.add_interface_to_router(router, subnet_id=sub.id)

    router = conn.network.update_router(router, name="r1b",
                                        routes=[{"destination": "192.168.50.0/24", "nexthop": "10.20.0.9"}])
    assert router.name == "r1b" and router.routes == [{"destination": "192.168.50.0/24", "nexthop": "10.20.0.9"}]
    with pytest.raises(os_exc.BadRequestException, match="nexthop is not connected"):
        conn.network.update_router(router, routes=[{"destination": "0.0.0.0/0", "nexthop": "10.99.0.1"}])
    with pytest.raises(os_exc.ConflictException, match="required by one or more routes"):
        conn.network.remove_interface_from_router(router, subnet_id=sub.id)
    conn.network.update_router(router, routes=[])

    with pytest.raises(os_exc.ConflictException, match="still has ports"):
        conn.network.delete_router(router)
    conn.network.remove_interface_from_router(router, subnet_id=sub.id)
    assert conn.network.find_port(info["port_id"]) is None
    router = conn.network.update_router(router, external_gateway_info={})
    assert router.external_gateway_info is None
    assert not [p for p in conn.network.ports(device_id=router.id)]
    conn.network.delete_router(router)
    assert conn.network.find_router(router.id) is None
    assert [r.name for r in conn.network.routers()] == ["router1"]


def test_router_interface_by_port_and_errors(conn):
    net, sub = _network_with_subnet(conn, "lab2", "10.21.0.0/24")
    router = conn.network.create_router(name="r2")
    assert router.external_gateway_info is None
    port = conn.network.create_port(network_id=net.id)
    info = conn.network.add_interface_to_router(router, port_id=port.id)
    assert info["port_id"] == port.id and info["subnet_ids"] == [sub.id]
    with pytest.raises(os_exc.ConflictException, match="in use"):
        conn.network.add_interface_to_router(conn.network.create_router(name="r3"), port_id=port.id)
    with pytest.raises(os_exc.NotFoundException, match="does not have an interface"):
        conn.network.remove_interface_from_router(router, port_id="no-such-port")
    conn.network.remove_interface_from_router(router, port_id=port.id)
    with pytest.raises(os_exc.NotFoundException):
        conn.network.add_interface_to_router("no-such-router", subnet_id=sub.id)
    with pytest.raises(os_exc.BadRequestException, match="not an external network"):
        conn.network.create_router(name="bad", external_gateway_info={"network_id": net.id})


def test_a_floating_ip_reaches_a_server_through_a_new_router(conn):
    """What cm's --public needs on a fresh project: a router made through the API carries the traffic."""
    public = conn.network.find_network("public", ignore_missing=False)
    net, sub = _network_with_subnet(conn, "lab3", "10.22.0.0/24")
    router = conn.network.create_router(name="r4", external_gateway_info={"network_id": public.id})
    conn.network.add_interface_to_router(router, subnet_id=sub.id)
    server = _boot(conn, name="behind-r4", networks=[{"uuid": net.id}])
    port = next(conn.network.ports(device_id=server.id))
    fip = conn.network.create_ip(floating_network_id=public.id, port_id=port.id)
    assert fip.router_id == router.id and fip.fixed_ip_address.startswith("10.22.0.")
    with pytest.raises(os_exc.ConflictException, match="floating"):
        conn.network.remove_interface_from_router(router, subnet_id=sub.id)


@pytest.mark.parametrize("kind", ["network", "subnet", "port", "security_group", "router"])
def test_tags_on_every_resource_kind(conn, kind):
    net, sub = _network_with_subnet(conn, f"tagged-{kind}", "10.30.0.0/24")
    made = {"network": lambda: net, "subnet": lambda: sub,
            "port": lambda: conn.network.create_port(network_id=net.id),
            "security_group": lambda: conn.network.create_security_group(name="sg-tagged"),
            "router": lambda: conn.network.create_router(name="r-tagged")}[kind]()
    conn.network.set_tags(made, ["blue", "lab a"])
    finder = getattr(conn.network, {"network": "get_network", "subnet": "get_subnet", "port": "get_port",
                                    "security_group": "get_security_group", "router": "get_router"}[kind])
    assert finder(made.id).tags == ["blue", "lab a"]
    conn.network.add_tag(made, "green")
    assert conn.network.check_tag(made, "green") and finder(made.id).tags == ["blue", "lab a", "green"]
    with pytest.raises(os_exc.NotFoundException):
        conn.network.check_tag(made, "red")
    conn.network.remove_tag(made, "blue")
    with pytest.raises(os_exc.NotFoundException):
        conn.network.remove_tag(made, "blue")
    assert finder(made.id).tags == ["lab a", "green"]
    lister = getattr(conn.network, {"network": "networks", "subnet": "subnets", "port": "ports",
                                    "security_group": "security_groups", "router": "routers"}[kind])
    assert [x.id for x in lister(tags="green")] == [made.id]
    conn.network.remove_all_tags(made)
    assert finder(made.id).tags == []
    with pytest.raises(os_exc.BadRequestException):
        conn.network.set_tags(made, ["x" * 256])


def test_subnet_update_keeps_host_routes(conn):
    net = conn.network.create_network(name="routed")
    routes = [{"destination": "192.168.7.0/24", "nexthop": "10.40.0.254"}]
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.40.0.0/24", host_routes=routes,
                                     dns_nameservers=["9.9.9.9"])
    assert sub.host_routes == routes and sub.dns_nameservers == ["9.9.9.9"]
    sub = conn.network.update_subnet(sub, name="renamed", dns_nameservers=["1.1.1.1"])
    assert sub.name == "renamed" and sub.host_routes == routes and sub.dns_nameservers == ["1.1.1.1"]
    more = routes + [{"destination": "192.168.8.0/24", "nexthop": "10.40.0.253"}]
    assert conn.network.update_subnet(sub, host_routes=more).host_routes == more
    assert conn.network.get_subnet(sub.id).host_routes == more
    with pytest.raises(os_exc.BadRequestException, match="hostroute"):
        conn.network.update_subnet(sub.id, host_routes=[{"destination": "nowhere", "nexthop": "10.40.0.1"}])
    with pytest.raises(os_exc.BadRequestException, match="not in subnet"):
        conn.network.update_subnet(sub.id, gateway_ip="10.41.0.1")


def test_port_security_disabled_is_honoured(conn):
    net, _ = _network_with_subnet(conn, "open", "10.50.0.0/24")
    port = conn.network.create_port(network_id=net.id, port_security_enabled=False)
    assert port.is_port_security_enabled is False and port.security_group_ids == []
    assert conn.network.get_port(port.id).is_port_security_enabled is False
    default = conn.network.find_security_group("default", ignore_missing=False)
    with pytest.raises(os_exc.BadRequestException, match="Port security must be enabled"):
        conn.network.create_port(network_id=net.id, port_security_enabled=False, security_group_ids=[default.id])
    secured = conn.network.create_port(network_id=net.id)
    assert secured.is_port_security_enabled is True and secured.security_group_ids == [default.id]
    with pytest.raises(os_exc.ConflictException, match="security group associated"):
        conn.network.update_port(secured, port_security_enabled=False)
    opened = conn.network.update_port(secured, port_security_enabled=False, security_group_ids=[])
    assert opened.is_port_security_enabled is False and opened.security_group_ids == []
    insecure_net = conn.network.create_network(name="insecure", port_security_enabled=False)
    conn.network.create_subnet(network_id=insecure_net.id, ip_version=4, cidr="10.51.0.0/24")
    assert conn.network.create_port(network_id=insecure_net.id).is_port_security_enabled is False


def test_a_port_on_a_network_without_a_subnet_has_no_address(conn):
    net = conn.network.create_network(name="l2-only")
    port = conn.network.create_port(network_id=net.id)
    assert port.fixed_ips == [] and port.status == "DOWN"
    assert conn.network.get_port(port.id).fixed_ips == []
    conn.network.delete_port(port)
    conn.network.delete_network(net)


def test_a_cidr_with_host_bits_is_accepted_as_its_network(conn):
    net = conn.network.create_network(name="hostbits")
    sub = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.99.99.0/16")
    assert sub.cidr == "10.99.0.0/16" and sub.gateway_ip == "10.99.0.1"
    with pytest.raises(os_exc.BadRequestException, match="not a valid IP subnet"):
        conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="10.99.300.0/16")
