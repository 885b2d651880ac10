"""The virtual nodes as libvirt domains: transient domains created at power on, gone at power off."""

from __future__ import annotations

import threading
from string import Template
from typing import Any
from xml.sax.saxutils import escape, quoteattr

# libvirt's domain states -> the node 'state' the API shows
STATES = {0: "nostate", 1: "active", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
          7: "suspended"}


class HypervisorError(Exception):
    """libvirt refused or failed; the message is libvirt's."""


def _libvirt() -> Any:
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)  # errors come back as exceptions, not stderr noise
    return libvirt


class Hypervisors:
    """One open connection per libvirt URI, kept (the test driver's state lives as long as it)."""

    def __init__(self) -> None:
        self._conns: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}  # per URI: a slow host does not hold up the others

    def conn(self, uri: str) -> Any:
        with self._lock:
            opening = self._opening.setdefault(uri, threading.Lock())
        with opening:
            conn = self._conns.get(uri)
            if conn is not None:
                try:
                    if conn.isAlive():
                        return conn
                except Exception:  # noqa: BLE001 - a dead connection is reopened below
                    pass
            libvirt = _libvirt()
            try:
                conn = libvirt.open(uri)
            except libvirt.libvirtError as exc:
                raise HypervisorError(f"{uri}: {exc.get_error_message()}") from exc
            with self._lock:
                self._conns[uri] = conn
            return conn

    def _domain(self, uri: str, name: str) -> Any | None:
        libvirt = _libvirt()
        try:
            return self.conn(uri).lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise HypervisorError(f"{uri}: {exc.get_error_message()}") from exc

    def _call(self, uri: str, name: str, what: str, *args: Any) -> None:
        libvirt = _libvirt()
        dom = self._domain(uri, name)
        if dom is None:
            raise HypervisorError(f"{name} is not running on {uri}")
        try:
            getattr(dom, what)(*args)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{name}: {exc.get_error_message()}") from exc

    def state(self, uri: str, name: str) -> str:
        dom = self._domain(uri, name)
        if dom is None:
            return "shutoff"
        return STATES.get(dom.state()[0], "nostate")

    def running(self, uri: str) -> set[str]:
        """Names of the domains running (or paused) on ``uri``."""
        libvirt = _libvirt()
        try:
            return {d.name() for d in self.conn(uri).listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{uri}: {exc.get_error_message()}") from exc

    def power_on(self, uri: str, name: str, xml: str) -> None:
        """Create the transient domain unless it already runs."""
        libvirt = _libvirt()
        dom = self._domain(uri, name)
        try:
            if dom is not None:
                if not dom.isActive():
                    dom.create()
                return
            self.conn(uri).createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{name}: {exc.get_error_message()}") from exc

    def power_off(self, uri: str, name: str) -> None:
        """Pull the plug; a domain that does not run is already off."""
        libvirt = _libvirt()
        dom = self._domain(uri, name)
        if dom is None:
            return
        try:
            if dom.isActive():
                dom.destroy()
            if dom.isPersistent():
                dom.undefine()
        except libvirt.libvirtError as exc:
            if self._domain(uri, name) is not None:
                raise HypervisorError(f"{name}: {exc.get_error_message()}") from exc

    def shutdown(self, uri: str, name: str) -> None:
        self._call(uri, name, "shutdown")

    def reboot(self, uri: str, name: str) -> None:
        self._call(uri, name, "reboot", 0)

    def reset(self, uri: str, name: str) -> None:
        self._call(uri, name, "reset", 0)

    def change_media(self, uri: str, name: str, iso_path: str) -> None:
        """Insert (or, with an empty path, eject) the CD-ROM of a running domain.

        Forced: a guest that mounted the old disc keeps its tray locked, and an unforced
        eject only asks it to open (libvirt gives up after a few seconds: "timed out waiting
        to open tray").  Swapping a running node's ISO is what the user asked for."""
        libvirt = _libvirt()
        dom = self._domain(uri, name)
        if dom is None:
            return  # applied at the next power on
        try:
            dom.updateDeviceFlags(cdrom_xml(iso_path), libvirt.VIR_DOMAIN_AFFECT_LIVE
                                  | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)
        except libvirt.libvirtError as exc:
            raise HypervisorError(f"{name}: cannot change the CD-ROM: {exc.get_error_message()}") from exc

    def close(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing at exit
                    pass
            self._conns.clear()


def cdrom_xml(iso_path: str) -> str:
    source = f"<source file={quoteattr(iso_path)}/>" if iso_path else ""
    return (f"<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>{source}"
            "<target dev='sda' bus='sata'/><readonly/></disk>")


def domain_xml(template: str, **values: Any) -> str:
    """The node's domain XML from the cluster's template (string.Template, values XML-escaped)."""
    iso = str(values.pop("iso_path", ""))
    safe = {k: escape(str(v), {"'": "&apos;", '"': "&quot;"}) for k, v in values.items()}
    return Template(template).safe_substitute(safe, iso_disk=cdrom_xml(iso))
