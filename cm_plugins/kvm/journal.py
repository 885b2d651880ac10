"""The test hypervisor's journal: one JSON line per changed domain or volume, appended per change.

A record holds the object's whole new definition (or none: deleted), so replaying
a journal twice, or onto a snapshot that already has its changes, gives the same
state.  A line cut short by a kill is the journal's end: everything before it stands.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import libvirt

from cm_plugins.kvm.tracking import Changes

# Run states that mean "started" when a domain is replayed (paused ones are started, then paused).
STARTED = {libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
           libvirt.VIR_DOMAIN_SHUTDOWN, libvirt.VIR_DOMAIN_PMSUSPENDED}


def _gone(exc: libvirt.libvirtError) -> bool:
    return exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL,
                                    libvirt.VIR_ERR_NO_STORAGE_POOL)


def _domain_record(uuid: str, dom: libvirt.virDomain) -> dict[str, Any]:
    try:
        return {"domain": uuid, "xml": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), "state": dom.state()[0]}
    except libvirt.libvirtError as exc:
        if not _gone(exc):
            raise
        return {"domain": uuid, "xml": None}


def _volume_record(conn: libvirt.virConnect, pool: str, name: str) -> dict[str, Any]:
    try:
        return {"volume": [pool, name], "xml": conn.storagePoolLookupByName(pool).storageVolLookupByName(name)
                .XMLDesc(0)}
    except libvirt.libvirtError as exc:
        if not _gone(exc):
            raise
        return {"volume": [pool, name], "xml": None}


def records(conn: libvirt.virConnect, changes: Changes) -> list[dict[str, Any]]:
    """The current definitions of what ``changes`` touched; deletions first (a new VM may reuse a name)."""
    found = [_domain_record(uuid, dom) for uuid, dom in changes.domains.items()]
    found += [_volume_record(conn, pool, name) for pool, name in sorted(changes.volumes)]
    return sorted(found, key=lambda record: record["xml"] is not None)


def append(path: Path, entries: list[dict[str, Any]]) -> None:
    """Add ``entries`` with one write (a kill leaves at most a cut last line, which read() drops)."""
    if not entries:
        return
    data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in entries).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def read(path: Path) -> list[dict[str, Any]]:
    """The journal's records, up to the first line that is not a whole record."""
    try:
        lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        return []
    entries = []
    for line in lines[:-1]:  # the part after the last newline is a cut write, or empty
        try:
            entry = json.loads(line)
        except ValueError:
            break
        if not isinstance(entry, dict):
            break
        entries.append(entry)
    return entries


def _remove_domain(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def _lookup(find: Any, key: str) -> Any:
    try:
        return find(key)
    except libvirt.libvirtError as exc:
        if not _gone(exc):
            raise
        return None


def put_domain(conn: libvirt.virConnect, xml: str, state: int) -> None:
    """Define a domain (replacing one of its name the journal deletes later) and bring it to ``state``."""
    try:
        dom = conn.defineXML(xml)
    except libvirt.libvirtError:
        # Its name still belongs to a domain the journal deletes later: the later record wins anyway.
        name = re.search(r"<name>([^<]*)</name>", xml)
        clash = _lookup(conn.lookupByName, name.group(1)) if name else None
        if clash is None:
            raise
        _remove_domain(clash)
        dom = conn.defineXML(xml)
    if state in STARTED:
        dom.create()
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.suspend()


def _put_domain(conn: libvirt.virConnect, entry: dict[str, Any]) -> None:
    old = _lookup(conn.lookupByUUIDString, entry["domain"])
    if old is not None:
        _remove_domain(old)
    if entry.get("xml") is not None:
        put_domain(conn, entry["xml"], int(entry.get("state") or 0))


def _put_volume(conn: libvirt.virConnect, entry: dict[str, Any]) -> None:
    pool_name, name = entry["volume"]
    pool = _lookup(conn.storagePoolLookupByName, pool_name)
    if pool is None:
        return  # its pool is gone: so is the volume
    old = _lookup(pool.storageVolLookupByName, name)
    if old is not None:
        old.delete(0)
    if entry.get("xml") is not None:
        pool.createXML(entry["xml"], 0)


def replay(conn: libvirt.virConnect, entries: list[dict[str, Any]]) -> None:
    """Apply journal records, in order, to a connection opened on the snapshot they follow."""
    for entry in entries:
        if "domain" in entry:
            _put_domain(conn, entry)
        elif "volume" in entry:
            _put_volume(conn, entry)
