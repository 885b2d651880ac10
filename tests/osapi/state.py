"""In-memory cloud state shared by all service modules.

Everything lives in plain dicts guarded by one re-entrant lock.  Server
status changes are evaluated lazily from timestamps (``settle``) so no
background threads are needed.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import random
import threading
from typing import Any

from .core import new_id, now, stable_id

REGION = "RegionOne"
DOMAIN_ID = "default"
DOMAIN_NAME = "Default"
DEMO_USER = "demo"
DEMO_PASSWORD = "secret"
DEMO_PROJECT = "demo"
ADMIN_PROJECT_ID = stable_id("project", "admin")
PROJECT_ID = stable_id("project", DEMO_PROJECT)
USER_ID = stable_id("user", DEMO_USER)
AZ = "nova"
HOST = "compute-0"

NOVA_QUOTA_DEFAULTS = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "key_pairs": 100,
    "metadata_items": 128,
    "server_groups": 10,
    "server_group_members": 10,
    "injected_files": 5,
    "injected_file_content_bytes": 10240,
    "injected_file_path_bytes": 255,
    # proxied to neutron before 2.36; kept for old microversions
    "floating_ips": 10,
    "fixed_ips": -1,
    "security_groups": 10,
    "security_group_rules": 20,
}

NEUTRON_QUOTA_DEFAULTS = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
    "security_group": 10,
    "security_group_rule": 100,
    "rbac_policy": 10,
    "subnetpool": -1,
    "trunk": -1,
}

# name, id, ram MB, vcpus, disk GB
FLAVORS = [
    ("m1.tiny", "1", 512, 1, 1),
    ("m1.small", "2", 2048, 1, 20),
    ("m1.medium", "3", 4096, 2, 40),
    ("m1.large", "4", 8192, 4, 80),
]

# name, disk_format, size bytes, min_disk, min_ram, os_distro, os_version
IMAGES = [
    ("cirros-0.6.2-x86_64-disk", "qcow2", 21430272, 1, 0, "cirros", "0.6.2"),
    ("ubuntu-22.04", "qcow2", 683343872, 3, 512, "ubuntu", "22.04"),
    ("debian-12", "qcow2", 349700096, 2, 256, "debian", "12"),
]

# Power states as Nova reports them
POWER = {"NOSTATE": 0, "RUNNING": 1, "PAUSED": 3, "SHUTDOWN": 4, "CRASHED": 6, "SUSPENDED": 7}


def owned(obj: dict[str, Any]) -> bool:
    """Whether a record belongs to the demo project (the only one clients use)."""
    return bool(obj["project_id"] == PROJECT_ID)


def _seed_time() -> float:
    return 1704067200.0  # 2024-01-01T00:00:00Z


class State:
    """The whole fake cloud.  Use ``with state.lock:`` around access."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        # runtime configuration
        self.build_delay = 0.0
        self.create_delay = 0.0
        self.action_delay = 0.0
        self.latency: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.boot_failures: list[dict[str, Any]] = []
        self.max_microversion = "2.79"
        self.token_ttl = 3600.0
        self.verbose = False
        self.tokens: dict[str, dict[str, Any]] = {}
        self.users = {DEMO_USER: {"id": USER_ID, "name": DEMO_USER, "password": DEMO_PASSWORD}}
        self.projects = {
            PROJECT_ID: {"id": PROJECT_ID, "name": DEMO_PROJECT, "description": "Demo project"},
        }
        self.reset()

    # ------------------------------------------------------------ seeding
    def reset(self) -> None:
        """Forget everything the clients did; keep tokens valid."""
        with self.lock:
            t0 = _seed_time()
            self.nova_quota = dict(NOVA_QUOTA_DEFAULTS)
            self.neutron_quota = dict(NEUTRON_QUOTA_DEFAULTS)
            self.faults = []
            self.latency = []
            self.boot_failures = []
            self.flavors: dict[str, dict[str, Any]] = {}
            for name, fid, ram, vcpus, disk in FLAVORS:
                self.flavors[fid] = {
                    "id": fid, "name": name, "ram": ram, "vcpus": vcpus,
                    "disk": disk, "ephemeral": 0, "swap": 0,
                    "rxtx_factor": 1.0, "is_public": True, "disabled": False,
                    "description": None, "extra_specs": {},
                }
            self.images: dict[str, dict[str, Any]] = {}
            for i, (name, fmt, size, min_disk, min_ram, distro, ver) in enumerate(IMAGES):
                iid = stable_id("image", name)
                digest = hashlib.sha512(name.encode()).hexdigest()
                self.images[iid] = {
                    "id": iid, "name": name, "status": "active",
                    "visibility": "public", "protected": False,
                    "os_hidden": False,
                    "checksum": hashlib.md5(name.encode()).hexdigest(),  # noqa: S324
                    "os_hash_algo": "sha512", "os_hash_value": digest,
                    "owner": ADMIN_PROJECT_ID, "size": size,
                    "virtual_size": size * 4 if fmt == "qcow2" else size,
                    "min_disk": min_disk, "min_ram": min_ram,
                    "disk_format": fmt, "container_format": "bare",
                    "created_at": t0 + i, "updated_at": t0 + i + 30,
                    "tags": [], "os_distro": distro, "os_version": ver,
                    "hw_disk_bus": "virtio", "hw_architecture": "x86_64",
                    "stores": "file",
                }
            self.image_data: dict[str, bytes] = {}  # uploaded image files, by image id
            self.image_members: dict[str, dict[str, dict[str, Any]]] = {}  # image id -> member id -> member
            self.corrupt_uploads = 0  # the next N uploads are stored with one byte flipped
            self.server_groups: dict[str, dict[str, Any]] = {}
            self.keypairs: dict[str, dict[str, Any]] = {}
            self.keypair_seq = 0
            self.servers: dict[str, dict[str, Any]] = {}
            self.server_history: list[dict[str, Any]] = []  # for usage
            self.networks: dict[str, dict[str, Any]] = {}
            self.subnets: dict[str, dict[str, Any]] = {}
            self.ports: dict[str, dict[str, Any]] = {}
            self.security_groups: dict[str, dict[str, Any]] = {}
            self.sg_rules: dict[str, dict[str, Any]] = {}
            self.floating_ips: dict[str, dict[str, Any]] = {}
            self.routers: dict[str, dict[str, Any]] = {}
            self._seed_network(t0)

    def _seed_network(self, t0: float) -> None:
        priv = self.add_network("private", PROJECT_ID, t0, external=False, mtu=1450)
        self.add_subnet(priv, "private-subnet", "10.0.0.0/24", t0,
                        dns=["8.8.8.8"])
        pub = self.add_network("public", ADMIN_PROJECT_ID, t0, external=True, mtu=1500)
        self.add_subnet(pub, "public-subnet", "172.24.4.0/24", t0)
        self.public_net_id = pub["id"]
        self.private_net_id = priv["id"]
        rid = stable_id("router", "router1")
        self.routers[rid] = {
            "id": rid, "name": "router1", "status": "ACTIVE",
            "admin_state_up": True, "tenant_id": PROJECT_ID,
            "project_id": PROJECT_ID, "description": "",
            "external_gateway_info": None, "routes": [],
            "distributed": False, "ha": False,
            "availability_zone_hints": [], "availability_zones": [AZ],
            "flavor_id": None, "tags": [], "created_at": t0,
            "updated_at": t0, "revision_number": 3,
        }
        gw = self.create_port(pub, t0, device_id=rid,
                              device_owner="network:router_gateway",
                              project_id=ADMIN_PROJECT_ID, security_groups=[],
                              status="ACTIVE")
        self.routers[rid]["external_gateway_info"] = {
            "network_id": pub["id"], "enable_snat": True,
            "external_fixed_ips": [dict(x) for x in gw["fixed_ips"]],
        }
        self.create_port(priv, t0, device_id=rid,
                         device_owner="network:router_interface",
                         security_groups=[], status="ACTIVE",
                         fixed_ip=priv_gateway(self, priv))
        self.create_port(priv, t0, device_id="dhcp" + stable_id("dhcp", "private"),
                         device_owner="network:dhcp", security_groups=[],
                         status="ACTIVE")
        sg = self.add_security_group("default", "Default security group", t0,
                                     default=True)
        self.default_sg_id = sg["id"]

    # ---------------------------------------------------------- neutron
    def add_network(self, name: str, project_id: str, t: float, *,
                    external: bool, mtu: int = 1450, shared: bool = False) -> dict[str, Any]:
        nid = stable_id("network", name) if t == _seed_time() else new_id()
        net = {
            "id": nid, "name": name, "status": "ACTIVE", "subnets": [],
            "admin_state_up": True, "tenant_id": project_id,
            "project_id": project_id, "shared": shared,
            "router:external": external, "mtu": mtu,
            "port_security_enabled": True, "availability_zones": [AZ],
            "availability_zone_hints": [], "ipv4_address_scope": None,
            "ipv6_address_scope": None, "description": "", "tags": [],
            "is_default": external, "l2_adjacency": True,
            "dns_domain": "", "qos_policy_id": None,
            "created_at": t, "updated_at": t, "revision_number": 2,
        }
        self.networks[nid] = net
        return net

    def add_subnet(self, net: dict[str, Any], name: str, cidr: str, t: float,
                   dns: list[str] | None = None) -> dict[str, Any]:
        sid = stable_id("subnet", name) if t == _seed_time() else new_id()
        n = ipaddress.ip_network(cidr)
        hosts = list(n.hosts())
        sub = {
            "id": sid, "name": name, "network_id": net["id"],
            "tenant_id": net["tenant_id"], "project_id": net["project_id"],
            "ip_version": n.version, "cidr": cidr,
            "gateway_ip": str(hosts[0]), "enable_dhcp": True,
            "allocation_pools": [{"start": str(hosts[1]), "end": str(hosts[-1])}],
            "host_routes": [], "dns_nameservers": dns or [],
            "ipv6_address_mode": None, "ipv6_ra_mode": None,
            "subnetpool_id": None, "service_types": [], "description": "",
            "tags": [], "dns_publish_fixed_ip": False,
            "created_at": t, "updated_at": t, "revision_number": 0,
        }
        self.subnets[sid] = sub
        net["subnets"].append(sid)
        return sub

    def used_ips(self, net_id: str) -> set[str]:
        used = set()
        for p in self.ports.values():
            if p["network_id"] == net_id:
                used.update(f["ip_address"] for f in p["fixed_ips"])
        for f in self.floating_ips.values():
            if f["floating_network_id"] == net_id:
                used.add(f["floating_ip_address"])
        return used

    def allocate_ip(self, net: dict[str, Any], wanted: str | None = None) -> tuple[str, str] | None:
        """Return (subnet_id, ip) or None when the pool is exhausted."""
        used = self.used_ips(net["id"])
        for sid in net["subnets"]:
            sub = self.subnets[sid]
            pools = sub["allocation_pools"]
            for pool in pools:
                start = ipaddress.ip_address(pool["start"])
                end = ipaddress.ip_address(pool["end"])
                if wanted is not None:
                    w = ipaddress.ip_address(wanted)
                    if start <= w <= end or wanted == sub["gateway_ip"]:
                        if wanted in used:
                            return None
                        return sid, wanted
                    continue
                ip = start
                while ip <= end:
                    if str(ip) not in used:
                        return sid, str(ip)
                    ip += 1
        return None

    def create_port(self, net: dict[str, Any], t: float, *, device_id: str = "",
                    device_owner: str = "", project_id: str = PROJECT_ID,
                    security_groups: list[str] | None = None,
                    status: str = "DOWN", fixed_ip: str | None = None,
                    name: str = "") -> dict[str, Any]:
        fixed_ips, names = [], []
        if net["subnets"]:  # a network without a subnet gives its ports no address (as Neutron)
            alloc = self.allocate_ip(net, fixed_ip)
            if alloc is None:
                raise LookupError(net["id"])
            sid, ip = alloc
            fixed_ips = [{"subnet_id": sid, "ip_address": ip}]
            host = "host-" + ip.replace(".", "-").replace(":", "-")
            names = [{"ip_address": ip, "hostname": host, "fqdn": host + ".openstacklocal."}]
        pid = new_id()
        mac = "fa:16:3e:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))
        port = {
            "id": pid, "name": name, "network_id": net["id"],
            "tenant_id": project_id, "project_id": project_id,
            "mac_address": mac, "admin_state_up": True, "status": status,
            "device_id": device_id, "device_owner": device_owner,
            "fixed_ips": fixed_ips,
            "allowed_address_pairs": [], "extra_dhcp_opts": [],
            "security_groups": list(security_groups if security_groups is not None
                                    else ([self.default_sg_id] if hasattr(self, "default_sg_id") else [])),
            "description": "", "binding:vnic_type": "normal",
            "port_security_enabled": True, "dns_name": "",
            "dns_assignment": names,
            "qos_policy_id": None, "qos_network_policy_id": None,
            "propagate_uplink_status": False, "tags": [],
            "created_at": t, "updated_at": t, "revision_number": 1,
        }
        self.ports[pid] = port
        return port

    def add_security_group(self, name: str, description: str, t: float,
                           default: bool = False) -> dict[str, Any]:
        gid = stable_id("secgroup", name) if default else new_id()
        sg = {
            "id": gid, "name": name, "description": description,
            "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
            "stateful": True, "shared": False, "tags": [],
            "created_at": t, "updated_at": t, "revision_number": 1,
        }
        self.security_groups[gid] = sg
        for eth in ("IPv4", "IPv6"):
            self.add_rule(gid, "egress", eth, t)
            if default:
                self.add_rule(gid, "ingress", eth, t, remote_group_id=gid)
        return sg

    def add_rule(self, sg_id: str, direction: str, ethertype: str, t: float,
                 protocol: str | None = None, port_min: int | None = None,
                 port_max: int | None = None, remote_ip_prefix: str | None = None,
                 remote_group_id: str | None = None, description: str = "") -> dict[str, Any]:
        rid = new_id()
        rule = {
            "id": rid, "security_group_id": sg_id, "direction": direction,
            "ethertype": ethertype, "protocol": protocol,
            "port_range_min": port_min, "port_range_max": port_max,
            "remote_ip_prefix": remote_ip_prefix,
            "normalized_cidr": str(ipaddress.ip_network(remote_ip_prefix, strict=False))
            if remote_ip_prefix else None,
            "remote_group_id": remote_group_id,
            "remote_address_group_id": None, "description": description,
            "tenant_id": PROJECT_ID, "project_id": PROJECT_ID,
            "belongs_to_default_sg": sg_id == getattr(self, "default_sg_id", sg_id),
            "created_at": t, "updated_at": t, "revision_number": 0,
        }
        self.sg_rules[rid] = rule
        return rule

    def detach_floating_ips(self, port_id: str, t: float | None = None) -> None:
        """Floating IPs on a port that goes away are left unassociated."""
        for f in self.floating_ips.values():
            if f["port_id"] == port_id:
                f.update(port_id=None, fixed_ip_address=None, router_id=None, status="DOWN",
                         updated_at=now() if t is None else t)

    def find_sg(self, name_or_id: str) -> dict[str, Any] | None:
        sg = self.security_groups.get(name_or_id)
        if sg:
            return sg
        for g in self.security_groups.values():
            if g["name"] == name_or_id and owned(g):
                return g
        return None

    # ------------------------------------------------------------ nova
    def settle(self) -> None:
        """Apply every pending server transition whose time has come."""
        t = now()
        for sid in list(self.servers):
            s = self.servers[sid]
            while s.get("pending") and t >= s["pending"]["at"]:
                p = s.pop("pending")
                s["pending"] = None
                p["apply"](s, p["at"])
                if sid not in self.servers:
                    break

    def server_ports(self, server_id: str) -> list[dict[str, Any]]:
        ports = [p for p in self.ports.values() if p["device_id"] == server_id]
        ports.sort(key=lambda p: p["created_at"])
        return ports

    def addresses(self, server: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        if server["vm_state"] == "building":
            return out
        for p in self.server_ports(server["id"]):
            net = self.networks.get(p["network_id"])
            if not net:
                continue
            lst = out.setdefault(net["name"], [])
            for f in p["fixed_ips"]:
                ver = 6 if ":" in f["ip_address"] else 4
                lst.append({"version": ver, "addr": f["ip_address"],
                            "OS-EXT-IPS:type": "fixed",
                            "OS-EXT-IPS-MAC:mac_addr": p["mac_address"]})
            for fip in self.floating_ips.values():
                if fip["port_id"] == p["id"]:
                    lst.append({"version": 4, "addr": fip["floating_ip_address"],
                                "OS-EXT-IPS:type": "floating",
                                "OS-EXT-IPS-MAC:mac_addr": p["mac_address"]})
        return out

    def usage_counts(self) -> dict[str, int]:
        inst = cores = ram = 0
        for s in self.servers.values():
            if not owned(s):
                continue
            f = s["flavor"]
            inst += 1
            cores += f["vcpus"]
            ram += f["ram"]
            if s.get("old_flavor") and s["vm_state"] == "resized":
                # resources of both flavors are held until confirm/revert
                cores += max(0, s["old_flavor"]["vcpus"] - f["vcpus"])
                ram += max(0, s["old_flavor"]["ram"] - f["ram"])
        return {"instances": inst, "cores": cores, "ram": ram,
                "key_pairs": len(self.keypairs),
                "server_groups": 0, "server_group_members": 0,
                "metadata_items": 0, "injected_files": 0,
                "injected_file_content_bytes": 0,
                "injected_file_path_bytes": 0,
                "floating_ips": self.count_owned(self.floating_ips),
                "fixed_ips": 0,
                "security_groups": self.count_owned(self.security_groups),
                "security_group_rules": self.count_owned(self.sg_rules)}

    @staticmethod
    def count_owned(rows: dict[str, dict[str, Any]]) -> int:
        return sum(1 for r in rows.values() if owned(r))

    def neutron_usage(self) -> dict[str, int]:
        tables = {"network": self.networks, "subnet": self.subnets, "port": self.ports,
                  "router": self.routers, "floatingip": self.floating_ips,
                  "security_group": self.security_groups, "security_group_rule": self.sg_rules}
        used = {res: self.count_owned(rows) for res, rows in tables.items()}
        used.update(rbac_policy=0, subnetpool=0, trunk=0)
        return used

    def quota_of(self, service: str, project_id: str,
                 defaults: bool = False) -> tuple[dict[str, int], dict[str, int]]:
        """(limits, usage) of a project for "compute" or "network", after
        settling; another project (or ``defaults``) gets the default limits,
        and only the demo project has usage."""
        self.settle()
        mine = project_id == PROJECT_ID
        if service == "compute":
            limits = self.nova_quota if mine and not defaults else NOVA_QUOTA_DEFAULTS
            return limits, self.usage_counts() if mine else {}
        limits = self.neutron_quota if mine and not defaults else NEUTRON_QUOTA_DEFAULTS
        return limits, self.neutron_usage() if mine else {}

    def add_keypair(self, name: str, public_key: str, fingerprint: str,
                    type_: str = "ssh") -> dict[str, Any]:
        self.keypair_seq += 1
        rec = {"name": name, "public_key": public_key, "fingerprint": fingerprint,
               "type": type_, "created_at": now(), "seq": self.keypair_seq}
        self.keypairs[name] = rec
        return rec

    def find_flavor(self, ref: str) -> dict[str, Any] | None:
        ref = str(ref).rstrip("/").rsplit("/", 1)[-1]
        return self.flavors.get(ref)

    def find_image(self, ref: str) -> dict[str, Any] | None:
        ref = str(ref).rstrip("/").rsplit("/", 1)[-1]
        return self.images.get(ref)


def priv_gateway(state: State, net: dict[str, Any]) -> str:
    return state.subnets[net["subnets"][0]]["gateway_ip"]


def ssh_fingerprint(public_key: str) -> str:
    """Nova's MD5 fingerprint of an OpenSSH public key; ValueError if bad."""
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
        raise ValueError("not an ssh public key")
    try:
        blob = base64.b64decode(parts[1].encode(), validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError("bad base64") from exc
    if len(blob) < 11:
        raise ValueError("short key")
    digest = hashlib.md5(blob).hexdigest()  # noqa: S324 - nova uses md5
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))
