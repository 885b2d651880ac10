"""The service's state in SQLite through SQLAlchemy: tokens, keys, nonces, computesets, nodes.

The schema carries a version (table ``meta``); ``open_store`` creates a new
database, upgrades an older one through ``MIGRATIONS`` and refuses a newer one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, create_engine, event, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String)


class Token(Base):
    """A login token, stored as its SHA-256 only."""

    __tablename__ = "token"
    digest: Mapped[str] = mapped_column(String, primary_key=True)
    user: Mapped[str] = mapped_column(String, index=True)
    created: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """A user's API key; the secret is kept because the HMAC check needs it (the file is 0600)."""

    __tablename__ = "apikey"
    user: Mapped[str] = mapped_column(String, primary_key=True)
    key_name: Mapped[str] = mapped_column(String, unique=True)
    secret: Mapped[str] = mapped_column(String)


class Nonce(Base):
    __tablename__ = "nonce"
    nonce: Mapped[str] = mapped_column(String, primary_key=True)
    user: Mapped[str] = mapped_column(String)
    seen: Mapped[float] = mapped_column(Float, index=True)


class ComputeSet(Base):
    __tablename__ = "computeset"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster: Mapped[str] = mapped_column(String, index=True)
    user: Mapped[str] = mapped_column(String)
    account: Mapped[str] = mapped_column(String)
    state: Mapped[str] = mapped_column(String, index=True)
    walltime_mins: Mapped[int] = mapped_column(Integer)
    reservation: Mapped[str] = mapped_column(String, default="")
    job_id: Mapped[str] = mapped_column(String, default="")
    secret: Mapped[str] = mapped_column(String)  # what the job's script shows when it calls back
    nodes: Mapped[list] = mapped_column(JSON)  # node keys
    hosts: Mapped[dict] = mapped_column(JSON, default=dict)  # node key -> Slurm host
    created: Mapped[float] = mapped_column(Float)
    start_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(String, default="")


class Node(Base):
    """A virtual node: ``key`` is its configured name, ``name`` its current one (after renames)."""

    __tablename__ = "node"
    cluster: Mapped[str] = mapped_column(String, primary_key=True)
    key: Mapped[str] = mapped_column(String, primary_key=True)
    kind: Mapped[str] = mapped_column(String)
    name: Mapped[str] = mapped_column(String)
    power: Mapped[str] = mapped_column(String, default="off")  # last state seen: active, off, ...
    want_on: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str] = mapped_column(String, default="")  # Slurm host it runs on
    domain: Mapped[str] = mapped_column(String, default="")  # libvirt domain it runs as
    iso: Mapped[str] = mapped_column(String, default="")


class ConsoleToken(Base):
    __tablename__ = "console_token"
    token: Mapped[str] = mapped_column(String, primary_key=True)
    cluster: Mapped[str] = mapped_column(String)
    node: Mapped[str] = mapped_column(String)
    expires: Mapped[float] = mapped_column(Float)


# version -> what upgrades a database of the version before it
MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class SchemaError(Exception):
    """The database was written by a newer service."""


def _migrate(engine: Engine) -> None:
    with engine.begin() as conn:
        Base.metadata.create_all(conn)  # new tables only; never alters existing ones
        row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise SchemaError(f"the database has schema {version}; this service knows up to {SCHEMA_VERSION}")
        if version == 0:
            conn.execute(text("INSERT INTO meta(key, value) VALUES ('schema_version', :v)"), {"v": SCHEMA_VERSION})
            return
        for step in range(version + 1, SCHEMA_VERSION + 1):
            MIGRATIONS[step](conn)
        conn.execute(text("UPDATE meta SET value=:v WHERE key='schema_version'"), {"v": SCHEMA_VERSION})


class Store:
    """The database: a session factory plus the few queries several modules need."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not path.exists():
            path.touch(mode=0o600)  # API secrets live here
        os.chmod(path, 0o600)
        self.engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 10},
                                    pool_size=20, max_overflow=40)
        event.listen(self.engine, "connect", _pragmas)
        _migrate(self.engine)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Bumped by every commit that changed a computeset or a node: cached listings older than it are stale.
        self.version = 0
        self._version_lock = threading.Lock()
        event.listen(self.sessions, "before_flush", self._note_change)
        event.listen(self.sessions, "after_commit", self._bump)

    @staticmethod
    def _note_change(session: Session, _context: Any, _instances: Any) -> None:
        # session.dirty also holds rows set to the value they had (the reconciler does that): not a change
        dirty = [o for o in session.dirty if session.is_modified(o)]
        if any(isinstance(o, (ComputeSet, Node)) for o in (*session.new, *dirty, *session.deleted)):
            session.info["changed"] = True

    def _bump(self, session: Session) -> None:
        if session.info.pop("changed", False):
            with self._version_lock:  # after the commit: a listing built from now on sees the change
                self.version += 1

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed at the end, rolled back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    def schema_version(self) -> int:
        with self.session() as s:
            return int(s.scalar(select(Meta.value).where(Meta.key == "schema_version")) or 0)

    def sync_nodes(self, clusters: dict[str, Any]) -> None:
        """Make a row for every configured node; rows of nodes no longer configured stay (history)."""
        with self.session() as s:
            have = {(n.cluster, n.key) for n in s.scalars(select(Node))}
            for cluster in clusters.values():
                for spec in [cluster.frontend, *cluster.computes]:
                    if (cluster.name, spec.name) not in have:
                        s.add(Node(cluster=cluster.name, key=spec.name, kind=spec.kind, name=spec.name))

    def forget_old_nonces(self, window: float) -> None:
        """A nonce older than twice the timestamp window can never be replayed: its timestamp is refused."""
        with self.session() as s:
            s.query(Nonce).filter(Nonce.seen < time.time() - 2 * window).delete()
