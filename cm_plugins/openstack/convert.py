"""openstacksdk resources → cm value objects (the libcloud ``_to_node`` idea)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from typing import Any

from cm.provider import VM, Flavor, FloatingIP, Image, Key, Network, SecGroup, SecRule, State

# Nova server status → the shared states.
NOVA_STATES: dict[str, State] = {
    "BUILD": State.PENDING,
    "REBUILD": State.PENDING,
    "RESIZE": State.PENDING,
    "VERIFY_RESIZE": State.PENDING,
    "REVERT_RESIZE": State.PENDING,
    "MIGRATING": State.PENDING,
    "PASSWORD": State.PENDING,
    "ACTIVE": State.RUNNING,
    "RESCUE": State.RUNNING,
    "SHUTOFF": State.STOPPED,
    "SHELVED": State.STOPPED,
    "SHELVED_OFFLOADED": State.STOPPED,
    "SUSPENDED": State.SUSPENDED,
    "PAUSED": State.PAUSED,
    "REBOOT": State.REBOOTING,
    "HARD_REBOOT": State.REBOOTING,
    "ERROR": State.ERROR,
    "DELETED": State.DELETED,
    "SOFT_DELETED": State.DELETED,
    "UNKNOWN": State.UNKNOWN,
}


def state_of(status: str | None) -> State:
    return NOVA_STATES.get((status or "").upper(), State.UNKNOWN)


def _is_public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def addresses(server: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(public, private) addresses: floating IPs and fixed global ones are public."""
    public: list[str] = []
    private: list[str] = []
    for entries in (server.get("addresses") or {}).values():
        for entry in entries:
            addr = entry.get("addr", "")
            floating = entry.get("OS-EXT-IPS:type") == "floating"
            target = public if floating or _is_public(addr) else private
            if addr and addr not in target:
                target.append(addr)
    return public, private


def fixed_addresses(server: dict[str, Any]) -> dict[str, list[str]]:
    """{network: its fixed (not floating) addresses}: which address a VM has on which network."""
    return {net: [e["addr"] for e in entries if e.get("addr") and e.get("OS-EXT-IPS:type") != "floating"]
            for net, entries in (server.get("addresses") or {}).items()}


def flavor_name(server: dict[str, Any], flavors: dict[str, str]) -> str:
    flavor = server.get("flavor") or {}
    # Microversion 2.47+ embeds the flavor (original_name); older ones only link it by id.
    return str(flavor.get("original_name") or flavor.get("name") or flavors.get(flavor.get("id", ""), "")
               or flavor.get("id", ""))


def image_id(server: dict[str, Any]) -> str:
    image = server.get("image") or {}  # "" when booted from a volume
    return str(image.get("id", "")) if isinstance(image, dict) else ""


def fault_of(server: dict[str, Any]) -> str:
    return str((server.get("fault") or {}).get("message") or "")


def to_vm(server: dict[str, Any], images: dict[str, str], flavors: dict[str, str]) -> VM:
    """A VM from a Nova server as the API returns it (plain JSON: SDK resources are ~30x slower to read)."""
    public, private = addresses(server)
    extra = {"status": server.get("status", ""), "task_state": server.get("OS-EXT-STS:task_state") or "",
             "security_groups": sorted({g.get("name", "") for g in server.get("security_groups") or []}),
             "networks": sorted((server.get("addresses") or {}).keys()),
             "addresses": fixed_addresses(server),
             "availability_zone": server.get("OS-EXT-AZ:availability_zone") or ""}
    iid = image_id(server)
    # Nova keeps a server ACTIVE while it deletes it: never show such a VM as running again.
    state = State.DELETED if extra["task_state"] == "deleting" else state_of(server.get("status"))
    return VM(name=server.get("name", ""), id=server["id"], state=state,
              image=images.get(iid, iid), flavor=flavor_name(server, flavors), key=server.get("key_name") or "",
              public_ips=public, private_ips=private, created=server.get("created") or "", fault=fault_of(server),
              extra=extra)


def to_image(image: Any) -> Image:
    return Image(name=image.name or image.id, id=image.id, status=image.status or "", size=int(image.size or 0),
                 format=image.disk_format or "",
                 extra={"visibility": image.visibility or "", "min_disk": image.min_disk or 0,
                        "min_ram": image.min_ram or 0, "os_distro": getattr(image, "os_distro", None) or ""})


def to_flavor(flavor: Any) -> Flavor:
    return Flavor(name=flavor.name, id=flavor.id, vcpus=int(flavor.vcpus or 0), ram=int(flavor.ram or 0),
                  disk=int(flavor.disk or 0),
                  extra={"ephemeral": flavor.ephemeral or 0, "swap": flavor.swap or 0,
                         "public": bool(flavor.is_public)})


def to_key(keypair: Any) -> Key:
    return Key(name=keypair.name, fingerprint=keypair.fingerprint or "", public_key=keypair.public_key or "",
               extra={"type": keypair.type or "ssh"})


def to_network(network: Any, cidrs: dict[str, str]) -> Network:
    return Network(name=network.name or network.id, id=network.id, status=network.status or "",
                   external=bool(network.is_router_external), shared=bool(network.is_shared),
                   subnets=[cidrs.get(s, s) for s in network.subnet_ids or []],
                   extra={"mtu": network.mtu or 0})


def to_rule(rule: Any, group_names: dict[str, str]) -> SecRule:
    get = rule.get if isinstance(rule, dict) else lambda k, d=None: getattr(rule, k, d)
    remote = get("remote_group_id") or ""
    return SecRule(direction=get("direction") or "ingress", protocol=get("protocol") or "",
                   port_min=int(get("port_range_min") or 0), port_max=int(get("port_range_max") or 0),
                   cidr=get("remote_ip_prefix") or "", remote_group=group_names.get(remote, remote),
                   ethertype=get("ethertype") or get("ether_type") or "IPv4", id=get("id") or "")


def rule_dict(rule: SecRule) -> dict[str, Any]:
    return {**rule.to_dict(), "rule": rule.name}


def to_secgroup(group: Any, group_names: dict[str, str]) -> SecGroup:
    rules = [rule_dict(to_rule(r, group_names)) for r in group.security_group_rules or []]
    rules.sort(key=lambda r: (r["direction"], r["ethertype"], r["protocol"], r["port_min"], r["cidr"], r["id"]))
    return SecGroup(name=group.name, id=group.id, description=group.description or "", rules=rules)


def to_floating_ip(fip: Any, vm_by_port: dict[str, str], networks: dict[str, str]) -> FloatingIP:
    return FloatingIP(name=fip.floating_ip_address, id=fip.id, status=fip.status or "",
                      vm=vm_by_port.get(fip.port_id or "", ""), fixed_ip=fip.fixed_ip_address or "",
                      network=networks.get(fip.floating_network_id, fip.floating_network_id or ""),
                      extra={"port_id": fip.port_id or "", "description": fip.description or ""})


def md5_fingerprint(public_key: str) -> str:
    """Nova's fingerprint of an OpenSSH public key (aa:bb:...)."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError):
        return ""
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))
