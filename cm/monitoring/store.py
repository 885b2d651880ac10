"""The time-series store: one SQLite database in WAL mode under the user directory (not the mirror).

One row per node and sample (``WITHOUT ROWID``, keyed by node and integer
milliseconds), integer columns only, so an hour of one VM sampled every second
takes a few hundred KiB.  Each round of samples is one transaction: a collector
killed with SIGKILL loses at most the round in flight.  Runs (time windows,
Slurm jobs) and learnt profiles live beside the samples.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cm.monitoring.sample import COLUMNS, Sample

SCHEMA = """
CREATE TABLE IF NOT EXISTS node (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, kind TEXT NOT NULL, cloud TEXT NOT NULL DEFAULT '',
    host TEXT NOT NULL DEFAULT '', UNIQUE (name, kind, cloud));
CREATE TABLE IF NOT EXISTS sample (
    node INTEGER NOT NULL, t INTEGER NOT NULL, ncpu INTEGER, cpu INTEGER, vcpu BLOB, steal INTEGER,
    iowait INTEGER, mem_used INTEGER, mem_total INTEGER, disk_rd INTEGER, disk_wr INTEGER, disk_busy INTEGER,
    net_rx INTEGER, net_tx INTEGER, PRIMARY KEY (node, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS run (
    name TEXT PRIMARY KEY, nodes TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT 'window', label TEXT NOT NULL DEFAULT '', metrics TEXT NOT NULL DEFAULT '{}');
CREATE TABLE IF NOT EXISTS profile_model (id INTEGER PRIMARY KEY CHECK (id = 1), learnt INTEGER, model TEXT);
"""


def path_in(home: Path) -> Path:
    return Path(home) / "monitor" / "samples.db"


class Store:
    """The samples, runs and profiles of one user directory."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no commit
        self.db.executescript(SCHEMA)
        self._nodes: dict[tuple[str, str, str], tuple[int, str]] = {}  # -> (id, host)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- nodes and samples --------------------------------------------------------------------
    def node_id(self, name: str, kind: str = "vm", cloud: str = "", host: str = "") -> int:
        key = (name, kind, cloud)
        known = self._nodes.get(key)
        if known is None or (host and known[1] != host):  # new, or its VM moved to another host
            self.db.execute("INSERT INTO node (name, kind, cloud, host) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (name, kind, cloud) DO UPDATE SET host = excluded.host "
                            "WHERE excluded.host != ''", (name, kind, cloud, host))
            row = self.db.execute("SELECT id, host FROM node WHERE name = ? AND kind = ? AND cloud = ?", key).fetchone()
            known = self._nodes[key] = (row[0], row[1])
        return known[0]

    def add(self, rows: Iterable[tuple[int, Sample]]) -> int:
        """Store one round of (node id, sample) in one transaction; return how many."""
        rows = [(node, *sample) for node, sample in rows]
        with self.transaction():
            self.db.executemany(f"INSERT OR REPLACE INTO sample (node, {', '.join(COLUMNS)}) "
                                f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})", rows)
        return len(rows)

    def transaction(self) -> Any:
        return _Transaction(self.db)

    def nodes(self, names: Iterable[str] | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, name, kind, cloud, host FROM node ORDER BY kind DESC, name").fetchall()
        wanted = set(names) if names is not None else None
        return [dict(zip(("id", "name", "kind", "cloud", "host"), r)) for r in rows
                if (wanted is None or r[1] in wanted) and (kind is None or r[2] == kind)]

    def samples(self, node: int, since_ms: int = 0, until_ms: int | None = None) -> list[Sample]:
        until = until_ms if until_ms is not None else 1 << 62
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM sample WHERE node = ? AND t >= ? AND t <= ? "
                               "ORDER BY t", (node, since_ms, until)).fetchall()
        return [Sample(*r) for r in rows]

    def binned(self, node: int, since_ms: int, until_ms: int, bins: int) -> list[tuple[int, float, float, float, float]]:
        """(bin, cpu %, memory %, disk B/s, net B/s) means of ``bins`` equal slices of the window (SQLite aggregates)."""
        span = max(1, until_ms - since_ms)
        return self.db.execute(
            f"SELECT min({bins - 1}, (t - ?) * {bins} / ?) AS bin, avg(cpu) / 10.0, "
            "avg(CASE WHEN mem_total > 0 THEN mem_used * 100.0 / mem_total ELSE 0 END), avg(disk_rd + disk_wr), "
            "avg(net_rx + net_tx) FROM sample WHERE node = ? AND t >= ? AND t <= ? GROUP BY bin ORDER BY bin",
            (since_ms, span, node, since_ms, until_ms)).fetchall()

    def summary(self, node: int, since_ms: int, until_ms: int) -> tuple[Any, ...]:
        """(samples, then mean and peak of cpu %, memory %, disk B/s, net B/s) over the window."""
        mem = "CASE WHEN mem_total > 0 THEN mem_used * 100.0 / mem_total ELSE 0 END"
        return self.db.execute(
            f"SELECT count(*), avg(cpu) / 10.0, max(cpu) / 10.0, avg({mem}), max({mem}), avg(disk_rd + disk_wr), "
            "max(disk_rd + disk_wr), avg(net_rx + net_tx), max(net_rx + net_tx) FROM sample "
            "WHERE node = ? AND t >= ? AND t <= ?", (node, since_ms, until_ms)).fetchone()

    def iter_rows(self, node_ids: list[int], since_ms: int = 0) -> Iterator[tuple[Any, ...]]:
        """(node name, kind, *sample columns) rows for export, in time order per node."""
        marks = ", ".join("?" * len(node_ids))
        yield from self.db.execute(
            f"SELECT node.name, node.kind, {', '.join('sample.' + c for c in COLUMNS)} FROM sample "
            f"JOIN node ON node.id = sample.node WHERE sample.node IN ({marks}) AND sample.t >= ? "
            "ORDER BY node.name, sample.t", (*node_ids, since_ms))

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM sample").fetchone()[0]

    def last_time(self) -> int:
        return self.db.execute("SELECT max(t) FROM sample").fetchone()[0] or 0

    def prune(self, keep_seconds: float) -> int:
        """Drop samples older than the retention; return how many went."""
        cut = int((time.time() - keep_seconds) * 1000)
        with self.transaction():
            return self.db.execute("DELETE FROM sample WHERE t < ?", (cut,)).rowcount

    # -- runs ---------------------------------------------------------------------------------
    def save_run(self, run: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO run (name, nodes, start, end, source, label, metrics) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (run["name"], ",".join(run["nodes"]), run["start"], run["end"], run.get("source", "window"),
                             run.get("label", ""), json.dumps(run.get("metrics", {}))))

    def runs(self, names: Iterable[str] | None = None) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT name, nodes, start, end, source, label, metrics FROM run ORDER BY start").fetchall()
        wanted = set(names) if names is not None else None
        return [{"name": r[0], "nodes": r[1].split(",") if r[1] else [], "start": r[2], "end": r[3], "source": r[4],
                 "label": r[5], "metrics": json.loads(r[6] or "{}")} for r in rows if wanted is None or r[0] in wanted]

    def delete_run(self, name: str) -> bool:
        with self.transaction():
            return self.db.execute("DELETE FROM run WHERE name = ?", (name,)).rowcount > 0

    # -- profiles -----------------------------------------------------------------------------
    def save_model(self, model: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute("INSERT OR REPLACE INTO profile_model (id, learnt, model) VALUES (1, ?, ?)",
                            (int(time.time()), json.dumps(model)))

    def model(self) -> dict[str, Any] | None:
        row = self.db.execute("SELECT model FROM profile_model WHERE id = 1").fetchone()
        return json.loads(row[0]) if row else None


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): the connection runs in autocommit otherwise."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
