"""Keystone v3: version discovery, password/token auth, catalog, projects."""

from __future__ import annotations

import secrets
from typing import Any

from .core import Request, Response, Router, iso, keystone_error, lookup, new_id, now
from .state import (DOMAIN_ID, DOMAIN_NAME, PROJECT_ID, REGION, USER_ID,
                    State, stable_id)

router = Router()

_UPDATED = "2023-03-04T00:00:00Z"


def _version_doc(base: str) -> dict[str, Any]:
    return {
        "id": "v3.14",
        "status": "stable",
        "updated": _UPDATED,
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [
            {"base": "application/json",
             "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@router.route("GET", r"/?", auth=False)
def versions(req: Request) -> Response:
    return Response(300, {"versions": {"values": [_version_doc(req.base_url)]}})


@router.route("GET", r"/v3/?", auth=False)
def version_v3(req: Request) -> Response:
    return Response(200, {"version": _version_doc(req.base_url)})


def catalog(base: str) -> list[dict[str, Any]]:
    services = [
        ("identity", "keystone", f"{base}/identity"),
        ("compute", "nova", f"{base}/compute/v2.1"),
        ("image", "glance", f"{base}/image"),
        ("network", "neutron", f"{base}/networking"),
    ]
    out = []
    for stype, name, url in services:
        out.append({
            "id": stable_id("service", stype),
            "type": stype,
            "name": name,
            "endpoints": [{
                "id": stable_id("endpoint", stype, "public"),
                "interface": "public",
                "region_id": REGION,
                "region": REGION,
                "url": url,
            }],
        })
    return out


def _token_body(state: State, tok: dict[str, Any], base: str) -> dict[str, Any]:
    domain = {"id": DOMAIN_ID, "name": DOMAIN_NAME}
    body: dict[str, Any] = {
        "methods": tok["methods"],
        "user": {"domain": domain, "id": tok["user_id"], "name": tok["user_name"],
                 "password_expires_at": None},
        "audit_ids": [tok["audit_id"]],
        "expires_at": iso(tok["expires"], micro=True),
        "issued_at": iso(tok["issued"], micro=True),
    }
    if tok.get("project_id"):
        proj = state.projects[tok["project_id"]]
        body["project"] = {"domain": domain, "id": proj["id"], "name": proj["name"]}
        body["is_domain"] = False
        body["roles"] = [
            {"id": stable_id("role", "member"), "name": "member"},
            {"id": stable_id("role", "reader"), "name": "reader"},
        ]
        body["catalog"] = catalog(base)
    return {"token": body}


def _unauthorized() -> Exception:
    return keystone_error(401, "The request you have made requires authentication.")


def _domain_ok(d: dict[str, Any] | None) -> bool:
    if not d:
        return False
    if "id" in d:
        return d["id"] == DOMAIN_ID
    return str(d.get("name", "")).lower() == DOMAIN_NAME.lower()


def _resolve_project(state: State, scope: Any) -> str | None:
    if not scope:
        return None
    if not isinstance(scope, dict) or "project" not in scope:
        raise keystone_error(401, "The request you have made requires authentication.")
    p = scope["project"] or {}
    if "id" in p:
        if p["id"] in state.projects:
            return p["id"]
        raise _unauthorized()
    if not _domain_ok(p.get("domain")):
        raise _unauthorized()
    for proj in state.projects.values():
        if proj["name"] == p.get("name"):
            return proj["id"]
    raise _unauthorized()


@router.route("POST", r"/v3/auth/tokens", auth=False)
def issue_token(req: Request) -> Response:
    state: State = req.state
    body = req.json("identity")
    try:
        ident = body["auth"]["identity"]
        methods = ident["methods"]
    except (KeyError, TypeError):
        raise keystone_error(400, "Invalid input for field 'identity': 'methods' is a required property")
    scope = body["auth"].get("scope")
    with state.lock:
        if "password" in methods:
            u = (ident.get("password") or {}).get("user") or {}
            user = None
            if "id" in u:
                user = next((x for x in state.users.values() if x["id"] == u["id"]), None)
            elif _domain_ok(u.get("domain")):
                user = state.users.get(u.get("name", ""))
            if user is None or u.get("password") != user["password"]:
                raise _unauthorized()
            user_id, user_name = user["id"], user["name"]
        elif "token" in methods:
            old = state.tokens.get((ident.get("token") or {}).get("id", ""))
            if not old or old["expires"] < now():
                raise _unauthorized()
            user_id, user_name = old["user_id"], old["user_name"]
        else:
            raise _unauthorized()
        project_id = _resolve_project(state, scope)
        t = now()
        token = "gAAAAA" + secrets.token_urlsafe(96)
        tok = {"user_id": user_id, "user_name": user_name,
               "project_id": project_id, "methods": methods,
               "issued": t, "expires": t + state.token_ttl,
               "audit_id": secrets.token_urlsafe(16)[:22]}
        state.tokens[token] = tok
        out = _token_body(state, tok, req.base_url)
    return Response(201, out, {"X-Subject-Token": token})


def _subject(req: Request) -> dict[str, Any]:
    state: State = req.state
    sub = req.header("X-Subject-Token") or ""
    tok = state.tokens.get(sub)
    if not tok or tok["expires"] < now():
        raise keystone_error(404, f"Could not find token: {sub}.")
    return tok


@router.route("GET", r"/v3/auth/tokens")
def validate_token(req: Request) -> Response:
    tok = _subject(req)
    return Response(200, _token_body(req.state, tok, req.base_url),
                    {"X-Subject-Token": req.header("X-Subject-Token") or ""})


@router.route("DELETE", r"/v3/auth/tokens")
def revoke_token(req: Request) -> Response:
    _subject(req)
    with req.state.lock:
        req.state.tokens.pop(req.header("X-Subject-Token"), None)
    return Response(204)


def _project_body(req: Request, p: dict[str, Any]) -> dict[str, Any]:
    return {"id": p["id"], "name": p["name"], "description": p["description"],
            "domain_id": DOMAIN_ID, "enabled": True, "is_domain": False,
            "parent_id": DOMAIN_ID, "tags": [], "options": {},
            "links": {"self": f"{req.base_url}/identity/v3/projects/{p['id']}"}}


@router.route("GET", r"/v3/(?:auth/projects|projects|users/[^/]+/projects)")
def list_projects(req: Request) -> Response:
    state: State = req.state
    name = req.q("name")
    projects = [_project_body(req, p) for p in state.projects.values()
                if name is None or p["name"] == name]
    return _collection(req, "projects", projects)


@router.route("GET", r"/v3/projects/(?P<pid>[^/]+)")
def show_project(req: Request) -> Response:
    p = lookup(req.state.projects, req.match["pid"],  # type: ignore[index]
               lambda k: keystone_error(404, f"Could not find project: {k}."))
    return Response(200, {"project": _project_body(req, p)})


@router.route("GET", r"/v3/users/(?P<uid>[^/]+)")
def show_user(req: Request) -> Response:
    uid = req.match["uid"]  # type: ignore[index]
    if uid != USER_ID:
        raise keystone_error(404, f"Could not find user: {uid}.")
    return Response(200, {"user": {
        "id": USER_ID, "name": "demo", "domain_id": DOMAIN_ID, "enabled": True,
        "default_project_id": PROJECT_ID, "password_expires_at": None,
        "options": {}, "links": {"self": f"{req.base_url}/identity/v3/users/{uid}"}}})


@router.route("GET", r"/v3/(?:regions)")
def list_regions(req: Request) -> Response:
    return _collection(req, "regions", [{
        "id": REGION, "description": "", "parent_region_id": None,
        "links": {"self": f"{req.base_url}/identity/v3/regions/{REGION}"}}])


@router.route("GET", r"/v3/auth/catalog")
def get_catalog(req: Request) -> Response:
    return _collection(req, "catalog", catalog(req.base_url))


def _collection(req: Request, key: str, items: list[dict[str, Any]]) -> Response:
    """A Keystone list: all of ``items`` on one page, linked to itself."""
    return Response(200, {key: items, "links": {"self": f"{req.base_url}{req.path}",
                                                "previous": None, "next": None}})


def check_token(state: State, token: str | None) -> dict[str, Any] | None:
    if not token:
        return None
    tok = state.tokens.get(token)
    if not tok or tok["expires"] < now() or not tok.get("project_id"):
        return None
    return tok


__all__ = ["router", "check_token", "catalog", "new_id"]
