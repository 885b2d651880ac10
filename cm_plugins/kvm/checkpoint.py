"""Checkpoints and migration of kvm VMs: save, restore, and moving a VM between the cloud's hosts.

``save`` is libvirt's managed save (the memory goes to a file the daemon keeps beside
the domain, and the domain stops); ``restore`` starts the domain from that file, so
the guest continues exactly where it stopped.  A kvm cloud may list the libvirt hosts
its VMs can move between::

    hosts:
      h1: qemu:///system                          # the cloud's own uri is one of them
      h2: {uri: qemu+tcp://10.0.0.2/system, migrate_uri: tcp://10.0.0.2}
      h3: {uri: qemu+ssh://lab/system, tunnelled: true}   # memory through libvirtd's own connection
    migrate_storage: copy                         # copy (disks copied) or shared (same paths on every host)
    migrate_max_downtime: 100                     # ms the guest may stand still at the switch-over

`cm vm migrate NAME --to h2` moves a running VM live (peer to peer) and a stopped one
offline (its definition only).  A VM on another host is still found by every verb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import libvirt

from cm.errors import ConfigError, Conflict, ProviderError, UsageError
from cm_plugins.kvm.connection import connect_error, shown_uri, translate

if TYPE_CHECKING:
    from cm.provider import VM
    from cm_plugins.kvm.provider import KvmProvider

LIVE = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST \
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
OFFLINE = libvirt.VIR_MIGRATE_OFFLINE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE \
    | libvirt.VIR_MIGRATE_PEER2PEER
STORAGE = {"copy": libvirt.VIR_MIGRATE_NON_SHARED_DISK, "shared": libvirt.VIR_MIGRATE_UNSAFE}


# -- hosts ----------------------------------------------------------------------------------------
def hosts(provider: KvmProvider) -> dict[str, dict[str, Any]]:
    """The cloud's hosts by name: ``{"uri", "migrate_uri", "tunnelled"}`` (empty if it lists none)."""
    raw = provider.config.get("hosts") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"cloud '{provider.name}': hosts must map host names to libvirt URIs")
    found = {}
    for name, value in raw.items():
        entry = {"uri": value} if isinstance(value, str) else dict(value or {})
        if not entry.get("uri"):
            raise ConfigError(f"cloud '{provider.name}': host '{name}' needs a libvirt uri")
        found[str(name)] = {"uri": str(entry["uri"]), "migrate_uri": str(entry.get("migrate_uri") or ""),
                            "tunnelled": bool(entry.get("tunnelled"))}
    return found


def host_connection(provider: KvmProvider, uri: str) -> libvirt.virConnect:
    """An open connection to one of the cloud's other hosts, kept for the provider's life."""
    cache: dict[str, libvirt.virConnect] = provider.__dict__.setdefault("_host_conns", {})
    conn = cache.get(uri)
    if conn is None or not conn.isAlive():
        try:
            conn = cache[uri] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            raise connect_error(exc, uri) from None
    return conn


def close_hosts(provider: KvmProvider) -> None:
    """Close the connections to the cloud's other hosts (a long-lived collector keeps them open)."""
    for conn in provider.__dict__.pop("_host_conns", {}).values():
        try:
            conn.close()
        except libvirt.libvirtError:
            pass  # gone already


def other_hosts(provider: KvmProvider) -> dict[str, str]:
    """Host name -> URI of every host but the one the cloud's own uri reaches."""
    own = provider.hv.resolve()
    return {name: h["uri"] for name, h in hosts(provider).items() if h["uri"] != own}


def host_of(provider: KvmProvider, dom: libvirt.virDomain) -> str:
    """The name of the host ``dom`` is on ("" when the cloud lists no hosts)."""
    conn = dom.connect()
    # libvirt may spell a URI differently from cm.yaml: know our own connections by identity first
    known = {id(c): uri for uri, c in provider.__dict__.get("_host_conns", {}).items()}
    if conn is provider.hv.__dict__.get("_conn"):
        uri = provider.hv.uri
    elif id(conn) in known:
        uri = known[id(conn)]
    else:
        try:
            uri = conn.getURI()
        except libvirt.libvirtError:
            return ""
    for name, h in hosts(provider).items():
        if h["uri"] == uri:
            return name
    return ""


def elsewhere(provider: KvmProvider, name: str) -> libvirt.virDomain | None:
    """The domain called ``name`` on another host of the cloud, or None."""
    for uri in other_hosts(provider).values():
        try:
            return host_connection(provider, uri).lookupByName(name)
        except libvirt.libvirtError:
            continue
    return None


def other_domains(provider: KvmProvider) -> list[libvirt.virDomain]:
    """Every domain on the cloud's other hosts (a host that does not answer is skipped)."""
    found = []
    for uri in other_hosts(provider).values():
        try:
            found += host_connection(provider, uri).listAllDomains()
        except (libvirt.libvirtError, ProviderError):
            continue
    return found


# -- save and restore ------------------------------------------------------------------------------
def save(provider: KvmProvider, name: str) -> None:
    """Managed save: the memory to disk, the domain stopped (restore continues it)."""
    with provider.hv.use("save VMs", write=True) as conn:
        dom = provider._domain(conn, name)
        if not dom.isActive():
            if dom.hasManagedSaveImage(0):
                return  # saved already
            raise Conflict(f"{name} is stopped, so it has no memory to save; start it first (cm vm start {name})")
        try:
            dom.managedSave(0)
        except libvirt.libvirtError as exc:
            raise translate(exc, provider.name, provider.hv.uri, "save VMs") from None


def restore(provider: KvmProvider, name: str) -> None:
    """Start the domain from its managed save image."""
    with provider.hv.use("restore VMs", write=True) as conn:
        dom = provider._domain(conn, name)
        if dom.isActive():
            if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                dom.resume()
            return  # running already (restored before)
        if not dom.hasManagedSaveImage(0):
            raise Conflict(f"{name} has no saved state to restore; save it first (cm vm save {name}) "
                           f"or start it afresh (cm vm start {name})")
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise translate(exc, provider.name, provider.hv.uri, "restore VMs") from None


# -- migration ----------------------------------------------------------------------------------------
def _destination(provider: KvmProvider, host: str) -> dict[str, Any]:
    known = hosts(provider)
    if host not in known:
        listed = ", ".join(sorted(known)) or "none: list them under hosts: for this cloud in cm.yaml"
        raise UsageError(f"cloud '{provider.name}' has no host '{host}' (hosts: {listed})")
    return known[host]


def _refresh_pools(provider: KvmProvider, uri: str) -> None:
    """Shared storage: let the destination see volumes made since it last looked (the VM's disk and seed)."""
    conn = provider.hv._live() if uri == provider.hv.resolve() else host_connection(provider, uri)
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            pass  # busy: the migration says what it misses


def _limit_downtime(provider: KvmProvider, dom: libvirt.virDomain) -> None:
    """Keep the guest's stand-still at the switch-over within ``migrate_max_downtime`` ms (libvirt's default: 300).

    QEMU's limit covers only its estimate of the last memory pass; device state and the switch-over
    itself come on top (a 100 ms limit measured 65-111 ms here), so QEMU gets half of the budget."""
    try:
        budget = int(provider.config.get("migrate_max_downtime") or 100)
    except (TypeError, ValueError):
        raise ConfigError(f"cloud '{provider.name}': migrate_max_downtime must be a number of milliseconds") from None
    try:
        dom.migrateSetMaxDowntime(max(1, budget // 2), 0)
    except libvirt.libvirtError:
        pass  # an older libvirt accepts it only during a migration: its default applies


def migrate(provider: KvmProvider, name: str, host: str) -> VM:
    """Move the VM to ``host``: live (peer to peer) while it runs, offline when it is stopped."""
    target = _destination(provider, host)
    storage = str(provider.config.get("migrate_storage") or "copy")
    if storage not in STORAGE:
        raise ConfigError(f"cloud '{provider.name}': migrate_storage must be copy or shared")
    with provider.hv.use("migrate VMs", write=True) as conn:
        dom = provider._domain(conn, name)
        source = dom.connect().getURI()
        if host_of(provider, dom) == host:
            raise Conflict(f"{name} is already on host '{host}'")
        if not dom.isActive() and dom.hasManagedSaveImage(0):
            raise Conflict(f"{name} is saved; restore it first (cm vm restore {name}), then migrate it live")
        live = bool(dom.isActive())
        params: dict[str, Any] = {}
        if live and target["migrate_uri"]:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = target["migrate_uri"]
        if storage == "shared":
            _refresh_pools(provider, target["uri"])
        if live:
            _limit_downtime(provider, dom)
        tunnel = libvirt.VIR_MIGRATE_TUNNELLED if target["tunnelled"] else 0
        flags = (LIVE | tunnel | STORAGE[storage]) if live else OFFLINE
        try:
            dom.migrateToURI3(target["uri"], params, flags)
        except libvirt.libvirtError as exc:
            error = translate(exc, provider.name, source, "migrate VMs")
            raise type(error)(f"migrating {name} to host '{host}' ({shown_uri(target['uri'])}) failed: "
                              f"{error}") from None
    return provider.get_vm(name)
