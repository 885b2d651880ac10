"""Storing a record by cloud and id (else name) in constant time inside one mirror transaction.

A TinyDB query scans the whole table, so storing each of n new VMs would cost
O(n) and a boot of thousands O(n^2).  The index is built once per transaction
(per table) and is dropped as soon as TinyDB rewrites that table itself.
"""

from __future__ import annotations

import weakref
from typing import Any

_indexes: weakref.WeakKeyDictionary[Any, dict[str, _Index]] = weakref.WeakKeyDictionary()


class _Index:
    """Document keys of one table dict by (cloud, id) and by (cloud, name)."""

    def __init__(self, table: dict[str, dict[str, Any]]) -> None:
        self.table = table  # held, so a new table dict is never mistaken for this one
        self.by_id: dict[tuple[Any, Any], set[str]] = {}
        self.by_name: dict[tuple[Any, Any], set[str]] = {}
        self.next_id = max(map(int, table), default=0) + 1
        by_id, by_name = self.by_id, self.by_name  # one tight pass: this runs once per transaction
        for key, doc in table.items():
            cloud = doc.get("cloud")
            if doc.get("id"):
                found = by_id.get((cloud, doc["id"]))
                if found is None:
                    by_id[(cloud, doc["id"])] = {key}
                else:
                    found.add(key)
            found = by_name.get((cloud, doc.get("name")))
            if found is None:
                by_name[(cloud, doc.get("name"))] = {key}
            else:
                found.add(key)

    def add(self, key: str, doc: dict[str, Any]) -> None:
        if doc.get("id"):
            self.by_id.setdefault((doc.get("cloud"), doc["id"]), set()).add(key)
        self.by_name.setdefault((doc.get("cloud"), doc.get("name")), set()).add(key)

    def forget(self, key: str, doc: dict[str, Any]) -> None:
        self.by_id.get((doc.get("cloud"), doc.get("id")), set()).discard(key)
        self.by_name.get((doc.get("cloud"), doc.get("name")), set()).discard(key)


def _index(store: Any, kind: str) -> _Index:
    table = store._pending.setdefault(kind, {})
    tables = _indexes.setdefault(store, {})
    index = tables.get(kind)
    if index is None or index.table is not table:
        index = tables[kind] = _Index(table)
    return index


def upsert(store: Any, kind: str, doc: dict[str, Any]) -> None:
    """In ``store``'s open transaction: update the docs with doc's cloud and id, else replace those
    with its cloud and name by it (what Mirror.put means)."""
    index = _index(store, kind)
    table = index.table
    cloud = doc.get("cloud")
    same_id = sorted(index.by_id.get((cloud, doc.get("id")), ())) if doc.get("id") else []
    if same_id:
        for key in same_id:
            index.forget(key, table[key])
            table[key].update(doc)
            index.add(key, table[key])
    else:
        for key in sorted(index.by_name.get((cloud, doc.get("name")), ())):
            index.forget(key, table.pop(key))
        key = str(index.next_id)
        index.next_id += 1
        table[key] = dict(doc)
        index.add(key, table[key])
    store._dirty = True
