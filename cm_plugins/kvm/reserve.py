"""Addresses fixed before boot on a libvirt network: DHCP host entries (MAC, IP, host name).

libvirt's dnsmasq then gives the VM with that MAC exactly that address, and answers
DNS for the name, so a cluster's nodes can be told each other's addresses before
any of them boots.  Entries are changed with virNetworkUpdate, live and in the
persistent definition, which the test hypervisor supports too.
"""

from __future__ import annotations

import ipaddress
import random
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt

from cm.bulk import proceed
from cm.errors import ProviderError, Unsupported, UsageError
from cm.provider import BootSpec, Reservation

SECTION = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
ATTEMPTS = 5  # another cm may take the address we picked between our read and our update


def _flags(net: Any) -> int:
    """Change the running network and its saved definition (a transient one has none)."""
    if not net.isActive():
        return libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    live = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    return live | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG if net.isPersistent() else live


def _dhcp_ip(root: ET.Element) -> ET.Element | None:
    """The network's IPv4 <ip> element that serves DHCP, if any."""
    for ip in root.findall("ip"):
        if ip.get("family", "ipv4") == "ipv4" and ip.find("dhcp") is not None:
            return ip
    return None


def hosts(net: Any) -> list[dict[str, str]]:
    """The DHCP host entries of the network: {mac, name, ip}."""
    ip = _dhcp_ip(ET.fromstring(net.XMLDesc(0)))
    if ip is None:
        return []
    return [{k: h.get(k, "") for k in ("mac", "name", "ip")} for h in ip.findall("dhcp/host")]


def _free_addresses(root: ET.Element, taken: set[str]) -> list[str]:
    """Addresses of the DHCP ranges that no host entry, lease or gateway holds, highest first
    (dnsmasq hands out dynamic leases from the bottom; it never gives a reserved one to another MAC)."""
    ip = _dhcp_ip(root)
    if ip is None:
        return []
    prefix = ip.get("prefix") or ip.get("netmask") or "24"
    subnet = ipaddress.ip_network(f"{ip.get('address')}/{prefix}", strict=False)
    free = []
    for span in ip.findall("dhcp/range"):
        low, high = int(ipaddress.ip_address(span.get("start"))), int(ipaddress.ip_address(span.get("end")))
        for value in range(high, low - 1, -1):
            address = ipaddress.ip_address(value)
            if address in subnet and str(address) not in taken:
                free.append(str(address))
    return free


def _mac(taken: set[str]) -> str:
    """A new locally administered MAC in QEMU's range that no entry uses yet."""
    while True:
        mac = "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
        if mac not in taken:
            return mac


def _host_xml(entry: dict[str, str]) -> str:
    return "<host " + " ".join(f"{k}={quoteattr(entry[k])}" for k in ("mac", "name", "ip") if entry.get(k)) + "/>"


def reserve(net: Any, names: list[str], leases: list[str]) -> dict[str, Reservation]:
    """A DHCP host entry per name on ``net`` (an existing entry of that name is kept); ``leases``: addresses in use."""
    network = net.name()
    if _dhcp_ip(ET.fromstring(net.XMLDesc(0))) is None:
        raise Unsupported(network, "reserve addresses", "the libvirt network has no DHCP server")
    out: dict[str, Reservation] = {}
    for name in names:
        for attempt in range(ATTEMPTS):
            root = ET.fromstring(net.XMLDesc(0))
            current = hosts(net)
            mine = next((h for h in current if h["name"] == name), None)
            if mine:
                out[name] = Reservation(name=name, address=mine["ip"], network=network, mac=mine["mac"])
                break
            taken = {h["ip"] for h in current} | set(leases) | {root.find("ip").get("address", "")}
            free = _free_addresses(root, taken)
            if not free:
                raise ProviderError(f"network '{network}' has no free address left in its DHCP range")
            entry = {"mac": _mac({h["mac"] for h in current}), "name": name, "ip": free[0]}
            try:
                net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, SECTION, -1, _host_xml(entry), _flags(net))
            except libvirt.libvirtError:
                if attempt == ATTEMPTS - 1:
                    raise
                continue  # someone took that address or MAC meanwhile: read again
            out[name] = Reservation(name=name, address=entry["ip"], network=network, mac=entry["mac"])
            break
    return out


def renew(net: Any, held: Reservation) -> None:
    """Put the host entry (MAC, IP, name) of ``held`` back on ``net``, unless it is there; refuse if taken since."""
    entry = {"mac": held.mac, "name": held.name, "ip": held.address}
    for other in hosts(net):
        if other == entry:
            return
        if other["name"] == held.name or other["ip"] == held.address or other["mac"].lower() == held.mac.lower():
            raise ProviderError(f"the address {held.address} of {held.name} was given to another entry "
                                f"({other['name']} {other['mac']} {other['ip']}) meanwhile")
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, SECTION, -1, _host_xml(entry), _flags(net))


def release(net: Any, names: set[str] | None = None, macs: set[str] | None = None) -> int:
    """Delete the host entries with one of ``names`` or ``macs``; return how many went."""
    gone = 0
    for entry in hosts(net):
        if entry["name"] in (names or set()) or entry["mac"].lower() in (macs or set()):
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, SECTION, -1, _host_xml(entry), _flags(net))
            gone += 1
    return gone


def interface_macs(root: ET.Element) -> dict[str, set[str]]:
    """A domain's MACs by the libvirt network they are on."""
    out: dict[str, set[str]] = {}
    for iface in root.findall("devices/interface"):
        source, mac = iface.find("source"), iface.find("mac")
        if source is not None and mac is not None and source.get("network"):
            out.setdefault(source.get("network", ""), set()).add(mac.get("address", "").lower())
    return out


class AddressVerbs:
    """The kvm provider's reserve/release verbs (mixed into KvmProvider, which has hv, name and _networks)."""

    hv: Any
    name: str
    _networks: Any  # KvmProvider._networks(conn, wanted) -> the network names VMs go on

    def _reserved_mac(self, spec: BootSpec, networks: list[str]) -> dict[str, str]:
        """The MAC of the spec's reservation, on its network (which the VM must be on to get the address)."""
        held = spec.reservation
        if held is None or not held.mac:
            return {}
        if held.network not in networks:
            raise UsageError(f"{spec.name}: its address {held.address} is reserved on network '{held.network}', "
                             f"which it is not booted on ({', '.join(networks) or 'none'})")
        return {held.network: held.mac}

    def reserve_addresses(self, names: list[str], network: str = "") -> dict[str, Reservation]:
        """A DHCP host entry (MAC, IP, name) per VM on the cloud's network: dnsmasq gives it that address."""
        with self.hv.use("reserve addresses", write=True) as conn:
            wanted = self._networks(conn, [network] if network else [])
            if not wanted:
                raise Unsupported(self.name, "reserve addresses", "the cloud puts its VMs on no libvirt network")
            net = conn.networkLookupByName(wanted[0])
            leases = [] if self.hv.is_test else self._leases(net)
            proceed()
            return reserve(net, names, leases)

    @staticmethod
    def _leases(net: libvirt.virNetwork) -> list[str]:
        try:
            return [lease["ipaddr"] for lease in net.DHCPLeases() or []]
        except libvirt.libvirtError:
            return []  # a network without dnsmasq leases: host entries are all there is

    def renew_addresses(self, held: list[Reservation]) -> None:
        """Put the DHCP host entries back that deleting their VMs dropped: a replacement gets the same MAC and IP."""
        with self.hv.use("renew reserved addresses", write=True) as conn:
            for reservation in held:
                try:
                    net = conn.networkLookupByName(reservation.network)
                except libvirt.libvirtError as exc:
                    raise ProviderError(f"network '{reservation.network}' of {reservation.name}'s address: "
                                        f"{exc.get_error_message()}") from exc
                proceed()
                renew(net, reservation)

    def release_addresses(self, names: list[str]) -> None:
        """Delete the DHCP host entries named ``names`` from every network of the hypervisor."""
        with self.hv.use("release addresses", write=True) as conn:
            for net in conn.listAllNetworks():
                if any(h["name"] in names for h in hosts(net)):
                    release(net, names=set(names))

    def _release_macs(self, conn: libvirt.virConnect, root: ET.Element) -> None:
        """Delete the host entries of a deleted domain's MACs: its reserved addresses go with it."""
        for network, macs in interface_macs(root).items():
            try:
                release(conn.networkLookupByName(network), macs=macs)
            except libvirt.libvirtError:
                pass  # the network is gone, and its entries with it
