"""A persistent fake hypervisor: libvirt's test driver backed by a node file under the cm home.

libvirt's test driver lives inside one process and forgets everything when its
last connection closes, so `cm vm boot` in one process and `cm vm stop` in the
next would never meet.  This module keeps the test driver's state in a
``<node>`` XML file (``<cm home>/kvm-test/<cloud>.xml``): every use opens
``test:///<that file>``, and every change is written back atomically (0600) (domains
with their run state, networks, pools with their volumes).  A file lock keeps
two cm processes from interleaving their changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt

from cm.config import write_private

# The test driver's own XML namespace: <test:runstate> restores a domain's state.
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
ET.register_namespace("test", TEST_NS)

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


def _domain_element(dom: libvirt.virDomain) -> ET.Element:
    """The domain's persistent XML plus <test:runstate>, so a reload restores its state."""
    element = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    state = ET.SubElement(element, f"{{{TEST_NS}}}runstate")
    state.text = str(dom.state()[0])
    return element


def _pool_element(pool: libvirt.virStoragePool) -> ET.Element:
    element = ET.fromstring(pool.XMLDesc(0))
    for vol in pool.listAllVolumes():
        element.append(ET.fromstring(vol.XMLDesc(0)))
    return element


def dump(conn: libvirt.virConnect) -> str:
    """The whole state of a test-driver connection as a <node> document."""
    node = ET.Element("node")
    node.extend(ET.fromstring(net.XMLDesc(0)) for net in conn.listAllNetworks())
    node.extend(_pool_element(pool) for pool in conn.listAllStoragePools())
    node.extend(_domain_element(dom) for dom in conn.listAllDomains())
    ET.indent(node)
    return ET.tostring(node, encoding="unicode") + "\n"


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


class TestNode:
    """Open, use and write back one persistent test hypervisor."""

    def __init__(self, path: Path, pool: str, network: str, *, seed: Path | None = None,
                 demo_image: bool = False) -> None:
        self.path = path
        self.pool = pool
        self.network = network
        self.seed = seed  # a user's own test:///FILE: the starting state
        self.demo_image = demo_image
        self.notes: list[str] = []  # what the caller should tell the user once

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
        write_private(self.path, self._initial_text())
        self._marker.touch()

    def open(self) -> libvirt.virConnect:
        """A connection to the node file's state (created fresh when missing or unreadable)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.path.exists():
            self._start_fresh("was missing")
        try:
            ET.parse(self.path)
            return libvirt.open(self.uri)
        except (ET.ParseError, libvirt.libvirtError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._start_fresh(f"was unreadable ({reason})")
            return libvirt.open(self.uri)

    def save(self, conn: libvirt.virConnect) -> None:
        write_private(self.path, dump(conn))
