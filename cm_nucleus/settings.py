"""The service's configuration file: users, allocations, hosts, clusters and their nodes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class SettingsError(Exception):
    """The configuration file is missing, malformed or inconsistent."""


@dataclass
class User:
    name: str
    password_hash: str
    email: str
    allocations: list[str]


@dataclass
class NodeSpec:
    """One virtual node as configured: where it may run and its size."""

    name: str
    cluster: str
    kind: str  # "frontend" or "compute"
    hosts: list[str]  # Slurm nodes (computes) or the one hypervisor host (frontend)
    cpus: int = 1
    memory: int = 512  # MiB
    disksize: int = 10  # GiB
    mac: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterSpec:
    name: str
    description: str
    project: str
    vlan: int
    allocations: list[str]
    frontend: NodeSpec
    computes: list[NodeSpec]
    domain_xml: str  # a string.Template of the libvirt domain


@dataclass
class Settings:
    path: Path
    database: Path
    state_dir: Path
    host: str
    port: int
    base_path: str
    public_url: str
    callback_url: str
    token_ttl: int
    timestamp_window: int
    reconcile_interval: float
    slurm_env: dict[str, str]
    partition: str
    hosts: dict[str, str]  # Slurm node -> libvirt URI
    users: dict[str, User]
    clusters: dict[str, ClusterSpec]
    max_walltime_mins: int = 14 * 24 * 60

    @property
    def iso_dir(self) -> Path:
        return self.state_dir / "iso"

    @property
    def console_dir(self) -> Path:
        return self.state_dir / "consoles"

    @property
    def job_dir(self) -> Path:
        return self.state_dir / "jobs"


DEFAULT_DOMAIN = """<domain type='$domain_type'>
  <name>$domain</name>
  <memory unit='MiB'>$memory</memory>
  <vcpu>$cpus</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='cdrom'/><boot dev='hd'/></os>
  <features><acpi/></features>
  <devices>
    $iso_disk
    <serial type='pty'><log file='$console_log' append='on'/><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
  </devices>
</domain>
"""


def _need(mapping: dict[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise SettingsError(f"{where}: '{key}' is required")
    return mapping[key]


def _expand(expression: str) -> list[str]:
    import hostlist

    try:
        return hostlist.expand_hostlist(str(expression))
    except hostlist.BadHostlist as exc:
        raise SettingsError(f"bad hostlist '{expression}': {exc}") from exc


def _users(raw: dict[str, Any]) -> dict[str, User]:
    users = {}
    for name, conf in (raw or {}).items():
        conf = conf or {}
        if "password" in conf:
            raise SettingsError(f"users.{name}: give 'password_hash' (argon2, see `python -m cm_nucleus hash`), "
                                "never a clear password")
        digest = str(_need(conf, "password_hash", f"users.{name}"))
        if not digest.startswith("$argon2"):
            raise SettingsError(f"users.{name}: password_hash must be an argon2 hash")
        users[str(name)] = User(str(name), digest, str(conf.get("email") or name),
                                [str(a) for a in conf.get("allocations") or []])
    return users


def _node(conf: dict[str, Any], name: str, cluster: str, kind: str, hosts: list[str]) -> NodeSpec:
    return NodeSpec(name=name, cluster=cluster, kind=kind, hosts=hosts, cpus=int(conf.get("cpus", 1)),
                    memory=int(conf.get("memory", 512)), disksize=int(conf.get("disksize", 10)),
                    extra={k: v for k, v in conf.items()
                           if k in ("pub_ip", "pub_mac", "pub_netmask", "gateway", "dns1", "dns2", "ntp")})


def _cluster(name: str, conf: dict[str, Any], hosts: dict[str, str], base: Path) -> ClusterSpec:
    where = f"clusters.{name}"
    front = _need(conf, "frontend", where)
    front_host = str(_need(front, "host", f"{where}.frontend"))
    if front_host not in hosts:
        raise SettingsError(f"{where}.frontend: host '{front_host}' is not in 'hosts'")
    frontend = _node(front, str(front.get("name") or name), name, "frontend", [front_host])
    computes: list[NodeSpec] = []
    for group in conf.get("computes") or []:
        allowed = _expand(_need(group, "hosts", f"{where}.computes"))
        for host in allowed:
            if host not in hosts:
                raise SettingsError(f"{where}.computes: host '{host}' is not in 'hosts'")
        for node in _expand(_need(group, "name", f"{where}.computes")):
            computes.append(_node(group, node, name, "compute", allowed))
    names = [frontend.name, *(c.name for c in computes)]
    if len(set(names)) != len(names):
        raise SettingsError(f"{where}: node names repeat")
    template = DEFAULT_DOMAIN
    if conf.get("domain_xml"):
        path = Path(conf["domain_xml"])
        template = (path if path.is_absolute() else base / path).read_text()
    allocations = [str(a) for a in conf.get("allocations") or []]
    return ClusterSpec(name=name, description=str(conf.get("description", "")), project=str(conf.get("project", "")),
                       vlan=int(conf.get("vlan", 0)), allocations=allocations, frontend=frontend, computes=computes,
                       domain_xml=template)


def load(path: str | Path, port: int | None = None) -> Settings:
    """Read and check the configuration file."""
    import yaml

    path = Path(path).resolve()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML") from exc
    if not isinstance(raw, dict):
        raise SettingsError(f"{path}: expected a mapping")
    try:
        return _settings(path, raw, port)
    except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a value of the wrong shape somewhere
        raise SettingsError(f"{path}: malformed configuration ({type(exc).__name__}: {exc})") from exc


def _settings(path: Path, raw: dict[str, Any], port: int | None) -> Settings:
    for key in ("listen", "slurm", "hosts", "users", "clusters"):
        if raw.get(key) is not None and not isinstance(raw[key], dict):
            raise SettingsError(f"{path}: '{key}' must be a mapping")
    for name, conf in (raw.get("clusters") or {}).items():
        if not isinstance(conf, dict) or not isinstance(conf.get("frontend"), dict):
            raise SettingsError(f"{path}: clusters.{name} must be a mapping with a 'frontend' mapping")
    base = path.parent
    state_dir = Path(raw.get("state_dir") or base / "nucleus-state")
    listen = raw.get("listen") or {}
    host, port = str(listen.get("host", "127.0.0.1")), int(port or listen.get("port", 8000))
    base_path = "/" + str(raw.get("base_path", "nucleus")).strip("/")
    public = str(raw.get("public_url") or f"http://{host}:{port}{base_path}").rstrip("/")
    hosts = {str(k): str(v) for k, v in (raw.get("hosts") or {}).items()}
    for name in hosts:
        if not NAME.match(name):
            raise SettingsError(f"hosts: bad Slurm node name '{name}'")
    slurm = raw.get("slurm") or {}
    env = {"SLURM_CONF": str(slurm["conf"])} if slurm.get("conf") else {}
    clusters = {str(n): _cluster(str(n), c or {}, hosts, base) for n, c in (raw.get("clusters") or {}).items()}
    return Settings(path=path, database=Path(raw.get("database") or state_dir / "nucleus.db"), state_dir=state_dir,
                    host=host, port=port, base_path=base_path, public_url=public,
                    callback_url=str(raw.get("callback_url") or public).rstrip("/"),
                    token_ttl=int(raw.get("token_ttl", 86400)), timestamp_window=int(raw.get("timestamp_window", 1800)),
                    reconcile_interval=float(raw.get("reconcile_interval", 10)), slurm_env=env,
                    partition=str(slurm.get("partition", "")), hosts=hosts, users=_users(raw.get("users")),
                    clusters=clusters, max_walltime_mins=int(raw.get("max_walltime_mins", 14 * 24 * 60)))
