"""The kvm cloud kind: VMs on libvirt (local or remote), from cloud images with cloud-init.

A kvm cloud in cm.yaml::

    kind: kvm
    uri: auto            # qemu:///system, qemu:///session, qemu+ssh://me@lab/system, test:///default
    pool: default        # storage pool for images, VM disks and seeds
    network: default     # libvirt network for the VMs ("" for none)
    flavors: {small: {vcpus: 1, ram: 1024, disk: 10}}   # ram in MiB, disk in GiB (default: the shipped ones)
    domain_type: auto    # kvm, qemu (software emulation) or auto (kvm only where it works)
    cmdline: console=ttyS0 panic=-1   # kernel command line of kernel+initrd images that bring none
    shutdown_timeout: 60 # seconds `vm stop` waits for the guest to power off
    console_dir: ...     # where the hypervisor host keeps serial console logs
    console_source: auto # log (the log file), stream (attach for console_wait s) or auto
    console_wait: 3      # seconds `vm console` listens when it attaches to the live console

`cm image add NAME PATH` takes a qcow2 or raw disk image file, or a kernel +
initrd pair for direct kernel boot: ``kernel=KERNEL,initrd=INITRD`` or a
directory holding one ``vmlinuz*``/``vmlinux*`` and one ``initrd*``/``initramfs*``;
either may add the root disk the kernel boots and its command line
(``,disk=DISK,cmdline=root=/dev/vda rw console=ttyS0``, or a ``*.qcow2`` and
a ``cmdline`` file in the directory).

`cm vm boot --user-data FILE` puts FILE into the NoCloud seed unchanged
(cm's own settings, the hostname and your key, go beside it as vendor-data),
and ``--network-config FILE`` adds a NoCloud network-config.

A local daemon (qemu:///system or qemu:///session) that lacks the pool or the
network named ``default`` gets libvirt's stock one, once (see :mod:`stock`).

Each VM is a domain with a copy-on-write overlay on its image (a blank disk
for kernel images) and a NoCloud seed ISO, both volumes in the pool named
``<vm>-disk-<id>`` and ``<vm>-seed-<id>``; `cm vm delete` removes all three.
"""

from __future__ import annotations

import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import libvirt

from cm.bulk import proceed
from cm.errors import ConfigError, Conflict, NotFound, ProviderError, Unsupported, UsageError, stopped
from cm.provider import VM, BootSpec, Flavor, Image, Provider
from cm_plugins.kvm import checkpoint, console, images, seed, stock
from cm_plugins.kvm.connection import DOMAIN_TYPES, Hypervisor, connect_error, guest_kind, stderr_notice
from cm_plugins.kvm.domain import DomainSpec, console_log_path, disk_sources, domain_xml, to_vm
from cm_plugins.kvm.image_verbs import ImageVerbs
from cm_plugins.kvm.reserve import AddressVerbs
from cm_plugins.kvm.stats import StatsVerbs

GIB = 1 << 30
UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


class KvmProvider(AddressVerbs, ImageVerbs, StatsVerbs, Provider):
    """One libvirt hypervisor as a cm cloud."""

    kind = "kvm"
    gates_calls = True  # creates, deletes, renames and power actions first ask cm.bulk.proceed()
    required_settings = (("uri",),)  # without one, a remote lab would silently be this machine's libvirt
    unsupported_why = {"assign public IPs": "VMs get addresses on the libvirt network only",
                       "release public IPs": "VMs get addresses on the libvirt network only"}

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        self.hv = Hypervisor(name, config, self._state_dir, self._notice)
        self._guest: tuple[str, str] | None = None
        self._said: set[str] = set()

    def _state_dir(self) -> Path:
        """Where cm keeps this provider's files: the shell's home (``state_dir``), else cm's home."""
        state_dir = getattr(self, "state_dir", None)
        if state_dir is not None:
            return Path(state_dir)
        from cm.config import home

        return home()

    @property
    def simulated(self) -> bool:
        return self.hv.is_test

    def _notice(self, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            (getattr(self, "notice", None) or stderr_notice)(text)

    def close(self) -> None:
        checkpoint.close_hosts(self)
        self.hv.close()

    # -- settings ---------------------------------------------------------------------------
    def _setting(self, key: str, default: Any) -> Any:
        value = self.config.get(key)
        return default if value in (None, "") else value

    def _number(self, key: str, default: float) -> float:
        try:
            return float(self._setting(key, default))
        except (TypeError, ValueError):
            raise ConfigError(f"cloud '{self.name}': {key} must be a number of seconds") from None

    @property
    def pool_name(self) -> str:
        return str(self._setting("pool", "default"))

    def _shipped_flavors(self) -> dict[str, Any]:
        """The flavors of the kvm cloud in cm's shipped defaults/cm.yaml."""
        from cm.config import Config

        for cloud in (Config.load(self._state_dir()).shipped.get("clouds") or {}).values():
            if isinstance(cloud, dict) and cloud.get("kind") == "kvm" and cloud.get("flavors"):
                return dict(cloud["flavors"])
        return {}

    def _flavors(self) -> dict[str, Flavor]:
        raw = self.config.get("flavors") or self._shipped_flavors()
        flavors = {}
        for name, values in raw.items():
            try:
                vcpus, ram, disk = (int(values[k]) for k in ("vcpus", "ram", "disk"))
            except (KeyError, TypeError, ValueError):
                raise ConfigError(f"cloud '{self.name}': flavor '{name}' needs whole numbers vcpus, ram (MiB) "
                                  "and disk (GiB) in cm.yaml") from None
            flavors[str(name)] = Flavor(name=str(name), id=str(name), vcpus=vcpus, ram=ram, disk=disk)
        return flavors

    def list_flavors(self) -> list[Flavor]:
        return sorted(self._flavors().values(), key=lambda f: (f.ram, f.vcpus, f.name))

    def _flavor(self, name: str) -> Flavor:
        flavors = self._flavors()
        if name not in flavors:
            known = ", ".join(f.name for f in self.list_flavors())
            raise NotFound(f"unknown flavor '{name}' on cloud '{self.name}' (flavors: {known})")
        return flavors[name]

    # -- libvirt objects ----------------------------------------------------------------------
    def _pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        name = self.pool_name
        try:
            pool = conn.storagePoolLookupByName(name)
        except libvirt.libvirtError:
            pool = stock.stock_pool(conn, name, self.hv.uri, self.name, self._notice)
            if pool is None:
                raise ConfigError(
                    f"cloud '{self.name}': libvirt at {self.hv.shown_uri} has no storage pool '{name}'; create it "
                    f"(virsh pool-define-as {name} dir --target /var/lib/libvirt/images && virsh pool-build {name} "
                    f"&& virsh pool-start {name}) or set pool: NAME for this cloud in cm.yaml") from None
        if not pool.isActive():
            raise ProviderError(f"cloud '{self.name}': storage pool '{name}' is not running; "
                                f"start it: virsh -c {self.hv.shown_uri} pool-start {name}")
        return pool

    def _networks(self, conn: libvirt.virConnect, wanted: list[str]) -> list[str]:
        names = wanted or [str(self._setting("network", ""))]
        names = [n for n in names if n and n != "none"]
        for name in names:
            try:
                net = conn.networkLookupByName(name)
            except libvirt.libvirtError:
                net = None if wanted else stock.stock_network(conn, name, self.hv.uri, self.name, self._notice)
                if net is None:
                    raise ConfigError(f"cloud '{self.name}': libvirt at {self.hv.shown_uri} has no network '{name}'; "
                                      "create it (virsh net-define, net-start) or set network: NAME (or \"\") "
                                      "for this cloud in cm.yaml") from None
            if not net.isActive():
                raise ProviderError(f"cloud '{self.name}': network '{name}' is not running; "
                                    f"start it: virsh -c {self.hv.shown_uri} net-start {name}")
        return names

    def _domain(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError:
            moved = checkpoint.elsewhere(self, name) if not self.hv.is_test else None
            if moved is not None:  # migrated to another host of this cloud
                return moved
            raise NotFound(f"no VM '{name}' on cloud '{self.name}' (see `cm vm list --refresh`)") from None

    def _guest_kind(self, conn: libvirt.virConnect) -> tuple[str, str]:
        if self._guest is None:
            wanted = str(self._setting("domain_type", "auto"))
            if wanted not in DOMAIN_TYPES:
                raise ConfigError(f"cloud '{self.name}': domain_type must be one of {', '.join(DOMAIN_TYPES)}")
            self._guest = guest_kind(conn, wanted, self.hv.is_local)
        return self._guest

    # -- VMs --------------------------------------------------------------------------------------
    def _vm(self, dom: libvirt.virDomain) -> VM:
        host = checkpoint.host_of(self, dom) if self.config.get("hosts") else ""
        return to_vm(dom, {"uri": self.hv.shown_uri, **({"host": host} if host else {})})

    def list_vms(self) -> list[VM]:
        with self.hv.use("list VMs") as conn:
            vms = []
            for dom in conn.listAllDomains() + (checkpoint.other_domains(self) if not self.hv.is_test else []):
                try:
                    vms.append(self._vm(dom))
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                        raise
                    # deleted while we looked: it is not there any more
            return sorted(vms, key=lambda vm: vm.name)

    def get_vm(self, name: str) -> VM:
        with self.hv.use("show VMs") as conn:
            return self._vm(self._domain(conn, name))

    def _check_spec(self, spec: BootSpec) -> None:
        if "/" in spec.name or not spec.name:
            raise UsageError(f"'{spec.name}' cannot be a VM name")
        if spec.public:
            raise self._unsupported("assign public IPs")
        if spec.secgroups:
            raise Unsupported(self.name, "apply security groups")
        if spec.key_name and not spec.public_key:
            raise UsageError(f"key '{spec.key_name}' has no public key cm can put in the VM's seed; "
                             "give a .pub file with --key or add the key with `cm key add`")

    def _make_disk(self, pool: libvirt.virStoragePool, volume: str, image: Image, flavor: Flavor) -> str:
        """The VM's disk: a qcow2 overlay on the image's disk, or a blank raw disk for kernel-only images."""
        if image.format == "kernel+initrd":
            xml = images.volume_xml(volume, flavor.disk * GIB, "raw", sparse=True)
        else:
            kernel = image.format == "kernel+initrd+disk"
            base, fmt = (image.extra["disk"], image.extra["disk_format"]) if kernel else \
                (image.extra["path"], image.format)
            backing_size = pool.storageVolLookupByName(Path(base).name).info()[1] if kernel else image.size
            xml = images.volume_xml(volume, max(flavor.disk * GIB, backing_size), "qcow2", sparse=True,
                                    backing=base, backing_format=fmt or "raw")
        pool.createXML(xml, 0)
        return volume

    def _make_seed(self, conn: libvirt.virConnect, pool: libvirt.virStoragePool, volume: str, spec: BootSpec,
                   instance_id: str) -> str:
        files = seed.nocloud(instance_id, spec.name, spec.user, spec.public_key, spec.user_data,
                             str(spec.extra.get("network_config") or ""))
        if self.hv.is_test:  # the test hypervisor keeps no data: the volume's size is all there is
            pool.createXML(images.volume_xml(volume, seed.iso_size(files), "raw"), 0)
            return volume
        data = seed.iso_bytes(files)
        vol = pool.createXML(images.volume_xml(volume, len(data), "raw"), 0)
        images.upload_bytes(conn, vol, data)
        return volume

    def _console_log(self, name: str, short: str) -> str:
        if self.hv.is_test:
            return ""
        directory = self._setting("console_dir", "")
        if not directory:
            session = self.hv.uri.split("?")[0].endswith("/session")
            directory = str(Path.home() / ".cache/libvirt/qemu/log") if session else "/var/log/libvirt/qemu"
        if self.hv.is_local:
            Path(directory).mkdir(parents=True, exist_ok=True)
        return f"{directory}/cm-{name}-{short}.console.log"

    def create_vm(self, spec: BootSpec) -> VM:
        self._check_spec(spec)
        flavor = self._flavor(spec.flavor)
        with self.hv.use("boot VMs", write=True) as conn:
            try:
                conn.lookupByName(spec.name)
                raise Conflict(f"a VM named '{spec.name}' already exists on cloud '{self.name}'")
            except libvirt.libvirtError:
                pass  # the name is free
            pool = self._pool(conn)
            image = self._image(pool, spec.image)
            networks = self._networks(conn, spec.networks)
            domain_type, arch = self._guest_kind(conn)
            instance_id = str(uuid.uuid4())
            short = instance_id[:8]
            kernel = bool(image.extra.get("kernel"))
            blank = image.format == "kernel+initrd"  # no disk of its own: the VM gets an empty raw one
            made: list[str] = []
            proceed()  # after a Ctrl-C, nothing new is created (cm.bulk)
            try:
                made.append(self._make_disk(pool, f"{spec.name}-disk-{short}.{'img' if blank else 'qcow2'}",
                                            image, flavor))
                made.append(self._make_seed(conn, pool, f"{spec.name}-seed-{short}.iso", spec, instance_id))
                dom = conn.defineXML(domain_xml(DomainSpec(
                    name=spec.name, uuid=instance_id, domain_type=domain_type, arch=arch, vcpus=flavor.vcpus,
                    ram_mib=flavor.ram, pool=pool.name(), disk_volume=made[0],
                    disk_format="raw" if blank else "qcow2", seed_volume=made[1], networks=networks,
                    macs=self._reserved_mac(spec, networks),
                    kernel=image.extra.get("kernel", ""), initrd=image.extra.get("initrd", ""),
                    cmdline=self._cmdline(conn, image) if kernel else "",
                    console_log=self._console_log(spec.name, short),
                    metadata={"image": image.name, "flavor": flavor.name, "key": spec.key_name, "user": spec.user,
                              "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})))
                try:
                    dom.create()
                except libvirt.libvirtError:
                    dom.undefine()
                    raise
            except BaseException:
                for volume in made:  # leave nothing behind from a boot that failed
                    self._delete_volume_named(pool, volume)
                raise
            return self._vm(dom)

    def _delete_volume(self, vol: libvirt.virStorageVol) -> None:
        try:
            vol.delete(0)
        except libvirt.libvirtError:
            pass  # best effort while undoing; the original error is what the user needs

    def _delete_volume_named(self, pool: libvirt.virStoragePool, name: str) -> None:
        try:
            self._delete_volume(pool.storageVolLookupByName(name))
        except libvirt.libvirtError:
            pass

    # -- lifecycle ----------------------------------------------------------------------------------
    def start_vm(self, name: str) -> None:
        with self.hv.use("start VMs", write=True) as conn:
            dom = self._domain(conn, name)
            state = dom.state()[0]
            proceed()
            if state == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            elif not dom.isActive():
                dom.create()

    def stop_vm(self, name: str, timeout: float | None = None) -> None:
        """Ask the guest to power off (ACPI) and wait ``timeout`` seconds (None: shutdown_timeout of the
        cloud); say so clearly when it ignores the request."""
        wait = timeout if timeout is not None else self._number("shutdown_timeout", 60)
        longer = "give a longer --timeout" if timeout is not None else "raise shutdown_timeout in cm.yaml"
        with self.hv.use("stop VMs", write=True) as conn:
            dom = self._domain(conn, name)
            if not dom.isActive():
                return
            proceed()
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()  # a paused guest cannot see the power button
            dom.shutdown()
            deadline = time.monotonic() + wait
            while dom.isActive():
                if time.monotonic() >= deadline:
                    raise ProviderError(
                        f"{name} ignored the shutdown request for {wait:g} s (its OS may not handle the ACPI "
                        f"power button) and is still running; force it off with "
                        f"`virsh -c {self.hv.shown_uri} destroy {name}` or {longer}")
                time.sleep(max(0.0, min(0.2, deadline - time.monotonic())))

    def _active(self, conn: libvirt.virConnect, name: str, verb: str) -> libvirt.virDomain:
        dom = self._domain(conn, name)
        if not dom.isActive():
            raise stopped(name, verb)
        return dom

    def reboot_vm(self, name: str) -> None:
        with self.hv.use("reboot VMs", write=True) as conn:
            dom = self._active(conn, name, "rebooted")
            proceed()
            dom.reboot(0)

    def suspend_vm(self, name: str) -> None:
        with self.hv.use("suspend VMs", write=True) as conn:
            dom = self._active(conn, name, "suspended")
            if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
                proceed()
                dom.suspend()

    def resume_vm(self, name: str) -> None:
        with self.hv.use("resume VMs", write=True) as conn:
            dom = self._active(conn, name, "resumed")
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                proceed()
                dom.resume()

    def delete_vm(self, name: str) -> None:
        """Remove the domain, its disk and seed volumes, and its console log: nothing is left."""
        with self.hv.use("delete VMs", write=True) as conn:
            dom = self._domain(conn, name)
            root = ET.fromstring(dom.XMLDesc(0))
            proceed()
            if dom.isActive():
                dom.destroy()
            try:
                dom.undefineFlags(UNDEFINE_FLAGS)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                    raise
                dom.undefine()  # drivers without those flags have nothing they would remove
            left = self._delete_vm_volumes(conn, root)
            self._release_macs(conn, root)
            self._delete_console_log(console_log_path(root))
        if left:
            raise ProviderError(f"deleted {name}, but could not delete its volumes {', '.join(left)}")

    def _delete_vm_volumes(self, conn: libvirt.virConnect, root: ET.Element) -> list[str]:
        """Delete the volumes cm made for the VM (never a disk attached by hand); return what stayed."""
        left = []
        for disk in disk_sources(root):
            try:
                if disk["pool"]:
                    vol = conn.storagePoolLookupByName(disk["pool"]).storageVolLookupByName(disk["volume"])
                elif disk["file"]:
                    vol = conn.storageVolLookupByPath(disk["file"])
                else:
                    continue
            except libvirt.libvirtError:
                continue  # already gone
            if images.VM_VOLUME.match(vol.name()):
                try:
                    vol.delete(0)
                except libvirt.libvirtError:
                    left.append(vol.name())
        return left

    def _delete_console_log(self, path: str) -> None:
        if path and self.hv.is_local:
            try:
                Path(path).unlink(missing_ok=True)
            except OSError:
                pass  # not ours to remove (another user's daemon): it is only a log

    def rename_vm(self, old: str, new: str) -> VM:
        with self.hv.use("rename VMs", write=True) as conn:
            dom = self._domain(conn, old)
            try:
                conn.lookupByName(new)
                raise Conflict(f"a VM named '{new}' already exists on cloud '{self.name}'")
            except libvirt.libvirtError:
                pass  # the new name is free
            if dom.isActive():
                raise Conflict(f"{old} is running; libvirt renames only stopped VMs: `cm vm stop {old}` first")
            proceed()
            dom.rename(new, 0)
            return self._vm(self._domain(conn, new))

    def save_vm(self, name: str) -> None:
        checkpoint.save(self, name)

    def restore_vm(self, name: str) -> None:
        checkpoint.restore(self, name)

    def migrate_vm(self, name: str, host: str) -> VM:
        return checkpoint.migrate(self, name, host)

    def console_log(self, name: str, lines: int = 0) -> str:
        """The serial console: virtlogd's log file, or (remote, unreadable) a few seconds of the live stream."""
        if self.hv.is_test:
            raise Unsupported(self.name, "show consoles", "libvirt's test hypervisor runs no guest, so it has none")
        with self.hv.use("show consoles") as conn:
            dom = self._domain(conn, name)
            path = console_log_path(ET.fromstring(dom.XMLDesc(0)))
            active = dom.isActive()
        source = str(self._setting("console_source", "auto"))
        # virtlogd makes the log when the VM starts: a running VM without one here logs where we cannot
        # see (a daemon in another mount namespace, with /var/log/libvirt of its own): attach instead
        visible = path and (Path(path).exists() or not active or source == "log")
        if visible and self.hv.is_local and source in ("auto", "log"):
            text = console.read_log(path)
            if text is not None:
                return console.clean(text, lines)
            if source == "log":
                raise ProviderError(f"cannot read {name}'s console log {path}: run cm as root or its owner")
        if not active:
            raise ProviderError(f"{name} is stopped and its console log is not readable here"
                                + (f" ({path} on the hypervisor's host)" if path else ""))
        try:
            text = console.capture(self.hv.uri, name, self._number("console_wait", 3))
        except libvirt.libvirtError as exc:  # the fresh connection could not be opened
            raise connect_error(exc, self.hv.uri) from None
        return console.clean(text, lines)

