"""Opening a saved node file one object at a time.

libvirt's test driver reads a node file into one in-memory document, which for
10,000 VMs peaks at 570 MB.  A node file cm wrote itself (testnode.dump_parts:
each network, pool, volume and domain as libvirt printed it, its first and last
line unindented) is instead read line by line: libvirt is given the networks and
pool settings first, then each volume and domain through the API, so only one
object's text is in memory at a time.  Any other node file (a user's own
test:///FILE, a fresh one) is small and goes to libvirt's loader as it is.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import libvirt

from cm_plugins.kvm import journal

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
HEADER = f"<node xmlns:test='{TEST_NS}'>\n"  # the first line of every node file cm writes
RUNSTATE = "<test:runstate>"


class BrokenNode(ValueError):
    """The node file stops in the middle of an object (a cut write)."""


def _object(first: str, lines: TextIO, tag: str) -> str:
    """The text of one object from its unindented first line to its unindented closing tag."""
    text = [first]
    for line in lines:
        text.append(line)
        if line.startswith(f"</{tag}>"):
            return "".join(text)
    raise BrokenNode(f"the file ends inside a <{tag}>")


def _objects(lines: TextIO) -> Iterator[tuple[str, str, str]]:
    """(kind, pool name, text) in file order: networks, pool settings (kind "pool", before its
    volumes), volumes, domains."""
    pool = ""
    for line in lines:
        if line.startswith("<network"):
            yield "network", "", _object(line, lines, "network")
        elif line.startswith("<pool"):
            text = [line]
            for inner in lines:
                if inner.startswith(("<volume", "</pool>")):
                    break
                text.append(inner)
            else:
                raise BrokenNode("the file ends inside a <pool>")
            settings = "".join(text) + "</pool>\n"
            pool = settings.split("<name>", 1)[1].split("</name>", 1)[0] if "<name>" in settings else ""
            yield "pool", pool, settings
            while inner.startswith("<volume"):
                yield "volume", pool, _object(inner, lines, "volume")
                inner = next(lines, "")
            if not inner.startswith("</pool>"):
                raise BrokenNode("the file ends inside a <pool>")
        elif line.startswith("<domain"):
            yield "domain", "", _object(line, lines, "domain")
        elif line.startswith("</node>"):
            return
        elif line.strip():
            raise BrokenNode(f"unexpected line {line.strip()[:60]!r}")
    raise BrokenNode("the file ends before </node>")


def _split_runstate(text: str) -> tuple[str, int]:
    """The domain's XML without its <test:runstate> line, and that state (shut off if none)."""
    head, found, rest = text.partition(RUNSTATE)
    if not found:
        return text, libvirt.VIR_DOMAIN_SHUTOFF
    state, _, tail = rest.partition("</test:runstate>")
    return head.rstrip(" ") + tail.lstrip("\n"), int(state)


def _base_connection(path: Path) -> libvirt.virConnect:
    """libvirt's loader given only the node's networks and pools (small)."""
    with open(path) as lines:
        lines.readline()
        base = [text for kind, _, text in _objects(lines) if kind in ("network", "pool")]
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("<node>" + "".join(base) + "</node>\n")
        return libvirt.open(f"test://{name}")
    finally:
        Path(name).unlink(missing_ok=True)


def open_node(path: Path) -> libvirt.virConnect:
    """A test-driver connection holding the node file's state (libvirtError or BrokenNode if it is bad)."""
    with open(path) as handle:
        if handle.readline() != HEADER:
            return libvirt.open(f"test://{path}")
    conn = _base_connection(path)
    try:
        with open(path) as lines:
            lines.readline()
            for kind, pool, text in _objects(lines):
                if kind == "volume":
                    conn.storagePoolLookupByName(pool).createXML(text, 0)
                elif kind == "domain":
                    journal.put_domain(conn, *_split_runstate(text))
    except BaseException:
        conn.close()
        raise
    return conn
