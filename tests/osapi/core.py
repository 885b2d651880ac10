"""Shared plumbing for the local OpenStack API server.

Request/response objects, error bodies in each service's real shape,
id/time helpers and the small regex router every service module uses.
Standard library only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import time
import urllib.parse
import uuid
from typing import Any, Callable

# Fixed namespace so seeded objects get the same ids on every run/reset.
_NS = uuid.UUID("6f1d3c2e-8b4a-4f0e-9a51-0c0ffee0a5a1")


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_NS, "/".join(parts)))


def new_id() -> str:
    return str(uuid.uuid4())


def iso(ts: float | None, micro: bool = False) -> str | None:
    """Nova/Neutron style UTC timestamp: 2024-01-01T00:00:00Z."""
    if ts is None:
        return None
    d = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)
    if micro:
        return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return d.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_naive(ts: float | None) -> str | None:
    """Nova usage/launched_at style: 2024-01-01T00:00:00.000000 (no zone)."""
    if ts is None:
        return None
    d = _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%f")


def parse_time(value: str) -> float:
    """Parse the ISO timestamps clients send (with or without zone)."""
    v = value.strip().replace("Z", "+00:00")
    if " " in v and "T" not in v:
        v = v.replace(" ", "T", 1)
    d = _dt.datetime.fromisoformat(v)
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return d.timestamp()


def request_id() -> str:
    return "req-" + new_id()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - not security


class ApiError(Exception):
    """Raised by handlers; carries a complete HTTP error response."""

    def __init__(
        self,
        status: int,
        body: Any,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ):
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type


# ---------------------------------------------------------------- errors

_NOVA_FAULT_NAMES = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    409: "conflictingRequest",
    413: "overLimit",
    415: "badMediaType",
    429: "overLimit",
    501: "notImplemented",
    503: "serviceUnavailable",
}

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Request Entity Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reason(status: int) -> str:
    return _REASONS.get(status, "Error")


def nova_error(status: int, message: str) -> ApiError:
    key = _NOVA_FAULT_NAMES.get(status, "computeFault")
    return ApiError(status, {key: {"code": status, "message": message}})


_NEUTRON_TYPES = {
    400: "BadRequest",
    401: "NotAuthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def neutron_error(status: int, message: str, type_: str | None = None) -> ApiError:
    return ApiError(
        status,
        {
            "NeutronError": {
                "type": type_ or _NEUTRON_TYPES.get(status, "NeutronError"),
                "message": message,
                "detail": "",
            }
        },
    )


def glance_error(status: int, message: str) -> ApiError:
    # Glance answers errors with a small HTML page, not JSON.
    title = f"{status} {reason(status)}"
    html = (
        f"<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n"
        f"  <h1>{title}</h1>\n  {message}<br /><br />\n\n\n\n </body>\n</html>"
    )
    return ApiError(status, html, content_type="text/html; charset=UTF-8")


def keystone_error(status: int, message: str) -> ApiError:
    return ApiError(
        status,
        {"error": {"code": status, "message": message, "title": reason(status)}},
    )


def service_error(service: str, status: int, message: str) -> ApiError:
    if service == "compute":
        return nova_error(status, message)
    if service == "network":
        return neutron_error(status, message)
    if service == "image":
        return glance_error(status, message)
    return keystone_error(status, message)


# ---------------------------------------------------------------- request


class Request:
    def __init__(
        self,
        method: str,
        raw_path: str,
        headers: Any,
        body: bytes,
        base_url: str,
    ):
        self.method = method.upper()
        parts = urllib.parse.urlsplit(raw_path)
        self.path = parts.path or "/"
        self.query_string = parts.query
        self.query: dict[str, list[str]] = urllib.parse.parse_qs(
            parts.query, keep_blank_values=True
        )
        self.headers = headers
        self.body = body
        self.base_url = base_url
        self.service = ""
        self.subpath = ""  # path below the service prefix
        self.match: re.Match[str] | None = None
        self.token: dict[str, Any] | None = None
        self.state: Any = None  # the State object, set by the HTTP handler
        self.microversion: tuple[int, int] = (2, 1)
        self._json: Any = None
        self._json_loaded = False

    def header(self, name: str, default: str | None = None) -> str | None:
        v = self.headers.get(name)
        return default if v is None else v

    def q(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[-1] if vals else default

    def json(self, service: str = "compute") -> Any:
        if not self._json_loaded:
            self._json_loaded = True
            if not self.body:
                self._json = None
            else:
                try:
                    self._json = json.loads(self.body.decode("utf-8"))
                except (ValueError, UnicodeDecodeError) as exc:
                    if service == "network":
                        raise neutron_error(
                            400, f"Malformed request body: {exc}", "HTTPBadRequest"
                        )
                    raise service_error(
                        service, 400, "Malformed request body"
                    ) from exc
        return self._json

    def mv_at_least(self, major: int, minor: int) -> bool:
        return self.microversion >= (major, minor)


class Response:
    def __init__(
        self,
        status: int = 200,
        body: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.content_type = content_type

    def encode(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8")
        return json.dumps(self.body).encode("utf-8")


Handler = Callable[[Request], Response]


class Router:
    """(method, regex) -> handler table for one service."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler, bool]] = []

    def add(self, method: str, pattern: str, fn: Handler, auth: bool = True) -> None:
        self.routes.append((method.upper(), re.compile("^" + pattern + "$"), fn, auth))

    def route(self, method: str, pattern: str, auth: bool = True):
        def deco(fn: Handler) -> Handler:
            self.add(method, pattern, fn, auth)
            return fn

        return deco

    def find(
        self, method: str, path: str
    ) -> tuple[Handler | None, re.Match[str] | None, bool, bool]:
        """Returns (handler, match, needs_auth, path_known)."""
        path_known = False
        for m, rx, fn, auth in self.routes:
            mt = rx.match(path)
            if not mt:
                continue
            path_known = True
            if m == method or (m == "GET" and method == "HEAD"):
                return fn, mt, auth, True
        return None, None, True, path_known


def paginate(
    items: list[dict[str, Any]],
    req: Request,
    id_key: str = "id",
    default_limit: int | None = None,
    max_limit: int | None = None,
    not_found: Callable[[str], ApiError] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """limit/marker pagination; returns (page, next_marker or None)."""
    marker = req.q("marker")
    limit_s = req.q("limit")
    if marker:
        idx = next((i for i, it in enumerate(items) if it[id_key] == marker), None)
        if idx is None:
            if not_found is not None:
                raise not_found(marker)
            items = []
        else:
            items = items[idx + 1 :]
    limit = default_limit
    if limit_s not in (None, ""):
        try:
            limit = int(limit_s)  # type: ignore[arg-type]
        except ValueError:
            limit = default_limit
    if max_limit is not None and (limit is None or limit > max_limit):
        limit = max_limit
    if limit is not None and limit >= 0 and len(items) >= limit and items:
        page = items[:limit]
        nxt = page[-1][id_key] if len(items) >= limit and limit > 0 else None
        # Nova/Neutron give a next link whenever the page is full.
        return page, nxt
    return items, None


def lookup(
    rows: dict[str, dict[str, Any]],
    key: str,
    missing: Callable[[str], ApiError],
    visible: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """rows[key], or the service's 404 ``missing(key)`` when it is absent or
    (by ``visible``) not the caller's to see."""
    obj = rows.get(key)
    if obj is None or (visible is not None and not visible(obj)):
        raise missing(key)
    return obj


def quota_request(req: Request, service: str) -> tuple[str, str | None, dict[str, int],
                                                      dict[str, int]]:
    """(project id, URL suffix, limits, usage) of a quota GET ("compute" or
    "network") whose route captured ``pid`` and ``kind`` (/detail(s), /default(s))."""
    pid, kind = req.match["pid"], req.match["kind"]  # type: ignore[index]
    with req.state.lock:
        limits, used = req.state.quota_of(service, pid, kind in ("/default", "/defaults"))
        return pid, kind, dict(limits), dict(used)


def with_query(url: str, req: Request, **overrides: Any) -> str:
    q = {k: v for k, v in req.query.items() if k not in overrides}
    for k, v in overrides.items():
        if v is not None:
            q[k] = [str(v)]
    qs = urllib.parse.urlencode([(k, x) for k, vs in q.items() for x in vs])
    return url + ("?" + qs if qs else "")


def add_next_link(body: dict[str, Any], coll: str, req: Request, url: str,
                  marker: str | None) -> dict[str, Any]:
    """Nova/Neutron paging: ``<coll>_links`` with a next href when a page is full."""
    if marker:
        body[f"{coll}_links"] = [{"rel": "next", "href": with_query(url, req, marker=marker)}]
    return body


def now() -> float:
    return time.time()
