"""`cm key`: ssh public keys, local (from ~/.ssh) and uploaded to clouds."""

from __future__ import annotations

import base64
import hashlib
from argparse import ArgumentParser, Namespace
from pathlib import Path
from typing import TYPE_CHECKING

from cm import inventory
from cm.commands import add_cloud_option, add_dryrun_option, completes, subcommands, verb
from cm.errors import NotFound, UsageError
from cm.names import check_length, shorten
from cm.output import add_format_options

if TYPE_CHECKING:  # for annotations only: start-up imports nothing more
    from cm.context import Context

HELP = "List, add, upload and delete ssh keys (local ones come from ~/.ssh)."
EXAMPLE = "cm key upload id_ed25519 --cloud chameleon"
COLUMNS = ["name", "cloud", "fingerprint"]
LOCAL = ""  # the scope of keys registered on this machine
PUBLIC_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")


def resolve_key(ctx: Context, cloud: str, explicit: str | None) -> tuple[str, str]:
    """(key name, public key text) from --key, the mirror's keys, or ~/.ssh."""
    wanted = ctx.value("key", cloud, explicit)
    if wanted:
        for scope in (cloud, ""):
            record = ctx.mirror.get("key", scope, wanted)
            if record and record.get("public_key"):
                return wanted, record["public_key"]
        check_length(str(wanted), "key name")
    found = _key_file(str(wanted or ""))
    if found is not None:
        return found.stem, read_public_key(found)
    return str(wanted or ""), ""  # a key the cloud knows by name only (uploaded elsewhere), or none


def public_key_file(ctx: Context, cloud: str, explicit: str | None = None) -> str:
    """The file of the public key resolve_key picks, where it is a file ("" for a key known by name only)."""
    found = _key_file(str(ctx.value("key", cloud, explicit) or ""))
    return str(found.resolve()) if found is not None else ""


def _key_file(wanted: str) -> Path | None:
    """The .pub file ``wanted`` names (a path, or a name in ~/.ssh); with none wanted, ~/.ssh's default key."""
    ssh = Path.home() / ".ssh"
    if not wanted:
        return next((ssh / name for name in PUBLIC_KEYS if (ssh / name).is_file()), None)
    path = Path(wanted).expanduser()
    for candidate in (path, ssh / f"{wanted}.pub", ssh / wanted):
        if _is_file(candidate) and candidate.suffix == ".pub":
            return candidate
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for a path, say: not a file
        return False


def read_public_key(path: Path) -> str:
    """The text of a public key file; an unreadable or binary file is a one-line usage error."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise UsageError(f"cannot read public key {shorten(str(path))}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not an ssh public key: it is not UTF-8 text") from exc
    if "PRIVATE KEY" in text:
        raise UsageError(f"{path} is a private key; give the .pub file")
    return text


def fingerprint(public_key: str) -> str:
    """The SHA256 fingerprint ssh-keygen -l prints."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError) as exc:
        raise UsageError("not an ssh public key (expected 'TYPE BASE64 [COMMENT]')") from exc
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def _local_keys(ctx: Context) -> list[dict[str, str]]:
    keys = {r["name"]: r for r in ctx.mirror.records("key", LOCAL)}
    ssh = Path.home() / ".ssh"
    for path in sorted(ssh.glob("*.pub")) if ssh.is_dir() else []:
        try:
            text = read_public_key(path)
            keys.setdefault(path.stem, {"name": path.stem, "fingerprint": fingerprint(text), "public_key": text})
        except (OSError, UsageError):
            continue  # not a key file; ~/.ssh holds other things too
    return [{**k, "cloud": "(local)"} for k in keys.values()]


def list_keys(ctx: Context, args: Namespace) -> None:
    rows = [] if args.cloud else _local_keys(ctx)
    for cloud in ctx.cloud_names(args):
        rows += inventory.records(ctx, "key", cloud, args.refresh)
    ctx.emit(COLUMNS, rows, args)


def add_key(ctx: Context, args: Namespace) -> None:
    check_length(args.name, "key name")
    path = Path(args.path or Path.home() / ".ssh" / f"{args.name}.pub").expanduser()
    text = read_public_key(path)
    ctx.mirror.put("key", LOCAL, {"name": args.name, "fingerprint": fingerprint(text), "public_key": text})
    ctx.say(f"added key {args.name} ({fingerprint(text)})")


def upload_key(ctx: Context, args: Namespace) -> None:
    cloud = ctx.cloud_name(args)
    name, public_key = resolve_key(ctx, cloud, args.name)
    if not public_key:
        raise NotFound(f"no public key '{shorten(args.name or 'default')}' here; add one with `cm key add NAME PATH`")
    if args.dryrun:
        ctx.say(f"would upload key {name} to {cloud}")
        return
    key = ctx.provider(cloud).upload_key(name, public_key)
    ctx.mirror.put("key", cloud, inventory.as_record(key))
    ctx.say(f"uploaded key {key.name} to {cloud}")


def delete_key(ctx: Context, args: Namespace) -> None:
    if args.local:
        if not ctx.mirror.get("key", LOCAL, args.name):
            raise NotFound(f"no key '{args.name}' was added with `cm key add`")
        if args.dryrun:
            ctx.say(f"would forget local key {args.name}")
            return
        ctx.mirror.remove("key", LOCAL, [args.name])
        ctx.say(f"forgot local key {args.name}")
        return
    cloud = ctx.cloud_name(args)
    if args.dryrun:
        ctx.say(f"would delete key {args.name} from {cloud}")
        return
    ctx.provider(cloud).delete_key(args.name)
    ctx.mirror.remove("key", cloud, [args.name])
    ctx.say(f"deleted key {args.name} from {cloud}")


def build(parser: ArgumentParser) -> None:
    subs = subcommands(parser)
    listing = verb(subs, "list", list_keys, "list local keys and the keys uploaded to a cloud")
    add_cloud_option(listing, allow_all=True)
    listing.add_argument("--refresh", action="store_true", help="sync the cloud's keys first")
    add_format_options(listing)
    add = verb(subs, "add", add_key, "register a local public key under a name")
    add.add_argument("name", metavar="NAME")
    add.add_argument("path", nargs="?", metavar="PATH", help="public key file (default ~/.ssh/NAME.pub)")
    upload = verb(subs, "upload", upload_key, "upload a public key to a cloud (default: your default key)")
    completes(upload.add_argument("name", nargs="?", metavar="NAME"), "key")
    add_cloud_option(upload)
    add_dryrun_option(upload)
    delete = verb(subs, "delete", delete_key, "delete a key from a cloud (or --local: forget a local one)")
    completes(delete.add_argument("name", metavar="NAME"), "key")
    delete.add_argument("--local", action="store_true", help="forget a key added with `cm key add`")
    add_cloud_option(delete)
    add_dryrun_option(delete)
