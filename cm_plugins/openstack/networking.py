"""The optional verbs of the OpenStack provider: networks, security groups, floating IPs,
quotas, limits and usage (Neutron and Nova through openstacksdk).

A mixin of :class:`cm_plugins.openstack.provider.OpenStackProvider`: it uses the
provider's ``service()``, ``_server()``, ``_one()``, ``_lock`` and ``timeout()``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cm.bulk import proceed
from cm.errors import ConfigError, Conflict, NotFound, ProviderError, UsageError
from cm.provider import FloatingIP, Network, SecGroup, SecRule
from cm_plugins.openstack import convert
from cm_plugins.openstack.polling import PollTimeout, poll
from cm_plugins.openstack.session import translated

# Floating IPs cm allocates for a VM carry this description, so releasing the
# VM's IPs (or deleting the VM) gives back only what cm took, never the user's own.
TAG = "cm: public IP of VM "
COMPUTE_QUOTAS = ("instances", "cores", "ram", "key_pairs", "server_groups", "server_group_members",
                  "metadata_items")
NETWORK_QUOTAS = {"floating_ips": "floating_ips", "networks": "networks", "subnets": "subnets", "ports": "ports",
                  "routers": "routers", "security_groups": "security_groups",
                  "security_group_rules": "security_group_rules"}
LIMITS = ("instances", "instances_used", "total_cores", "total_cores_used", "total_ram", "total_ram_used",
          "keypairs", "server_groups", "server_groups_used", "server_group_members", "server_meta", "image_meta",
          "floating_ips", "floating_ips_used", "security_groups", "security_groups_used", "security_group_rules")


def _iso_date(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"not a date: '{text}' (expected YYYY-MM-DD or an ISO date and time)") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class NetworkingMixin:
    """Networks, security groups, floating IPs, quotas, limits and usage."""

    name: str
    config: dict[str, Any]
    _networks: list[Network] | None = None

    # -- networks -------------------------------------------------------------------------------------------
    @translated("list networks")
    def list_networks(self) -> list[Network]:
        network = self.service("network")  # type: ignore[attr-defined]
        cidrs = {s.id: s.cidr for s in network.subnets()}
        networks = [convert.to_network(n, cidrs) for n in network.networks()]
        self._networks = networks
        return networks

    def _cached_networks(self) -> list[Network]:
        with self._lock:  # type: ignore[attr-defined]
            return self.list_networks() if self._networks is None else self._networks

    def _external_network(self) -> Network:
        """Where floating IPs come from: ``public_network`` of the cloud entry, else its one external network."""
        networks = self._cached_networks()
        if self.config.get("public_network"):
            return self._network(str(self.config["public_network"]))  # type: ignore[attr-defined]
        external = [n for n in networks if n.external]
        if not external:
            raise ProviderError(f"cloud '{self.name}' has no external network to take public IPs from")
        if len(external) > 1:
            names = ", ".join(sorted(n.name for n in external))
            raise ConfigError(f"cloud '{self.name}' has several external networks ({names}); set public_network "
                              "in its cm.yaml entry")
        return external[0]

    # -- security groups --------------------------------------------------------------------------------------
    def _groups(self) -> tuple[list[Any], dict[str, str]]:
        groups = list(self.service("network").security_groups())  # type: ignore[attr-defined]
        return groups, {g.id: g.name for g in groups}

    def _group(self, wanted: str) -> tuple[Any, dict[str, str]]:
        groups, names = self._groups()
        return self._one("secgroup", wanted, groups, self.name), names  # type: ignore[attr-defined]

    @translated("list security groups")
    def list_secgroups(self) -> list[SecGroup]:
        groups, names = self._groups()
        return [convert.to_secgroup(g, names) for g in groups]

    @translated("show the security group")
    def get_secgroup(self, name: str) -> SecGroup:
        group, names = self._group(name)
        return convert.to_secgroup(group, names)

    @translated("add the security group")
    def add_secgroup(self, name: str, description: str = "") -> SecGroup:
        groups, names = self._groups()
        if any(g.name == name for g in groups):
            raise Conflict(f"security group '{name}' already exists on cloud '{self.name}'")
        group = self.service("network").create_security_group(name=name, description=description)  # type: ignore
        return convert.to_secgroup(group, {**names, group.id: group.name})

    @translated("delete the security group")
    def delete_secgroup(self, name: str) -> None:
        group, _ = self._group(name)
        proceed()  # after a Ctrl-C, no delete is sent (cm.bulk)
        self.service("network").delete_security_group(group, ignore_missing=False)  # type: ignore[attr-defined]

    @translated("add the rule")
    def add_secgroup_rule(self, group: str, rule: SecRule) -> SecRule:
        target, names = self._group(group)
        attrs: dict[str, Any] = {"security_group_id": target.id, "direction": rule.direction,
                                 "ether_type": rule.ethertype}
        if rule.protocol:
            attrs["protocol"] = rule.protocol
        if rule.port_min:
            attrs.update(port_range_min=rule.port_min, port_range_max=rule.port_max or rule.port_min)
        if rule.cidr:
            attrs["remote_ip_prefix"] = rule.cidr
        if rule.remote_group:
            attrs["remote_group_id"] = self._group(rule.remote_group)[0].id
        created = self.service("network").create_security_group_rule(**attrs)  # type: ignore[attr-defined]
        return convert.to_rule(created, names)

    @translated("delete the rule")
    def delete_secgroup_rule(self, group: str, rule_id: str) -> None:
        target, _ = self._group(group)
        ids = [r["id"] for r in target.security_group_rules or [] if str(r.get("id", "")).startswith(rule_id)]
        if not ids:
            raise NotFound(f"security group '{group}' on cloud '{self.name}' has no rule '{rule_id}' "
                           f"(see `cm secgroup rule list {group}`)")
        if len(ids) > 1:
            raise UsageError(f"rule id '{rule_id}' matches {len(ids)} rules of '{group}'; give more of it")
        self.service("network").delete_security_group_rule(ids[0], ignore_missing=False)  # type: ignore

    # -- floating IPs -------------------------------------------------------------------------------------------
    def _server_port(self, server_id: str, wait: bool = True) -> Any:
        """The server's first port; a server being built may not have one yet, so wait for it."""
        network = self.service("network")  # type: ignore[attr-defined]

        def found(ports: list[Any]) -> bool:
            if ports:
                return True
            server = self._server_by_id(server_id)  # type: ignore[attr-defined]
            if (server.get("status") or "").upper() == "ERROR":
                raise ProviderError(f"{server['name']} went to ERROR: {convert.fault_of(server)}")
            return False

        def ports() -> list[Any]:
            return sorted(network.ports(device_id=server_id), key=lambda p: p.created_at or "")

        try:
            return poll(ports, found, self.timeout() if wait else 0, max_interval=2.0)[0]  # type: ignore
        except PollTimeout:
            raise ProviderError(f"the VM has no network port on cloud '{self.name}' to attach a public IP to") from None

    def _give_public_ip(self, server_id: str, vm_name: str) -> str:
        """Allocate a floating IP on the external network and attach it to the server's port."""
        external = self._external_network()
        port = self._server_port(server_id)
        proceed()
        fip = self.service("network").create_ip(  # type: ignore[attr-defined]
            floating_network_id=external.id, port_id=port.id, description=TAG + vm_name)
        return str(fip.floating_ip_address)

    def _release_ips_of(self, server_id: str, delete_ours: bool, only_ours: bool) -> list[str]:
        """Detach the server's floating IPs, deleting those cm allocated; return their addresses."""
        network = self.service("network")  # type: ignore[attr-defined]
        released = []
        for port in network.ports(device_id=server_id):
            for fip in network.ips(port_id=port.id):
                ours = (fip.description or "").startswith(TAG)
                if ours and delete_ours:
                    network.delete_ip(fip, ignore_missing=True)
                elif not only_ours:
                    network.update_ip(fip, port_id=None)
                else:
                    continue
                released.append(str(fip.floating_ip_address))
        return released

    def _fip(self, address: str) -> Any:
        found = [f for f in self.service("network").ips(floating_ip_address=address)  # type: ignore[attr-defined]
                 if f.floating_ip_address == address or f.id == address]
        if not found:
            raise NotFound(f"no floating IP {address} on cloud '{self.name}' (see `cm ip list --refresh`)")
        return found[0]

    def _to_fips(self, fips: list[Any]) -> list[FloatingIP]:
        network = self.service("network")  # type: ignore[attr-defined]
        attached = [f for f in fips if f.port_id]
        vm_by_port: dict[str, str] = {}
        if attached:
            servers = {s["id"]: s["name"] for s in self._server_list(detail=False)}  # type: ignore[attr-defined]
            device = {p.id: p.device_id for p in network.ports()}
            vm_by_port = {pid: servers.get(dev, dev) for pid, dev in device.items()}
        net_names = {n.id: n.name for n in self._cached_networks()}
        return [convert.to_floating_ip(f, vm_by_port, net_names) for f in fips]

    @translated("list floating IPs")
    def list_floating_ips(self) -> list[FloatingIP]:
        return self._to_fips(list(self.service("network").ips()))  # type: ignore[attr-defined]

    @translated("create a floating IP")
    def create_floating_ip(self, network: str = "") -> FloatingIP:
        if network:
            target = self._network(network)  # type: ignore[attr-defined]
        else:
            target = self._external_network()
        fip = self.service("network").create_ip(floating_network_id=target.id)  # type: ignore[attr-defined]
        return self._to_fips([fip])[0]

    @translated("delete the floating IP")
    def delete_floating_ip(self, address: str) -> None:
        fip = self._fip(address)
        proceed()
        self.service("network").delete_ip(fip, ignore_missing=False)  # type: ignore[attr-defined]

    @translated("attach the floating IP")
    def attach_floating_ip(self, address: str, vm: str) -> FloatingIP:
        fip = self._fip(address)
        server = self._server(vm)  # type: ignore[attr-defined]
        port = self._server_port(server["id"], wait=False)
        if fip.port_id and fip.port_id != port.id:
            raise Conflict(f"floating IP {address} is attached to another VM; detach it first")
        updated = self.service("network").update_ip(fip, port_id=port.id)  # type: ignore[attr-defined]
        return self._to_fips([updated])[0]

    @translated("detach the floating IP")
    def detach_floating_ip(self, address: str) -> FloatingIP:
        fip = self._fip(address)
        if not fip.port_id:
            raise Conflict(f"floating IP {address} is not attached to a VM")
        updated = self.service("network").update_ip(fip, port_id=None)  # type: ignore[attr-defined]
        return self._to_fips([updated])[0]

    # -- quotas, limits, usage ---------------------------------------------------------------------------------------
    def _project(self) -> str:
        return str(self.conn.current_project_id)  # type: ignore[attr-defined]

    @translated("read the quotas")
    def quotas(self) -> list[dict[str, Any]]:
        project = self._project()
        quota = self.service("compute").get_quota_set(project, usage=True)  # type: ignore[attr-defined]
        used = quota.usage or {}
        rows = [{"service": "compute", "resource": key, "limit": getattr(quota, key, None), "used": used.get(key)}
                for key in COMPUTE_QUOTAS if getattr(quota, key, None) is not None]
        try:
            details = self.service("network").get_quota(project, details=True)  # type: ignore[attr-defined]
        except Exception as exc:  # a cloud without Neutron quotas still shows Nova's
            if getattr(exc, "status_code", None) not in (404, 501):
                raise
            return rows
        for resource, attr in NETWORK_QUOTAS.items():
            value = getattr(details, attr, None)
            if isinstance(value, dict):
                rows.append({"service": "network", "resource": resource, "limit": value.get("limit"),
                             "used": value.get("used")})
        return rows

    @translated("read the limits")
    def limits(self) -> list[dict[str, Any]]:
        absolute = self.service("compute").get_limits().absolute  # type: ignore[attr-defined]
        return [{"name": key, "value": getattr(absolute, key)} for key in LIMITS
                if getattr(absolute, key, None) is not None]

    @translated("read the usage")
    def usage(self, start: str, end: str) -> list[dict[str, Any]]:
        begin, finish = _iso_date(start), _iso_date(end)
        if finish <= begin:
            raise UsageError(f"the end ({end}) must come after the start ({start})")
        report = self.service("compute").get_usage(self._project(), start=begin, end=finish)  # type: ignore
        rows = []
        for item in report.server_usages or []:
            get = item.get if isinstance(item, dict) else (lambda k, o=item: getattr(o, k, None))
            rows.append({"name": get("name"), "state": get("state"), "flavor": get("flavor"),
                         "hours": round(float(get("hours") or 0), 2), "vcpus": get("vcpus"),
                         "ram": get("memory_mb"), "disk": get("local_gb"), "started": get("started_at"),
                         "ended": get("ended_at") or ""})
        return rows
