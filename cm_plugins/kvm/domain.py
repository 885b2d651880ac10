"""Domain XML for cm's VMs, and reading libvirt domains back as cm VMs."""

from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import libvirt

from cm.provider import VM, State

# cm's own element in <metadata>: what the VM was booted from, which libvirt does not keep.
CM_NS = "https://github.com/cloudmesh/cm/kvm/1"
META_KEYS = ("image", "flavor", "key", "user", "created")

# libvirt's (state, reason) -> the shared states.  A libvirt "suspend" pauses the
# vCPUs (reason "user"); it is what `cm vm suspend` does, so it reads as suspended.
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: State.PENDING,
    libvirt.VIR_DOMAIN_RUNNING: State.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: State.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: State.SUSPENDED,
    libvirt.VIR_DOMAIN_SHUTDOWN: State.RUNNING,  # shutting down: still running until it is off
    libvirt.VIR_DOMAIN_SHUTOFF: State.STOPPED,
    libvirt.VIR_DOMAIN_CRASHED: State.ERROR,
    libvirt.VIR_DOMAIN_PMSUSPENDED: State.SUSPENDED,
}
FAULTS = {
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR):
        "paused on a disk I/O error (is the storage pool full?)",
    (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_CRASHED): "the guest crashed",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED): "the guest crashed",
    (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_FAILED): "the hypervisor failed to start it",
    (libvirt.VIR_DOMAIN_CRASHED, 0): "the guest crashed",
}
TRANSIENT = {(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP): State.PENDING}


@dataclass
class DomainSpec:
    """Everything the domain XML is made of."""

    name: str
    uuid: str
    domain_type: str  # kvm, qemu or test
    arch: str
    vcpus: int
    ram_mib: int
    pool: str
    disk_volume: str
    disk_format: str  # qcow2 (an overlay) or raw (a blank disk for kernel images)
    seed_volume: str
    networks: list[str] = field(default_factory=list)
    macs: dict[str, str] = field(default_factory=dict)  # network -> the MAC its DHCP host entry reserved
    kernel: str = ""  # paths on the hypervisor's host, for direct kernel boot
    initrd: str = ""
    cmdline: str = ""
    console_log: str = ""  # serial log file on the hypervisor's host ("" = none)
    metadata: dict[str, str] = field(default_factory=dict)


def _metadata_xml(values: dict[str, str]) -> str:
    items = "".join(f"<cm:{k}>{escape(str(v))}</cm:{k}>" for k, v in values.items() if k in META_KEYS and v)
    return f"<metadata><cm:vm xmlns:cm={quoteattr(CM_NS)}>{items}</cm:vm></metadata>"


def _os_xml(spec: DomainSpec) -> str:
    boot = "<boot dev='hd'/>"
    if spec.kernel:
        boot = (f"<kernel>{escape(spec.kernel)}</kernel><initrd>{escape(spec.initrd)}</initrd>"
                f"<cmdline>{escape(spec.cmdline)}</cmdline>")
    return f"<os><type arch={quoteattr(spec.arch)}>hvm</type>{boot}</os>"


def _serial_xml(spec: DomainSpec) -> str:
    # virtlogd writes the serial console to the log file, which is what `cm vm console` reads.
    log = f"<log file={quoteattr(spec.console_log)} append='off'/>" if spec.console_log else ""
    return (f"<serial type='pty'>{log}<target port='0'/></serial>"
            "<console type='pty'><target type='serial' port='0'/></console>")


def _mac_xml(mac: str) -> str:
    return f"<mac address={quoteattr(mac)}/>" if mac else ""


def _devices_xml(spec: DomainSpec) -> str:
    pool = quoteattr(spec.pool)
    disk = (f"<disk type='volume' device='disk'><driver name='qemu' type={quoteattr(spec.disk_format)}/>"
            f"<source pool={pool} volume={quoteattr(spec.disk_volume)}/><target dev='vda' bus='virtio'/></disk>")
    # A SATA CD-ROM works on both the i440fx and q35 machines; cloud-init finds it by its label.
    seed = ("<disk type='volume' device='cdrom'><driver name='qemu' type='raw'/>"
            f"<source pool={pool} volume={quoteattr(spec.seed_volume)}/><target dev='sda' bus='sata'/>"
            "<readonly/></disk>")
    nic = "".join(f"<interface type='network'>{_mac_xml(spec.macs.get(net, ''))}<source network={quoteattr(net)}/>"
                  "<model type='virtio'/></interface>" for net in spec.networks)
    extra = ""
    if spec.domain_type != "test":  # entropy makes cloud images boot faster; the test driver has no rng
        extra = "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
    return f"<devices>{disk}{seed}{nic}{_serial_xml(spec)}{extra}</devices>"


def domain_xml(spec: DomainSpec) -> str:
    """The XML of a new cm VM."""
    cpu = "<cpu mode='host-passthrough'/>" if spec.domain_type == "kvm" else ""
    return (f"<domain type={quoteattr(spec.domain_type)}><name>{escape(spec.name)}</name>"
            f"<uuid>{spec.uuid}</uuid>{_metadata_xml(spec.metadata)}"
            f"<memory unit='MiB'>{spec.ram_mib}</memory><vcpu>{spec.vcpus}</vcpu>{cpu}"
            f"{_os_xml(spec)}<features><acpi/><apic/></features>"
            "<on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>"
            f"{_devices_xml(spec)}</domain>")


# -- reading domains back ------------------------------------------------------------------
def metadata(root: ET.Element) -> dict[str, str]:
    """cm's metadata of a domain (empty for domains cm did not create)."""
    found = root.find(f"metadata/{{{CM_NS}}}vm")
    if found is None:
        return {}
    return {child.tag.split("}", 1)[-1]: child.text or "" for child in found}


def disk_sources(root: ET.Element) -> list[dict[str, str]]:
    """The disks of a domain: {device, pool, volume, file}."""
    disks = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        attrs = dict(source.attrib) if source is not None else {}
        disks.append({"device": disk.get("device", "disk"), "pool": attrs.get("pool", ""),
                      "volume": attrs.get("volume", ""), "file": attrs.get("file", attrs.get("dev", ""))})
    return disks


def console_log_path(root: ET.Element) -> str:
    log = root.find("devices/serial/log")
    return log.get("file", "") if log is not None else ""


def map_state(state: int, reason: int) -> tuple[State, str]:
    """The shared state of a libvirt (state, reason), and the fault if it is an error."""
    if (state, reason) in TRANSIENT:
        return TRANSIENT[(state, reason)], ""
    fault = FAULTS.get((state, reason), "")
    if state == libvirt.VIR_DOMAIN_CRASHED:
        fault = fault or FAULTS[(state, 0)]
    if fault:
        return State.ERROR, fault
    return STATES.get(state, State.UNKNOWN), ""


def addresses(dom: libvirt.virDomain) -> list[str]:
    """IPv4 addresses of a running domain: DHCP leases first, then the guest agent."""
    for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                   libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT):
        try:
            interfaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:
            continue  # this source is not available for this URI or guest: try the next
        found = [a["addr"] for iface in interfaces.values() for a in (iface.get("addrs") or [])
                 if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and _usable(a["addr"])]
        if found:
            return found
    return []


def _usable(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not (ip.is_loopback or ip.is_link_local)


def _has_saved_state(dom: libvirt.virDomain) -> bool:
    """Whether `cm vm save` left the domain's memory on disk for `cm vm restore`."""
    try:
        return bool(dom.hasManagedSaveImage(0))
    except libvirt.libvirtError:
        return False


def to_vm(dom: libvirt.virDomain, extra: dict[str, Any] | None = None) -> VM:
    """A cm VM from a libvirt domain."""
    root = ET.fromstring(dom.XMLDesc(0))
    state, reason = dom.state()
    shared, fault = map_state(state, reason)
    meta = metadata(root)
    ips = addresses(dom) if dom.isActive() else []
    memory = root.find("memory")
    ram = int(memory.text or 0) // 1024 if memory is not None and memory.get("unit", "KiB") == "KiB" else 0
    info = {"uuid": dom.UUIDString(), "domain_type": root.get("type", ""),
            "vcpus": int(root.findtext("vcpu") or 0), "ram": ram, "managed": bool(meta),
            "libvirt_state": f"{state}:{reason}", "console_log": console_log_path(root),
            "saved": state == libvirt.VIR_DOMAIN_SHUTOFF and _has_saved_state(dom),
            **(extra or {})}
    return VM(name=dom.name(), id=dom.UUIDString(), state=shared, image=meta.get("image", ""),
              flavor=meta.get("flavor", ""), key=meta.get("key", ""), private_ips=ips,
              created=meta.get("created", ""), fault=fault, extra=info)
