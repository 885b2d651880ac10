"""Glance v2 writes: image create (POST /v2/images), upload and download of the file, JSON-patch
updates, members and the member schemas.  Checksums are computed over what was stored."""

from __future__ import annotations

import hashlib
import struct
import uuid
from typing import Any

from .core import Request, Response, glance_error, iso, now
from .image import _image, image_view, router
from .state import PROJECT_ID, State

DISK_FORMATS = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]
CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
READ_ONLY = {"checksum", "os_hash_algo", "os_hash_value", "size", "virtual_size", "status", "owner",
             "created_at", "updated_at", "file", "schema", "self", "direct_url", "locations", "stores"}
MEMBER_STATUSES = ("pending", "accepted", "rejected")


def _schema_error(value: Any, name: str, allowed: list[str]) -> Exception:
    return glance_error(400, f"Provided object does not match schema 'image': {value!r} is not one of "
                             f"{[None, *allowed]!r} Failed validating 'enum' in schema['properties']['{name}']")


def _check_attributes(body: dict[str, Any]) -> None:
    for key in body:
        if key in READ_ONLY:
            raise glance_error(403, f"Attribute '{key}' is read-only.")
    for name, allowed in (("disk_format", DISK_FORMATS), ("container_format", CONTAINER_FORMATS)):
        if body.get(name) is not None and body[name] not in allowed:
            raise _schema_error(body[name], name, allowed)
    if body.get("visibility", "shared") not in ("public", "private", "shared", "community"):
        raise glance_error(400, f"Invalid visibility value: {body['visibility']}")
    if body.get("visibility") == "public":
        raise glance_error(403, 'You are not authorized to complete publicize_image action.')
    for key in ("min_disk", "min_ram"):
        if key in body and (not isinstance(body[key], int) or body[key] < 0):
            raise glance_error(400, f"Provided object does not match schema 'image': {body[key]!r} is not of "
                                    f"type 'integer' (or is negative) for '{key}'")
    if "tags" in body and not (isinstance(body["tags"], list) and all(isinstance(t, str) for t in body["tags"])):
        raise glance_error(400, "Provided object does not match schema 'image': tags must be a list of strings")
    for key, value in body.items():
        if key not in ("tags", "min_disk", "min_ram", "protected", "os_hidden") and \
                value is not None and not isinstance(value, str):
            raise glance_error(400, f"Provided object does not match schema 'image': {value!r} is not of "
                                    f"type 'string' for '{key}'")


@router.route("POST", r"/v2/images")
def create_image(req: Request) -> Response:
    body = req.json("image")
    if not isinstance(body, dict):
        raise glance_error(400, "Body expected in request.")
    _check_attributes(body)
    st: State = req.state
    iid = str(body.get("id") or uuid.uuid4())
    try:
        uuid.UUID(iid)
    except ValueError:
        raise glance_error(400, f"Provided object does not match schema 'image': {iid!r} is not a 'uuid'")
    t = now()
    image = {"id": iid, "name": body.get("name"), "status": "queued", "visibility": body.get("visibility", "shared"),
             "protected": bool(body.get("protected", False)), "os_hidden": bool(body.get("os_hidden", False)),
             "checksum": None, "os_hash_algo": None, "os_hash_value": None, "owner": PROJECT_ID, "size": None,
             "virtual_size": None, "min_disk": body.get("min_disk", 0), "min_ram": body.get("min_ram", 0),
             "disk_format": body.get("disk_format"), "container_format": body.get("container_format"),
             "created_at": t, "updated_at": t, "tags": list(dict.fromkeys(body.get("tags", []))),
             "stores": ""}
    image.update({k: v for k, v in body.items() if k not in image})
    with st.lock:
        if iid in st.images:
            raise glance_error(409, f"Image with identifier {iid} already exists!")
        st.images[iid] = image
        return Response(201, image_view(image), {"Location": f"{req.base_url}/image/v2/images/{iid}"})


def _virtual_size(data: bytes, fmt: str | None) -> int | None:
    """What Glance's inspector reports: a qcow2 header's size, a raw file's length."""
    if fmt == "qcow2" and data[:4] == b"QFI\xfb" and len(data) >= 32:
        return int(struct.unpack(">Q", data[24:32])[0])
    return len(data) if fmt in ("raw", "iso") else None


@router.route("PUT", r"/v2/images/(?P<iid>[^/]+)/file")
def upload_file(req: Request) -> Response:
    st: State = req.state
    kind = (req.header("Content-Type") or "").split(";")[0].strip()
    if kind != "application/octet-stream":
        raise glance_error(415, f"Content type {kind or 'none'} not supported; use application/octet-stream")
    with st.lock:
        image = _image(req)
        if image["owner"] != PROJECT_ID:
            raise glance_error(403, "You are not permitted to upload data to this image.")
        if image["status"] != "queued":
            raise glance_error(409, f"Image status transition from {image['status']} to saving is not allowed")
        if not image.get("disk_format") or not image.get("container_format"):
            raise glance_error(400, "Properties disk_format, container_format must be set prior to saving data.")
        data = req.body
        if st.corrupt_uploads and data:
            st.corrupt_uploads -= 1
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        st.image_data[image["id"]] = data
        image.update(status="active", size=len(data), checksum=hashlib.md5(data).hexdigest(),  # noqa: S324
                     os_hash_algo="sha512", os_hash_value=hashlib.sha512(data).hexdigest(),
                     virtual_size=_virtual_size(data, image["disk_format"]), stores="file", updated_at=now())
    return Response(204)


@router.route("GET", r"/v2/images/(?P<iid>[^/]+)/file")
def download_file(req: Request) -> Response:
    st: State = req.state
    with st.lock:
        image = _image(req)
        data = st.image_data.get(image["id"])
        if data is None:
            return Response(204)
        return Response(200, data, {"Content-MD5": image["checksum"]}, content_type="application/octet-stream")


def _patch_path(op: dict[str, Any]) -> str:
    path = op.get("path")
    if not isinstance(path, str) or not path.startswith("/") or path.count("/") > 2:
        raise glance_error(400, f"Invalid JSON pointer for this resource: '{path}'")
    return path[1:].replace("~1", "/").replace("~0", "~")


@router.route("PATCH", r"/v2/images/(?P<iid>[^/]+)")
def update_image(req: Request) -> Response:
    kind = (req.header("Content-Type") or "").split(";")[0].strip()
    if kind not in ("application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch"):
        raise glance_error(415, f"Unsupported Content-Type {kind}")
    ops = req.json("image")
    if not isinstance(ops, list):
        raise glance_error(400, "Body must be a JSON-patch list.")
    st: State = req.state
    with st.lock:
        image = _image(req)
        if image["owner"] != PROJECT_ID:
            raise glance_error(403, "You are not permitted to modify this image.")
        changed = dict(image)
        for op in ops:
            name = _patch_path(op if isinstance(op, dict) else {})
            if op.get("op") in ("add", "replace"):
                _check_attributes({name: op.get("value")})
                changed[name] = op.get("value")
            elif op.get("op") == "remove":
                if name in READ_ONLY or name not in changed:
                    raise glance_error(409, f"Property {name} does not exist.")
                del changed[name]
            else:
                raise glance_error(400, f"Operation objects must contain exactly one member named 'op': {op}")
        changed["updated_at"] = now()
        image.clear()
        image.update(changed)
        return Response(200, image_view(image))


# ------------------------------------------------------------ members

def _member_view(iid: str, member: dict[str, Any]) -> dict[str, Any]:
    return {"image_id": iid, "member_id": member["member_id"], "status": member["status"],
            "created_at": iso(member["created_at"]), "updated_at": iso(member["updated_at"]),
            "schema": "/v2/schemas/member"}


def _shared(req: Request, own: bool = True) -> dict[str, Any]:
    image = _image(req)
    if own and image["owner"] != PROJECT_ID:
        raise glance_error(403, "You are not permitted to modify this image's members.")
    if image["visibility"] != "shared":
        raise glance_error(403, "Only shared images have members.")
    return image


@router.route("GET", r"/v2/images/(?P<iid>[^/]+)/members")
def list_members(req: Request) -> Response:
    st: State = req.state
    with st.lock:
        image = _shared(req, own=False)
        members = st.image_members.get(image["id"], {})
        return Response(200, {"members": [_member_view(image["id"], m) for m in members.values()],
                              "schema": "/v2/schemas/members"})


@router.route("POST", r"/v2/images/(?P<iid>[^/]+)/members")
def add_member(req: Request) -> Response:
    body = req.json("image")
    if not isinstance(body, dict) or not isinstance(body.get("member"), str) or not body["member"]:
        raise glance_error(400, "Request body must be a JSON object with a 'member' string.")
    st: State = req.state
    with st.lock:
        image = _shared(req)
        members = st.image_members.setdefault(image["id"], {})
        if body["member"] in members:
            raise glance_error(409, f"Member {body['member']} already exists for image {image['id']}")
        t = now()
        members[body["member"]] = {"member_id": body["member"], "status": "pending", "created_at": t,
                                   "updated_at": t}
        return Response(200, _member_view(image["id"], members[body["member"]]))


def _member(req: Request, st: State) -> tuple[dict[str, Any], dict[str, Any]]:
    image = _shared(req, own=False)
    member = st.image_members.get(image["id"], {}).get(req.match["mid"])  # type: ignore[index]
    if member is None:
        raise glance_error(404, f"Member {req.match['mid']} not found for image {image['id']}")  # type: ignore[index]
    return image, member


@router.route("GET", r"/v2/images/(?P<iid>[^/]+)/members/(?P<mid>[^/]+)")
def show_member(req: Request) -> Response:
    with req.state.lock:
        image, member = _member(req, req.state)
        return Response(200, _member_view(image["id"], member))


@router.route("PUT", r"/v2/images/(?P<iid>[^/]+)/members/(?P<mid>[^/]+)")
def update_member(req: Request) -> Response:
    body = req.json("image")
    status = body.get("status") if isinstance(body, dict) else None
    if status not in MEMBER_STATUSES:
        raise glance_error(400, f"Provided object does not match schema 'member': {status!r} is not one of "
                                f"{list(MEMBER_STATUSES)!r}")
    with req.state.lock:
        image, member = _member(req, req.state)
        if member["member_id"] != PROJECT_ID:
            raise glance_error(403, "Only the member can change its status.")
        member.update(status=status, updated_at=now())
        return Response(200, _member_view(image["id"], member))


@router.route("DELETE", r"/v2/images/(?P<iid>[^/]+)/members/(?P<mid>[^/]+)")
def remove_member(req: Request) -> Response:
    st: State = req.state
    with st.lock:
        image, member = _member(req, st)
        if image["owner"] != PROJECT_ID:
            raise glance_error(403, "You are not permitted to modify this image's members.")
        del st.image_members[image["id"]][member["member_id"]]
    return Response(204)


_MEMBER_PROPERTIES = {"image_id": {"type": "string", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-"
                                                               "([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"},
                      "member_id": {"type": "string"}, "created_at": {"type": "string"},
                      "updated_at": {"type": "string"}, "status": {"type": "string", "enum": list(MEMBER_STATUSES)},
                      "schema": {"readOnly": True, "type": "string"}}


@router.route("GET", r"/v2/schemas/member")
def member_schema(req: Request) -> Response:
    return Response(200, {"name": "member", "properties": _MEMBER_PROPERTIES})


@router.route("GET", r"/v2/schemas/members")
def members_schema(req: Request) -> Response:
    return Response(200, {"name": "members", "properties": {
        "members": {"type": "array", "items": {"name": "member", "properties": _MEMBER_PROPERTIES}},
        "schema": {"type": "string"}}, "links": [{"href": "{schema}", "rel": "describedby"}]})
