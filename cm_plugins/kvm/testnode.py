"""A persistent fake hypervisor: libvirt's test driver backed by a node file under the cm home.

libvirt's test driver lives inside one process and forgets everything when its
last connection closes, so `cm vm boot` in one process and `cm vm stop` in the
next would never meet.  This module keeps the test driver's state in a
``<node>`` XML file (``<cm home>/kvm-test/<cloud>.xml``, 0600) plus a journal
beside it: a change appends the new definitions of the domains and volumes it
touched (journal.py, tracking.py), and the node file is rewritten atomically
only when the journal has grown as big as it, and when a process closes its
connection.  A file lock keeps two cm processes from interleaving their changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import libvirt

from cm_plugins.kvm import journal
from cm_plugins.kvm.nodeload import HEADER, BrokenNode, open_node
from cm_plugins.kvm.tracking import Changes, Watched

# The test driver's own XML namespace: <test:runstate> restores a domain's state.
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
# The journal is folded into the snapshot once it outgrows both the snapshot and this.
MIN_JOURNAL = 256 * 1024

# Where the fake pool claims to keep its volumes (nothing is ever written there).
FAKE_POOL_ROOT = "/var/lib/cm-test-hypervisor"
# A fresh fallback hypervisor offers this image, so the shipped default
# (`image: cirros`) boots on a machine that has never downloaded anything.
DEMO_IMAGE = ("cirros", 117440512)


def node_path(home: Path, cloud: str) -> Path:
    """The node file of ``cloud``."""
    return home / "kvm-test" / f"{cloud}.xml"


def fresh_node(pool: str, network: str, demo_image: bool) -> str:
    """A node with one empty pool and one NAT network (and, for the fallback, a demo image)."""
    volume = ""
    if demo_image:
        name, size = DEMO_IMAGE
        volume = (f"<volume><name>{name}</name><capacity>{size}</capacity>"
                  "<target><format type='qcow2'/></target></volume>")
    net = ""
    if network:
        net = (f"<network><name>{network}</name><bridge name='virbr0'/><forward mode='nat'/>"
               "<ip address='192.168.122.1' netmask='255.255.255.0'>"
               "<dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>")
    return (f"<node>{net}<pool type='dir'><name>{pool}</name>"
            f"<target><path>{FAKE_POOL_ROOT}/{pool}</path></target>{volume}</pool></node>\n")


def _domain_text(dom: libvirt.virDomain) -> str:
    """The domain's persistent XML plus <test:runstate>, so a reload restores its state."""
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).rstrip()
    head, _, _ = xml.rpartition("</domain>")
    return f"{head}  <test:runstate>{dom.state()[0]}</test:runstate>\n</domain>\n"


def _pool_text(pool: libvirt.virStoragePool) -> Iterator[str]:
    head, _, _ = pool.XMLDesc(0).rstrip().rpartition("</pool>")
    yield head
    for vol in pool.listAllVolumes():
        yield vol.XMLDesc(0).rstrip() + "\n"
    yield "</pool>\n"


def dump_parts(conn: libvirt.virConnect) -> Iterator[str]:
    """The whole state of a test-driver connection as a <node> document, piece by piece."""
    yield HEADER  # nodeload.py reads this layout line by line
    for net in conn.listAllNetworks():
        yield net.XMLDesc(0).rstrip() + "\n"
    for pool in conn.listAllStoragePools():
        yield from _pool_text(pool)
    for dom in conn.listAllDomains():
        yield _domain_text(dom)
    yield "</node>\n"


def dump(conn: libvirt.virConnect) -> str:
    """The whole state of a test-driver connection as a <node> document."""
    return "".join(dump_parts(conn))


def write_atomically(path: Path, parts: Iterable[str]) -> None:
    """Write ``parts`` to ``path`` through a private temporary file renamed over it (0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            for part in parts:
                handle.write(part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the node file (across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


class TestNode:
    """Open, use and write back one persistent test hypervisor.

    The state is a snapshot (the node file libvirt reads) plus a journal of the
    domains and volumes changed since (journal.py): a change appends what it
    touched, and the snapshot is rewritten only when the journal has grown as
    big as it, so n changes cost O(n) in all.  A process keeps its connection
    between operations and reopens it only when another process changed the files.
    The caller serializes the threads of one process.
    """

    def __init__(self, path: Path, pool: str, network: str, *, seed: Path | None = None,
                 demo_image: bool = False) -> None:
        self.path = path
        self.journal = path.with_name(path.name + ".journal")
        self.pool = pool
        self.network = network
        self.seed = seed  # a user's own test:///FILE: the starting state
        self.demo_image = demo_image
        self.notes: list[str] = []  # what the caller should tell the user once
        self._conn: libvirt.virConnect | None = None
        self._seen: tuple[object, object] | None = None  # the files as this process last left them
        self._depth = 0
        self._given: Any = None  # what the outermost session yielded, for nested ones
        self._changes: Changes | None = None
        self._full = False

    @property
    def uri(self) -> str:
        return f"test://{self.path}"

    def _initial_text(self) -> str:
        if self.seed is not None:
            return self.seed.read_text()
        return fresh_node(self.pool, self.network, self.demo_image)

    @property
    def _marker(self) -> Path:
        """Written once the node exists: a node file missing after that was lost, not never made."""
        return self.path.with_name(self.path.name + ".created")

    def _start_fresh(self, why: str) -> None:
        if self.path.exists():
            kept = self.path.with_name(f"{self.path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self.path, kept)
            self.notes.append(f"the test hypervisor's state {self.path} {why}; kept it as {kept.name} "
                              "and started a fresh one")
        elif self._marker.exists():
            self.notes.append(f"the test hypervisor's state {self.path} {why}; started a fresh one "
                              "(its VMs and images are gone)")
        self.journal.unlink(missing_ok=True)  # changes to a state that is gone
        write_atomically(self.path, [self._initial_text()])
        self._marker.touch()

    def _files(self) -> tuple[object, object]:
        return _signature(self.path), _signature(self.journal)

    def _clean_temporary(self) -> None:
        """Remove what a writer killed mid-write left (writers hold the lock, so none is running)."""
        for left in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            left.unlink(missing_ok=True)

    def _load(self) -> libvirt.virConnect:
        """A connection to the snapshot with the journal replayed (created fresh when missing or unreadable)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._clean_temporary()
        if not self.path.exists():
            self._start_fresh("was missing")
        try:
            conn = open_node(self.path)
        except (libvirt.libvirtError, BrokenNode, UnicodeDecodeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._start_fresh(f"was unreadable ({reason})")
            conn = open_node(self.path)
        if self.journal.exists():
            try:
                journal.replay(conn, journal.read(self.journal))
            except (libvirt.libvirtError, KeyError, TypeError, ValueError) as exc:  # a record not replayable: keep it
                kept = self.journal.with_name(f"{self.journal.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
                os.replace(self.journal, kept)
                self.notes.append(f"the test hypervisor's latest changes could not be replayed "
                                  f"({(str(exc).splitlines() or [type(exc).__name__])[0]}); kept them in {kept.name}")
                conn.close()
                return self._load()
            self._compact(conn)
        return conn

    def _current(self) -> libvirt.virConnect:
        """This process's connection, reloaded if another process changed the state since."""
        if self._conn is not None and self._files() == self._seen:
            return self._conn
        self._drop()
        self._conn = self._load()
        self._seen = self._files()
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
        self._conn, self._seen = None, None

    def _compact(self, conn: libvirt.virConnect) -> None:
        """Rewrite the snapshot from ``conn`` and start an empty journal."""
        write_atomically(self.path, dump_parts(conn))
        self.journal.unlink(missing_ok=True)  # a kill before this only replays what the snapshot has

    def _save(self, conn: libvirt.virConnect, changes: Changes | None) -> None:
        if self._full or changes is None or changes.everything:
            self._compact(conn)
        elif changes:
            journal.append(self.journal, journal.records(conn, changes))
            snapshot, log = self._files()
            if isinstance(log, tuple) and isinstance(snapshot, tuple) and log[2] > max(snapshot[2], MIN_JOURNAL):
                self._compact(conn)
        self._seen = self._files()

    @contextlib.contextmanager
    def session(self, write: bool) -> Iterator[Any]:
        """The state as a connection, under the lock; a write session records what it changed."""
        if self._depth:  # nested in the running session of this thread
            self._full = self._full or (write and self._changes is None)
            self._depth += 1
            try:
                yield self._given
            finally:
                self._depth -= 1
            return
        with locked(self.path):
            conn = self._current()
            self._changes = Changes() if write else None
            self._given = Watched(conn, self._changes) if self._changes is not None else conn
            self._depth, self._full = 1, False
            try:
                yield self._given
            finally:
                self._depth, self._given = 0, None
                changes, self._changes = self._changes, None
                if changes is not None or self._full:
                    self._save(conn, changes)

    def close(self) -> None:
        """Fold the journal into the snapshot (so the node file alone is the state) and disconnect."""
        if self._conn is None:
            return
        with locked(self.path):
            if self._files() == self._seen and self.journal.exists():
                self._compact(self._conn)
            self._drop()
