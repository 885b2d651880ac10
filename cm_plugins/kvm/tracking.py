"""Which libvirt objects one operation changed: a thin watcher around a test-driver connection.

The test hypervisor's state is saved as a journal of changed domains and volumes
(see testnode.py), so a change must cost the size of what it touched, not of the
whole hypervisor.  The provider uses the watched connection exactly like the
real one; every call that may change a domain or a volume marks it, and any
other change (a new pool or network) asks for a full save.
"""

from __future__ import annotations

from typing import Any

import libvirt

# Calls that change nothing: by prefix, so an unknown (new) call counts as a change, never the reverse.
READ_ONLY = ("XMLDesc", "name", "UUID", "ID", "OSType", "state", "info", "is", "interfaceAddresses", "path",
             "key", "autostart", "max", "blockInfo", "metadata", "get", "list", "num", "lookup",
             "storagePoolLookup", "storageVolLookup", "networkLookup", "newStream", "hasManagedSaveImage",
             "snapshotNum", "hasCurrentSnapshot")
# Calls on a connection or pool that make one new domain or volume (the result is what changed).
CREATORS = ("defineXML", "defineXMLFlags", "createXML", "createXMLFlags", "createXMLFrom")
WATCHED = (libvirt.virConnect, libvirt.virDomain, libvirt.virStoragePool, libvirt.virStorageVol,
           libvirt.virNetwork)


class Changes:
    """What one write session touched: domains by UUID, volumes by (pool, name), or everything."""

    def __init__(self) -> None:
        self.domains: dict[str, libvirt.virDomain] = {}
        self.volumes: set[tuple[str, str]] = set()
        self.everything = False

    def touch(self, target: Any, pool: str) -> None:
        if isinstance(target, libvirt.virDomain):
            self.domains[target.UUIDString()] = target
        elif isinstance(target, libvirt.virStorageVol):
            self.volumes.add((pool or target.storagePoolLookupByVolume().name(), target.name()))
        else:
            self.everything = True  # a pool, network or connection-wide change: rare, saved whole

    def __bool__(self) -> bool:
        return bool(self.everything or self.domains or self.volumes)


def _bare(value: Any) -> Any:
    return value._target if isinstance(value, Watched) else value


class Watched:
    """A libvirt object whose changing calls are recorded in ``changes``."""

    __slots__ = ("_target", "_changes", "_pool")

    def __init__(self, target: Any, changes: Changes, pool: str = "") -> None:
        self._target = target
        self._changes = changes
        self._pool = pool  # for a volume: its pool's name, known where it was found

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._wrap(item) for item in value]
        if isinstance(value, WATCHED):
            pool = self._target.name() if isinstance(self._target, libvirt.virStoragePool) else ""
            return Watched(value, self._changes, pool)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr
        if name.startswith(READ_ONLY):
            return lambda *args, **kwargs: self._wrap(attr(*map(_bare, args), **kwargs))
        creates = name in CREATORS and not isinstance(self._target, (libvirt.virDomain, libvirt.virStorageVol))

        def changing(*args: Any, **kwargs: Any) -> Any:
            if not creates:
                self._changes.touch(self._target, self._pool)  # before the call: a deleted volume has no pool
            result = self._wrap(attr(*map(_bare, args), **kwargs))
            if creates and isinstance(result, Watched):
                self._changes.touch(result._target, result._pool)
            return result

        return changing

    def __eq__(self, other: object) -> bool:
        return _bare(other) == self._target

    def __hash__(self) -> int:
        return hash(self._target)
