"""The provider contract every cloud kind implements (OpenStack, KVM, Comet, plugins).

Providers talk to one cloud and return plain value objects; they never touch
the local mirror: the commands put what providers return into it.  A verb a
cloud cannot do raises :class:`cm.errors.Unsupported` naming the cloud and verb.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from cm.errors import Unsupported


class State(str, Enum):
    """The shared VM states every provider maps its own states onto."""

    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    PAUSED = "paused"
    REBOOTING = "rebooting"
    ERROR = "error"
    DELETED = "deleted"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass
class Record:
    """Base of the value objects: fixed fields plus ``extra`` for what one cloud has."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Enum) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class VM(Record):
    name: str
    id: str
    state: State = State.UNKNOWN
    image: str = ""
    flavor: str = ""
    key: str = ""
    public_ips: list[str] = field(default_factory=list)
    private_ips: list[str] = field(default_factory=list)
    created: str = ""
    fault: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Image(Record):
    name: str
    id: str
    status: str = "active"
    size: int = 0
    format: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Flavor(Record):
    name: str
    id: str
    vcpus: int = 1
    ram: int = 0  # MiB
    disk: int = 0  # GiB
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Key(Record):
    name: str
    fingerprint: str = ""
    public_key: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BootSpec:
    """Everything a provider needs to create one VM."""

    name: str
    image: str
    flavor: str
    key_name: str = ""
    public_key: str = ""
    user: str = ""
    user_data: str = ""
    secgroups: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    public: bool = False
    # An address fixed ahead of boot by ``Provider.reserve_addresses`` (None: the cloud picks one at boot).
    reservation: Reservation | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reservation(Record):
    """An address a cloud holds for a VM that is not booted yet: its IP, and the MAC or port it comes with."""

    name: str  # the VM it is for
    address: str
    network: str = ""
    mac: str = ""
    id: str = ""  # the cloud's handle of the reservation (a Neutron port), if it has one
    extra: dict[str, Any] = field(default_factory=dict)


_NOT_VERBS = {"close", "config_from_env", "verbs", "require", "missing_settings"}


class Provider:
    """One cloud.  Subclasses set ``kind`` and override the verbs their cloud can do."""

    kind: ClassVar[str] = ""
    # Why this cloud cannot do a verb, by the verb's words ("assign public IPs"),
    # for a better one-line error than "cannot" alone; the verb stays unimplemented.
    unsupported_why: ClassVar[dict[str, str]] = {}
    # Whether a boot's --image/--flavor may be a unique beginning of a name (OpenStack) or must be
    # exact (kvm): `vm boot --dryrun` checks by the same rule the real boot uses.
    boot_matches_prefix: ClassVar[bool] = False
    # Settings `cm cloud add` insists on: each entry lists alternatives, one of which must be given.
    required_settings: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config
        # Set by the shell right after construction: where to say a one-time
        # notice, and a private directory for state the cloud itself cannot keep.
        self.notice: Callable[[str], None] = lambda text: print(text, file=sys.stderr)
        self.state_dir: Path | None = None

    @classmethod
    def verbs(cls) -> list[str]:
        """The contract's verbs this provider implements: what `cm cloud show` lists as its capabilities."""
        return sorted(name for name, base in vars(Provider).items()
                      if callable(base) and not name.startswith("_") and name not in _NOT_VERBS
                      and getattr(cls, name) is not base)

    def require(self, verb: str) -> None:
        """Raise the verb's one-line Unsupported now if this provider does not implement it,
        so a bulk command refuses up front instead of failing once per VM."""
        if verb not in type(self).verbs():
            base = getattr(Provider, verb)
            base(self, *([None] * (base.__code__.co_argcount - 1)))  # the contract's default raises

    @property
    def simulated(self) -> bool:
        """True where VMs are simulated and nothing really boots (libvirt's test hypervisor)."""
        return False

    @classmethod
    def missing_settings(cls, conf: dict[str, Any]) -> list[tuple[str, ...]]:
        """The entries of ``required_settings`` a new cloud's settings do not satisfy."""
        return [alternatives for alternatives in cls.required_settings if not any(conf.get(k) for k in alternatives)]

    @classmethod
    def config_from_env(cls, environ: dict[str, str]) -> dict[str, Any]:
        """A cloud configuration built from environment variables (an openrc)."""
        raise Unsupported(cls.kind or cls.__name__, "be configured from the environment")

    def _unsupported(self, verb: str) -> Unsupported:
        return Unsupported(self.name, verb, self.unsupported_why.get(verb, ""))

    def close(self) -> None:
        """Release connections; the default has none."""

    # -- VMs ---------------------------------------------------------------
    def list_vms(self) -> list[VM]:
        raise self._unsupported("list VMs")

    def get_vm(self, name: str) -> VM:
        """Return the VM called ``name``; raise NotFound if the cloud has none."""
        raise self._unsupported("show VMs")

    def create_vm(self, spec: BootSpec) -> VM:
        """Start creating a VM and return it without waiting for it to run."""
        raise self._unsupported("boot VMs")

    def start_vm(self, name: str) -> None:
        raise self._unsupported("start VMs")

    def stop_vm(self, name: str, timeout: float | None = None) -> None:
        """Shut the VM down gracefully, giving it ``timeout`` seconds (None: the cloud's own default)."""
        raise self._unsupported("stop VMs")

    def reboot_vm(self, name: str) -> None:
        raise self._unsupported("reboot VMs")

    def suspend_vm(self, name: str) -> None:
        raise self._unsupported("suspend VMs")

    def resume_vm(self, name: str) -> None:
        raise self._unsupported("resume VMs")

    def delete_vm(self, name: str) -> None:
        raise self._unsupported("delete VMs")

    def rename_vm(self, old: str, new: str) -> VM:
        raise self._unsupported("rename VMs")

    def resize_vm(self, name: str, flavor: str) -> VM:
        raise self._unsupported("resize VMs")

    def console_log(self, name: str, lines: int = 0) -> str:
        """Return what the VM printed on its console (the last ``lines`` if > 0)."""
        raise self._unsupported("show consoles")

    # -- the cloud's own clusters (optional) ----------------------------------------------
    def list_clusters(self) -> list[dict[str, Any]]:
        """Clusters the cloud itself keeps (Comet's virtual clusters), not those cm launched from recipes:
        one summary each with ``name``, ``source`` (what made it, e.g. "comet"), ``state``, ``nodes``
        (``role=N, ...``) and ``login`` (an address or "")."""
        raise self._unsupported("list clusters")

    # -- checkpoints and migration (optional) ----------------------------------------
    def save_vm(self, name: str) -> None:
        """Checkpoint the running VM's memory to disk and stop it; ``restore_vm`` continues it."""
        raise self._unsupported("save VMs")

    def restore_vm(self, name: str) -> None:
        """Continue a saved VM exactly where it stopped."""
        raise self._unsupported("restore VMs")

    def migrate_vm(self, name: str, host: str) -> VM:
        """Move the VM to ``host`` of this cloud: live while it runs, offline when it cannot be."""
        raise self._unsupported("migrate VMs")

    # -- addresses -----------------------------------------------------------
    def assign_public_ip(self, name: str) -> str:
        raise self._unsupported("assign public IPs")

    def release_public_ip(self, name: str) -> list[str]:
        raise self._unsupported("release public IPs")

    def reserve_addresses(self, names: list[str], network: str = "") -> dict[str, Reservation]:
        """Fix a private address on ``network`` (default: the cloud's) for each VM of ``names`` before it boots,
        so nodes can be told each other's addresses and boot at once; a name already holding one keeps it."""
        raise self._unsupported("reserve addresses")

    def release_addresses(self, names: list[str]) -> None:
        """Drop the reservations made for ``names`` (those that are left; the VMs may be gone already)."""
        raise self._unsupported("release addresses")

    def renew_addresses(self, held: list[Reservation]) -> None:
        """Make each reservation hold again, unchanged (same address, and MAC or port), once its VM is deleted,
        so a replacement VM of the same name boots on it; raise if one cannot be had back."""
        raise self._unsupported("renew reserved addresses")

    # -- images, flavors, keys -------------------------------------------------
    def list_images(self) -> list[Image]:
        raise self._unsupported("list images")

    def add_image(self, name: str, path: str) -> Image:
        raise self._unsupported("add images")

    def delete_image(self, name: str) -> None:
        raise self._unsupported("delete images")

    def list_flavors(self) -> list[Flavor]:
        raise self._unsupported("list flavors")

    def list_keys(self) -> list[Key]:
        raise self._unsupported("list keys")

    def upload_key(self, name: str, public_key: str) -> Key:
        raise self._unsupported("upload keys")

    def delete_key(self, name: str) -> None:
        raise self._unsupported("delete keys")

    # == Optional verbs: networks, security groups, floating IPs, quotas, limits, usage ==========
    # Appended for OpenStack-style clouds; a cloud without these keeps the defaults,
    # which raise Unsupported.  Groups, networks and IPs go into the mirror under
    # the kinds "secgroup", "network" and "ip" (see cm.inventory.FETCHERS).

    # -- networks ----------------------------------------------------------------------------
    def list_networks(self) -> list[Network]:
        raise self._unsupported("list networks")

    # -- security groups and their rules ---------------------------------------------------------
    def list_secgroups(self) -> list[SecGroup]:
        raise self._unsupported("list security groups")

    def get_secgroup(self, name: str) -> SecGroup:
        """The security group called ``name`` (or with that id), with its rules; NotFound if none."""
        raise self._unsupported("show security groups")

    def add_secgroup(self, name: str, description: str = "") -> SecGroup:
        raise self._unsupported("add security groups")

    def delete_secgroup(self, name: str) -> None:
        raise self._unsupported("delete security groups")

    def add_secgroup_rule(self, group: str, rule: SecRule) -> SecRule:
        """Add ``rule`` to ``group``; return it as the cloud stored it (with its id)."""
        raise self._unsupported("add security group rules")

    def delete_secgroup_rule(self, group: str, rule_id: str) -> None:
        raise self._unsupported("delete security group rules")

    # -- floating (public) IPs ---------------------------------------------------------------------
    def list_floating_ips(self) -> list[FloatingIP]:
        raise self._unsupported("list floating IPs")

    def create_floating_ip(self, network: str = "") -> FloatingIP:
        """Allocate a floating IP from ``network`` (default: the cloud's external network)."""
        raise self._unsupported("create floating IPs")

    def delete_floating_ip(self, address: str) -> None:
        raise self._unsupported("delete floating IPs")

    def attach_floating_ip(self, address: str, vm: str) -> FloatingIP:
        raise self._unsupported("attach floating IPs")

    def detach_floating_ip(self, address: str) -> FloatingIP:
        raise self._unsupported("detach floating IPs")

    # -- monitoring and live tuning ------------------------------------------------------------------
    def vm_stats(self, names: list[str]) -> list[VMStats]:
        """Cumulative counters of each running VM of ``names``, read by the hypervisor (others left out)."""
        raise self._unsupported("read VM statistics")

    def host_stats(self) -> list[VMStats]:
        """Cumulative counters of the physical hosts the cloud's VMs run on, where cm can read them."""
        raise self._unsupported("read host statistics")

    def set_vm_vcpus(self, name: str, count: int) -> int:
        """Give a running VM ``count`` vCPUs (hot-add); return the count it has now."""
        raise self._unsupported("change vCPUs of running VMs")

    def set_vm_memory(self, name: str, mib: int) -> int:
        """Set a running VM's memory through its balloon; return the MiB it has now."""
        raise self._unsupported("change memory of running VMs")

    # -- quotas, limits, usage ------------------------------------------------------------------------
    def quotas(self) -> list[dict[str, Any]]:
        """One dict per resource: ``{"service", "resource", "limit", "used"}`` (-1 = unlimited)."""
        raise self._unsupported("show quotas")

    def limits(self) -> list[dict[str, Any]]:
        """The absolute limits of the project: ``{"name", "value"}`` per limit."""
        raise self._unsupported("show limits")

    def usage(self, start: str, end: str) -> list[dict[str, Any]]:
        """Per-VM usage between two ISO dates: ``{"name", "state", "hours", "vcpus", "ram", "disk", ...}``."""
        raise self._unsupported("show usage")

    # -- batch jobs (HPC systems) ----------------------------------------------------------------------
    # A job is a dict: ``name`` (the job id as text), ``id``, ``state`` (the batch system's word, upper
    # case), ``job_name``, ``user``, ``partition``, ``nodes``, ...; they go into the mirror under the kind
    # "job" (cm.inventory.FETCHERS), merged with what only cm knows of them (cm.jobs.store).
    def list_jobs(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every job the batch system knows now (queued, running, just ended); only ``user``'s if given."""
        raise self._unsupported("list jobs")

    def get_jobs(self, ids: list[int]) -> dict[int, dict[str, Any]]:
        """The jobs ``ids`` by id, from accounting once the queue forgot them; ids it never had left out."""
        raise self._unsupported("show jobs")


# == Value objects of the optional verbs ==========================================================
@dataclass
class Network(Record):
    name: str
    id: str
    status: str = ""
    external: bool = False
    shared: bool = False
    subnets: list[str] = field(default_factory=list)  # CIDRs
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SecRule(Record):
    """One rule of a security group; ``port_min``/``port_max`` 0 means any port."""

    direction: str = "ingress"
    protocol: str = ""  # tcp, udp, icmp, or "" for any
    port_min: int = 0
    port_max: int = 0
    cidr: str = ""  # remote IP prefix; "" with remote_group = another group's members
    remote_group: str = ""
    ethertype: str = "IPv4"
    id: str = ""

    @property
    def name(self) -> str:
        """A readable one-line form: ``ingress tcp 22 0.0.0.0/0``."""
        ports = "" if not self.port_min else (str(self.port_min) if self.port_min == self.port_max
                                               else f"{self.port_min}-{self.port_max}")
        where = self.cidr or (f"group:{self.remote_group}" if self.remote_group else "any")
        return " ".join(p for p in (self.direction, self.protocol or "any", ports, where, self.ethertype) if p)


@dataclass
class SecGroup(Record):
    name: str
    id: str
    description: str = ""
    rules: list[dict[str, Any]] = field(default_factory=list)  # SecRule.to_dict()s
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FloatingIP(Record):
    name: str  # the address itself: unique in a cloud, and what users type
    id: str
    status: str = ""
    vm: str = ""  # the VM it is attached to, "" if free
    fixed_ip: str = ""
    network: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VMStats(Record):
    """Cumulative counters of one VM (or host) read at ``time``; rates come from two readings.

    A counter a source cannot read stays 0; ``mem_total_kib`` 0 means memory is unknown.
    """

    name: str
    time: float  # epoch seconds of the reading
    vcpus: int = 1  # CPUs the VM has now (host: logical CPUs)
    cpu_ns: int = 0  # CPU time used, all vCPUs together
    vcpu_ns: list[int] = field(default_factory=list)  # per vCPU
    steal_ns: int = 0  # time runnable vCPUs waited for a host CPU (libvirt's vcpu delay, /proc/stat steal)
    iowait_ns: int = 0  # idle time with I/O outstanding (from /proc/stat: hosts, guests over ssh)
    mem_total_kib: int = 0
    mem_used_kib: int = 0  # in use by the guest (balloon: available - usable), else the host process's RSS
    mem_max_kib: int = 0  # the most the balloon may give it
    disk_rd_bytes: int = 0
    disk_wr_bytes: int = 0
    disk_time_ns: int = 0  # time I/O requests were in flight (busy time)
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    host: str = ""  # the physical host it runs on, where known
    extra: dict[str, Any] = field(default_factory=dict)
