"""ISO images: Nucleus' ``public/<file>`` ones, and cm's extension, ``private/<file>`` ones.

A private ISO (``POST image/private``: a plain Nucleus refuses it with 404 rather than publish it) is
kept 0600 under ``iso/private/<owner>/``, listed and attachable only by the user who uploaded it, and
deleted by that user (``DELETE image/private/<file>``) once no node has it attached.  Any other user
is told it is unknown, exactly as for a name never uploaded.  A node remembers a private ISO as
``private/<owner>/<file>`` (what the domain reads) and shows it as ``private/<file>``.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cm_nucleus.core import ApiError, Service, bad
from cm_nucleus.store import Node

ISO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,200}$")
OWNER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,100}$")
KINDS = ("public", "private")


def owner_dir(user: str) -> str:
    """The directory name of a user's private ISOs: the name itself, or a digest of a name unfit for a path."""
    return user if OWNER_NAME.match(user) else "~" + hashlib.sha256(user.encode()).hexdigest()[:32]


def private_dir(service: Service, user: str) -> Path:
    return service.settings.iso_dir / "private" / owner_dir(user)


def _files(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def listing(service: Service, user: str) -> list[str]:
    """Every public ISO, then the caller's private ones."""
    return ([f"public/{n}" for n in _files(service.settings.iso_dir / "public")]
            + [f"private/{n}" for n in _files(private_dir(service, user))])


def shown(stored: str) -> str:
    """What a node's ISO looks like in the API: ``private/<owner>/<file>`` is shown as ``private/<file>``."""
    parts = stored.split("/")
    return f"private/{parts[-1]}" if parts[0] == "private" else stored


def resolve(service: Service, iso: str, user: str) -> str:
    """The node's record of ISO ``iso`` as the caller names it; 400 "unknown ISO" if the caller cannot use it."""
    kind, _, name = iso.partition("/")
    if kind in KINDS and ISO_NAME.match(name):
        stored = f"public/{name}" if kind == "public" else f"private/{owner_dir(user)}/{name}"
        if (service.settings.iso_dir / stored).is_file():
            return stored
    raise bad(f"unknown ISO '{iso}' (see GET image)")


def upload(service: Service, filename: str, stream: Any, md5: str | None, user: str, private: bool = False) -> None:
    """Keep the upload only if its content has the md5 the client announced; private ones stay 0600."""
    if not md5:
        raise bad("md5 was not provided")
    name = os.path.basename(filename or "")
    if not ISO_NAME.match(name):
        raise bad(f"bad ISO file name '{filename}'")
    directory = private_dir(service, user) if private else service.settings.iso_dir / "public"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".upload-")  # 0600 from the first byte
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5.strip().lower():
            raise bad("md5 does not match the file")
        os.replace(tmp, directory / name)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def delete(service: Service, kind: str, name: str, user: str) -> None:
    """Remove one of the caller's private ISOs; refused while a node has it attached."""
    if kind == "public":
        raise bad("public ISOs are never deleted; only private ones (private/<file>) can be")
    if kind != "private" or not ISO_NAME.match(name) or not (private_dir(service, user) / name).is_file():
        raise ApiError(404, f"ISO '{kind}/{name}' not found")
    stored = f"private/{owner_dir(user)}/{name}"
    with service.lock, service.store.session() as s:  # attach takes the lock too: no attach slips in between
        holders = [f"{n.name} of {n.cluster}" for n in s.scalars(select(Node).where(Node.iso == stored))]
        if holders:
            raise ApiError(409, f"private/{name} is attached to {', '.join(holders)}; detach it first")
        (service.settings.iso_dir / stored).unlink(missing_ok=True)
