"""Neutron's ``standard-attr-tag`` extension: tags on networks, subnets, ports, routers, security
groups and floating IPs (replace all, add one, check one, remove one, remove all)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from .core import Request, Response, neutron_error, now
from .network import NETWORKS, PORTS, SUBNETS
from .network_common import V, Kind, Record, router
from .network_routers import ROUTERS
from .network_security import FLOATING_IPS, SECURITY_GROUPS
from .state import owned

KINDS: dict[str, Kind] = {k.path: k for k in (NETWORKS, SUBNETS, PORTS, ROUTERS, SECURITY_GROUPS, FLOATING_IPS)}
MAX_LENGTH = 255  # Neutron's limit on one tag
_RESOURCE = "(?P<res>" + "|".join(KINDS) + ")"


def _tag(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_LENGTH or "," in value:
        raise neutron_error(400, f"Invalid input for operation: '{value}' is not a valid tag "
                                 f"(a string of 1 to {MAX_LENGTH} characters without commas).", "InvalidInput")
    return value


def _record(req: Request, change: bool) -> Record:
    kind = KINDS[req.match["res"]]  # type: ignore[index]
    obj = kind.find(req)
    if change and not owned(obj):
        raise neutron_error(403, "disallowed by policy", "PolicyNotAuthorized")
    return obj


def _changed(obj: Record) -> None:
    obj["updated_at"] = now()
    obj["revision_number"] = obj.get("revision_number", 0) + 1


@router.route("GET", V + "/" + _RESOURCE + r"/(?P<id>[^/]+)/tags")
def list_tags(req: Request) -> Response:
    with req.state.lock:
        return Response(200, {"tags": list(_record(req, False).get("tags", []))})


@router.route("PUT", V + "/" + _RESOURCE + r"/(?P<id>[^/]+)/tags")
def replace_tags(req: Request) -> Response:
    body = req.json("network")
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise neutron_error(400, "Invalid input for operation: a body {\"tags\": [...]} is required.",
                            "InvalidInput")
    tags = list(dict.fromkeys(_tag(t) for t in body["tags"]))
    with req.state.lock:
        obj = _record(req, True)
        obj["tags"] = tags
        _changed(obj)
        return Response(200, {"tags": list(tags)})


@router.route("DELETE", V + "/" + _RESOURCE + r"/(?P<id>[^/]+)/tags")
def remove_all_tags(req: Request) -> Response:
    with req.state.lock:
        obj = _record(req, True)
        obj["tags"] = []
        _changed(obj)
    return Response(204)


@router.route("GET", V + "/" + _RESOURCE + r"/(?P<id>[^/]+)/tags/(?P<tag>[^/]+)")
def check_tag(req: Request) -> Response:
    tag = unquote(req.match["tag"])  # type: ignore[index]
    with req.state.lock:
        if tag not in _record(req, False).get("tags", []):
            raise neutron_error(404, f"Tag {tag} could not be found.", "TagNotFound")
    return Response(204)


@router.route("PUT", V + "/" + _RESOURCE + r"/(?P<id>[^/]+)/tags/(?P<tag>[^/]+)")
def add_tag(req: Request) -> Response:
    tag = _tag(unquote(req.match["tag"]))  # type: ignore[index]
    with req.state.lock:
        obj = _record(req, True)
        if tag not in obj.setdefault("tags", []):
            obj["tags"].append(tag)
            _changed(obj)
    return Response(201)


@router.route("DELETE", V + "/" + _RESOURCE + r"/(?P<id>[^/]+)/tags/(?P<tag>[^/]+)")
def remove_tag(req: Request) -> Response:
    tag = unquote(req.match["tag"])  # type: ignore[index]
    with req.state.lock:
        obj = _record(req, True)
        if tag not in obj.get("tags", []):
            raise neutron_error(404, f"Tag {tag} could not be found.", "TagNotFound")
        obj["tags"].remove(tag)
        _changed(obj)
    return Response(204)
