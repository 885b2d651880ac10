"""libvirt's stock ``default`` storage pool and network, made on a local daemon that lacks them.

A packaged libvirt normally ships both, but a daemon started by hand (or a
fresh ``qemu:///session``) has neither, and cm's shipped configuration names
them.  Like virt-install and virt-manager, cm then creates them: the pool as a
directory pool (``/var/lib/libvirt/images`` for the system daemon,
``~/.local/share/libvirt/images`` for the session one), the network as
libvirt's usual NAT network with DHCP on 192.168.122.0/24 (system daemon
only: a session daemon cannot make bridges).  Both are built, started and
marked autostart.  Only objects named ``default`` on ``qemu:///system`` or
``qemu:///session`` are ever made; anything else stays the user's choice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import libvirt

from cm.errors import ProviderError
from cm_plugins.kvm.connection import first_line, shown_uri

STOCK_NAME = "default"
SYSTEM_POOL_DIR = Path("/var/lib/libvirt/images")
STOCK_NETWORK_XML = """<network>
  <name>default</name>
  <forward mode='nat'/>
  <bridge name='virbr0' stp='on' delay='0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'>
    <dhcp>
      <range start='192.168.122.2' end='192.168.122.254'/>
    </dhcp>
  </ip>
</network>
"""
STOCK_SUBNET = "192.168.122.0/24"
T = TypeVar("T")
_lock = threading.Lock()  # the threads of a parallel boot make a missing pool or network once


def local_daemon(uri: str) -> str:
    """"system" or "session" for a local qemu daemon (qemu:///system, qemu:///session), else ""."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return ""
    if parts.scheme not in ("qemu", "qemu+unix") or parts.netloc:
        return ""
    return {"/system": "system", "/session": "session"}.get(parts.path.rstrip("/") or "/", "")


def pool_dir(daemon: str) -> Path:
    """Where the stock pool keeps its volumes."""
    return SYSTEM_POOL_DIR if daemon == "system" else Path.home() / ".local/share/libvirt/images"


def make_pool(conn: libvirt.virConnect, name: str, directory: Path) -> libvirt.virStoragePool:
    """Define, build, start and autostart a directory pool; undone if any step fails."""
    xml = (f"<pool type='dir'><name>{escape(name)}</name>"
           f"<target><path>{escape(str(directory))}</path></target></pool>")
    try:
        pool = conn.storagePoolDefineXML(xml, 0)
    except libvirt.libvirtError as exc:
        return _made_meanwhile(conn.storagePoolLookupByName, name, exc)
    try:
        pool.build(0)  # makes the directory; one that exists is kept as it is
        pool.create(0)
        pool.setAutostart(1)
    except BaseException:
        _undo(pool)
        raise
    return pool


def make_network(conn: libvirt.virConnect) -> libvirt.virNetwork:
    """Define, start and autostart libvirt's stock NAT network ``default``; undone if any step fails."""
    try:
        net = conn.networkDefineXML(STOCK_NETWORK_XML)
    except libvirt.libvirtError as exc:
        return _made_meanwhile(conn.networkLookupByName, STOCK_NAME, exc)
    try:
        net.create()
        net.setAutostart(1)
    except BaseException:
        _undo(net)
        raise
    return net


def _made_meanwhile(lookup: Callable[[str], T], name: str, error: libvirt.libvirtError) -> T:
    """The object another cm process defined while this one tried to; else the define's ``error``."""
    try:
        return lookup(name)
    except libvirt.libvirtError:
        raise error from None


def _undo(obj: libvirt.virStoragePool | libvirt.virNetwork) -> None:
    try:
        if obj.isActive():
            obj.destroy()
        obj.undefine()
    except libvirt.libvirtError:
        pass  # best effort: the original error is what the user needs


def stock_pool(conn: libvirt.virConnect, name: str, uri: str, cloud: str,
               notice: Callable[[str], None]) -> libvirt.virStoragePool | None:
    """The pool ``name`` made as libvirt's stock 'default' on a local daemon; None where cm makes none."""
    daemon = local_daemon(uri)
    if name != STOCK_NAME or not daemon:
        return None
    with _lock:
        try:
            return conn.storagePoolLookupByName(name)  # another thread made it meanwhile
        except libvirt.libvirtError:
            pass
        directory = pool_dir(daemon)
        try:
            pool = make_pool(conn, name, directory)
        except libvirt.libvirtError as exc:
            raise ProviderError(
                f"cloud '{cloud}': libvirt at {shown_uri(uri)} has no storage pool '{name}', and cm could not "
                f"create it as a directory pool in {directory} ({first_line(exc)}); create one (virsh "
                "pool-define-as, pool-build, pool-start) or set pool: NAME for this cloud in cm.yaml") from None
    notice(f"cm: cloud '{cloud}': libvirt at {shown_uri(uri)} had no storage pool '{name}'; created it as a "
           f"directory pool in {directory} (started, and autostarted from now on)")
    return pool


def stock_network(conn: libvirt.virConnect, name: str, uri: str, cloud: str,
                  notice: Callable[[str], None]) -> libvirt.virNetwork | None:
    """The network ``name`` made as libvirt's stock NAT 'default' on a local system daemon; None elsewhere."""
    if name != STOCK_NAME or local_daemon(uri) != "system":
        return None
    with _lock:
        try:
            return conn.networkLookupByName(name)
        except libvirt.libvirtError:
            pass
        try:
            net = make_network(conn)
        except libvirt.libvirtError as exc:
            raise ProviderError(
                f"cloud '{cloud}': libvirt at {shown_uri(uri)} has no network '{name}', and cm could not create "
                f"libvirt's stock NAT network on {STOCK_SUBNET} ({first_line(exc)}); create one (virsh net-define, "
                "net-start) or set network: NAME (or \"\") for this cloud in cm.yaml") from None
    notice(f"cm: cloud '{cloud}': libvirt at {shown_uri(uri)} had no network '{name}'; created libvirt's usual "
           f"NAT network with DHCP on {STOCK_SUBNET} (started, and autostarted from now on)")
    return net
