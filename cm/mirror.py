"""The local mirror: a TinyDB file of VMs, images, flavors, keys, groups and clusters
per cloud, plus defaults, variables and name counters.

It must not lose data:
- every write goes to a temporary file that is fsynced and renamed over the old
  one, so a crash or ``kill -9`` leaves the previous or the new state;
- writers hold a cross-process file lock for the whole read-modify-write, so two
  ``cm`` processes writing at once lose nothing;
- a file that is not a readable cm mirror is moved aside, never overwritten.
Providers never touch the mirror; commands store what providers return.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cm.errors import MirrorError

if TYPE_CHECKING:
    from tinydb import TinyDB

SCHEMA = 1
APP = "cm-mirror"
META, DEFAULTS, VARS, COUNTERS, NOTICES = "meta", "defaults", "vars", "counters", "notices"

# Migrations from schema N to N+1, applied in order when an older file is opened.
MIGRATIONS: dict[int, Any] = {}


def _tinydb(store: "JsonStore") -> "TinyDB":
    """A TinyDB over the store's open transaction (tinydb is imported only by writers)."""
    from tinydb import TinyDB
    from tinydb.storages import Storage

    class _Storage(Storage):
        """Serves TinyDB the transaction's in-memory copy; the store does the file I/O."""

        def __init__(self) -> None:
            pass

        def read(self) -> dict[str, Any] | None:
            return store._pending

        def write(self, data: dict[str, Any]) -> None:
            store._pending = data
            store._dirty = True

    return TinyDB(storage=_Storage)


def _query() -> Any:
    from tinydb import Query

    return Query()


class JsonStore:
    """One JSON file of TinyDB tables: lock-free reads, atomic locked writes."""

    def __init__(self, path: Path, what: str = "mirror", hint: str = "run `cm refresh` to fill it") -> None:
        self.path = path
        self.what = what
        self.hint = hint
        self._pending: dict[str, Any] | None = None
        self._dirty = False
        self._guard = threading.RLock()
        self._cache: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def _read_file(self, fresh: bool = False, locked: bool = False) -> dict[str, Any]:
        """The file's data; ``fresh`` gives a private copy a transaction may change."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {META: {"1": {"app": APP, "schema": SCHEMA}}}
        # Every write makes a new inode, so a rewrite of the same size and time still shows.
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if not fresh and self._cache and self._cache[0] == key:
            return self._cache[1]
        try:
            data = json.loads(self.path.read_bytes())
            problem = "" if isinstance(data, dict) and (data.get(META) or {}).get("1", {}).get("app") == APP \
                else "it is not a cm mirror"
        except (ValueError, UnicodeDecodeError) as exc:
            problem = f"it is not valid JSON ({exc.__class__.__name__})"
        if problem:
            self._set_aside(problem, key, locked)
        data = self._migrate(data)
        if not fresh:
            self._cache = (key, data)
        return data

    def _set_aside(self, why: str, key: tuple[int, int, int], locked: bool) -> None:
        """Move an unusable file out of the way, under the lock, only if no writer replaced it meanwhile."""
        if not locked:
            with self._lock():
                return self._set_aside(why, key, locked=True)
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stat = None
        if stat is None or (stat.st_ino, stat.st_mtime_ns, stat.st_size) != key:
            raise MirrorError(f"the {self.what} {self.path} changed while it was read; run the command again")
        aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        os.replace(self.path, aside)
        raise MirrorError(f"the {self.what} {self.path} could not be used: {why}; it was kept as {aside} "
                          f"and a new one will be started ({self.hint})")

    def _migrate(self, data: dict[str, Any]) -> dict[str, Any]:
        version = int(data[META]["1"].get("schema", 1))
        if version > SCHEMA:
            raise MirrorError(f"the mirror {self.path} was written by a newer cm (schema {version}); upgrade cm")
        while version < SCHEMA:
            data = MIGRATIONS[version](data)
            version += 1
            data[META]["1"]["schema"] = version
        return data

    def _write_file(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                # dumps, not dump: dump streams through the pure-Python encoder, ten times slower.
                handle.write(json.dumps(data, separators=(",", ":")))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._cache = None

    @contextmanager
    def _lock(self) -> Iterator[None]:
        from filelock import FileLock, Timeout  # only writers pay for the import

        try:
            with FileLock(str(self.path) + ".lock", timeout=60):
                yield
        except Timeout as exc:
            raise MirrorError(f"the mirror {self.path} is locked by another cm process") from exc

    @contextmanager
    def transaction(self) -> Iterator[TinyDB]:
        """Lock, read once, let the caller change the TinyDB, then write once atomically."""
        with self._guard:
            if self._pending is not None:  # nested: join the outer transaction
                yield _tinydb(self)
                return
            with self._lock():
                self._pending, self._dirty = self._read_file(fresh=True, locked=True), False
                try:
                    yield _tinydb(self)
                    if self._dirty:
                        self._write_file(self._pending)
                finally:
                    self._pending = None

    def changing(self) -> dict[str, Any]:
        """The open transaction's copy, to change in place (TinyDB's queries cost O(n) per record); it is written."""
        if self._pending is None:
            raise RuntimeError("changing() outside a transaction")
        self._dirty = True
        return self._pending

    def current(self) -> dict[str, Any]:
        """The data as it stands: the open transaction's copy, else the file."""
        return self._pending if self._pending is not None else self._read_file()

    def table(self, db: TinyDB, name: str) -> Any:
        return db.table(name, cache_size=0)


class Mirror:
    """Records (big, changed by clouds) and settings (small, changed by the user) in two files,
    so setting a variable never rewrites ten thousand VM records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._records = JsonStore(path)
        self._settings = JsonStore(path.with_name("settings.json"), "settings file",
                                   "defaults, variables and name counters start afresh; the old ones are in the kept file")

    def transaction(self) -> Any:
        """Group several record changes into one locked, atomic write."""
        return self._records.transaction()

    # -- records (vm, image, flavor, key, group, cluster ...) ------------------
    def records(self, kind: str, cloud: str | None = None) -> list[dict[str, Any]]:
        table = self._records.current().get(kind, {})
        docs = list(table.values())
        return docs if cloud is None else [d for d in docs if d.get("cloud") == cloud]

    def get(self, kind: str, cloud: str, name: str) -> dict[str, Any] | None:
        for doc in self.records(kind, cloud):
            if doc.get("name") == name:
                return doc
        return None

    def put(self, kind: str, cloud: str, record: dict[str, Any]) -> None:
        """Insert or update one record of ``cloud`` (see put_many)."""
        self.put_many(kind, cloud, [record])

    def put_many(self, kind: str, cloud: str, records: Iterable[dict[str, Any]]) -> None:
        """Insert or update records of ``cloud``: each the one with its id, else the one(s) with its name.

        Two VMs of one name (the cloud allows it) keep a record each; a record found by
        name only (a VM recreated behind cm's back, a placeholder) is replaced.  Each
        record costs the same however big the table is (cm.record_index).
        """
        from cm import record_index

        with self._records.transaction():
            for record in records:
                record_index.upsert(self._records, kind, {**record, "cloud": cloud, "kind": kind, "_schema": SCHEMA})

    def remove(self, kind: str, cloud: str, names: Iterable[str]) -> None:
        wanted = set(names)
        q = _query()
        with self._records.transaction() as db:
            self._records.table(db, kind).remove((q.cloud == cloud) & q.name.one_of(list(wanted)))

    def remove_ids(self, kind: str, cloud: str, ids: Iterable[str]) -> None:
        """Remove records by id (one of several VMs that share a name)."""
        wanted = [i for i in ids if i]
        q = _query()
        with self._records.transaction() as db:
            self._records.table(db, kind).remove((q.cloud == cloud) & q.id.one_of(wanted))

    def replace(self, kind: str, cloud: str, records: Iterable[dict[str, Any]]) -> int:
        """Make the mirror's ``kind`` records of ``cloud`` exactly ``records`` (a refresh)."""
        docs = [{**r, "cloud": cloud, "kind": kind, "_schema": SCHEMA} for r in records]
        with self._records.transaction():
            # One pass over the table dict: a TinyDB query costs a Python call per record (50 ms for 3,000 jobs).
            data = self._records.changing()
            table = data.get(kind, {})
            kept = {key: doc for key, doc in table.items() if doc.get("cloud") != cloud}
            first = max(map(int, table), default=0) + 1
            kept.update((str(first + i), doc) for i, doc in enumerate(docs))
            data[kind] = kept
        return len(docs)

    def forget_cloud(self, cloud: str) -> None:
        """Drop every record of ``cloud`` (it was removed) and its per-cloud defaults."""
        with self._records.transaction() as db:
            for kind in list(self._records.current()):
                if kind != META:
                    self._records.table(db, kind).remove(_query().cloud == cloud)
            for record in self.records("group", ""):
                kept = [m for m in record.get("members", []) if not m.startswith(f"{cloud}:")]
                if kept != record.get("members"):
                    self._records.table(db, "group").update({"members": kept}, _query().name == record["name"])
        with self._settings.transaction() as db:
            self._settings.table(db, DEFAULTS).remove(_query().cloud == cloud)

    # -- defaults, variables, counters ---------------------------------------------
    def defaults(self) -> list[dict[str, Any]]:
        return list(self._settings.current().get(DEFAULTS, {}).values())

    def get_default(self, key: str, cloud: str | None = None) -> Any:
        for doc in self.defaults():
            if doc["key"] == key and doc.get("cloud") == cloud:
                return doc["value"]
        return None

    def set_default(self, key: str, value: Any, cloud: str | None = None) -> None:
        q = _query()
        with self._settings.transaction() as db:
            self._settings.table(db, DEFAULTS).upsert({"key": key, "value": value, "cloud": cloud},
                                             (q.key == key) & (q.cloud == cloud))

    def delete_default(self, key: str, cloud: str | None = None) -> bool:
        q = _query()
        with self._settings.transaction() as db:
            return bool(self._settings.table(db, DEFAULTS).remove((q.key == key) & (q.cloud == cloud)))

    def variables(self) -> dict[str, str]:
        return {d["name"]: d["value"] for d in self._settings.current().get(VARS, {}).values()}

    def set_variable(self, name: str, value: str) -> None:
        with self._settings.transaction() as db:
            self._settings.table(db, VARS).upsert({"name": name, "value": value}, _query().name == name)

    def delete_variable(self, name: str) -> bool:
        with self._settings.transaction() as db:
            return bool(self._settings.table(db, VARS).remove(_query().name == name))

    def first_notice(self, text: str) -> bool:
        """True the first time ``text`` is noticed (it is then remembered), False after."""
        if any(d["text"] == text for d in self._settings.current().get(NOTICES, {}).values()):
            return False
        with self._settings.transaction() as db:
            self._settings.table(db, NOTICES).upsert({"text": text}, _query().text == text)
        return True

    def counter(self, name: str) -> int:
        """The last number the counter ``name`` handed out (0 if none)."""
        for doc in self._settings.current().get(COUNTERS, {}).values():
            if doc["name"] == name:
                return int(doc["value"])
        return 0

    def next_counter(self, name: str, count: int = 1) -> list[int]:
        """Reserve ``count`` consecutive numbers of the counter ``name`` (1, 2, 3 ...)."""
        q = _query()
        with self._settings.transaction() as db:
            table = self._settings.table(db, COUNTERS)
            doc = table.get(q.name == name)
            start = (doc["value"] if doc else 0) + 1
            table.upsert({"name": name, "value": start + count - 1}, q.name == name)
        return list(range(start, start + count))
