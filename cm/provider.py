"""The provider contract every cloud kind implements (OpenStack, KVM, Comet, plugins).

Providers talk to one cloud and return plain value objects; they never touch
the local mirror: the commands put what providers return into it.  A verb a
cloud cannot do raises :class:`cm.errors.Unsupported` naming the cloud and verb.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
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
    extra: dict[str, Any] = field(default_factory=dict)


class Provider:
    """One cloud.  Subclasses set ``kind`` and override the verbs their cloud can do."""

    kind: ClassVar[str] = ""
    # Optional verbs beyond the VM lifecycle this provider supports, so help and
    # `cm cloud show` can say what a cloud can do without trying it.
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config

    @classmethod
    def config_from_env(cls, environ: dict[str, str]) -> dict[str, Any]:
        """A cloud configuration built from environment variables (an openrc)."""
        raise Unsupported(cls.kind or cls.__name__, "be configured from the environment")

    def _unsupported(self, verb: str) -> Unsupported:
        return Unsupported(self.name, verb)

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

    def stop_vm(self, name: str, timeout: float = 60.0) -> None:
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

    # -- addresses -----------------------------------------------------------
    def assign_public_ip(self, name: str) -> str:
        raise self._unsupported("assign public IPs")

    def release_public_ip(self, name: str) -> list[str]:
        raise self._unsupported("release public IPs")

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
