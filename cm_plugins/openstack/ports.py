"""Addresses fixed before boot on OpenStack: a Neutron port per VM, made first and booted with.

A mixin of :class:`cm_plugins.openstack.provider.OpenStackProvider` (it uses ``service()``, ``_servers_named()``,
``_network()``, ``_boot_network()`` and ``_group()``).  Nova only unbinds a port it was
given when the VM goes, so ``release_addresses`` deletes the ports cm made.
"""

from __future__ import annotations

import time
from typing import Any

from cm.bulk import proceed
from cm.errors import ProviderError, Unsupported
from cm.provider import BootSpec, Reservation
from cm_plugins.openstack.session import translated

TAG = "cm: reserved address of VM "  # the description of the ports cm makes, so it deletes only its own
UNBIND_TIMEOUT = 120.0  # Nova unbinds a deleted server's ports when the delete has run through


class PortsMixin:
    """reserve_addresses / release_addresses through Neutron ports."""

    name: str
    config: dict[str, Any]

    def _reserving_network(self, network: str) -> Any:
        """The network to reserve on: the one given, the cloud's, or its one private network."""
        wanted = network or str(self.config.get("network") or "")
        if wanted:
            return self._network(wanted)  # type: ignore[attr-defined]
        chosen = self._boot_network(BootSpec(name="", image="", flavor=""))  # type: ignore[attr-defined]
        if not isinstance(chosen, list):
            raise Unsupported(self.name, "reserve addresses",
                              "it has several private networks (or none): set network: NAME for the cloud")
        return self._network(chosen[0]["uuid"])  # type: ignore[attr-defined]

    @translated("reserve addresses")
    def reserve_addresses(self, names: list[str], network: str = "") -> dict[str, Reservation]:
        """A port per VM on the network, made now: its fixed IP is the VM's address once it boots with it."""
        neutron = self.service("network")  # type: ignore[attr-defined]
        net = self._reserving_network(network)
        out = {}
        for name in names:
            port = next((p for p in neutron.ports(name=name, network_id=net.id)
                         if p.description == TAG + name and not p.device_id), None)
            if port is None:
                proceed()
                port = neutron.create_port(network_id=net.id, name=name, description=TAG + name)
            out[name] = Reservation(name=name, address=str(port.fixed_ips[0]["ip_address"]), network=net.name,
                                    mac=str(port.mac_address), id=str(port.id))
        return out

    @translated("renew reserved addresses")
    def renew_addresses(self, held: list[Reservation]) -> None:
        """A port cm made outlives its VM: wait until Nova has unbound it and the deleted VM is gone (deletes finish
        late), so a VM of the same name boots on it next."""
        neutron = self.service("network")  # type: ignore[attr-defined]
        for reservation in held:
            deadline = time.monotonic() + UNBIND_TIMEOUT
            while True:
                port = next((p for p in neutron.ports(name=reservation.name) if p.id == reservation.id), None)
                if port is None or port.description != TAG + reservation.name:
                    raise ProviderError(f"the port reserved for {reservation.name} ({reservation.address}) is gone")
                if not port.device_id and not self._servers_named(reservation.name):  # type: ignore[attr-defined]
                    break
                if time.monotonic() > deadline:
                    raise ProviderError(f"the VM {reservation.name} (port {reservation.address}) is still being "
                                        f"deleted after {UNBIND_TIMEOUT:g} s")
                proceed()
                time.sleep(0.5)

    @translated("release addresses")
    def release_addresses(self, names: list[str]) -> None:
        """Delete the ports cm made for ``names`` (a VM that is gone left its port unbound)."""
        neutron = self.service("network")  # type: ignore[attr-defined]
        for name in names:
            for port in neutron.ports(name=name):
                if port.description == TAG + name:
                    neutron.delete_port(port, ignore_missing=True)

    def _reserved_networks(self, spec: BootSpec) -> list[dict[str, str]]:
        """The create's networks for a VM with a reserved port (Nova leaves a given port's groups alone: set them)."""
        held = spec.reservation
        if held is None or not held.id:
            return []
        if spec.secgroups:
            groups = [self._group(g)[0].id for g in spec.secgroups]  # type: ignore[attr-defined]
            self.service("network").update_port(held.id, security_groups=groups)  # type: ignore[attr-defined]
        return [{"port": held.id}]
