"""The polled listings (clusters, computesets) answered straight from their cache, before FastAPI.

Fifty clients polling the same listing cost FastAPI's whole request machinery
(middleware stack, routing, dependency solving) per request, several times the
cost of the answer itself.  This ASGI wrapper answers a GET of a listing only
when the token is one the service already checked (the same in-memory check the
routes use first) and the listing's current version is cached; anything else
(an unknown token, a signed or Basic request, a cold cache, another path) goes
to the application unchanged, which authenticates, builds and caches as before.
Each listing it answers is counted in ``app.state.metrics`` (``GET <base>/metrics``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers

from cm_nucleus import API_VERSION

JSON_HEADERS = [(b"content-type", b"application/json")]


def listing_key(user: str, what: str, query: str) -> tuple[Any, ...]:
    """The cache key of a listing: the routes and this wrapper must agree on it."""
    if what == "clusters":
        return (user, "clusters")
    states = tuple(v for k, v in parse_qsl(query, keep_blank_values=True) if k == "state")
    return (user, "computesets", states)


class CachedListings:
    """ASGI wrapper: a cached listing for an already-known token, else the application."""

    def __init__(self, app: Any) -> None:
        self.app = app
        base = f"{app.state.service.settings.base_path}/{API_VERSION}"
        self.paths = {f"{base}/cluster/": "clusters", f"{base}/computeset/": "computesets"}

    def cached(self, scope: dict[str, Any]) -> bytes | None:
        what = self.paths.get(scope["path"])
        if what is None or scope["method"] != "GET":
            return None
        user = self.app.state.auth.known_token(Headers(scope=scope))
        if user is None:
            return None
        key = listing_key(user, what, scope.get("query_string", b"").decode("latin-1"))
        return self.app.state.listings.get((self.app.state.service.store.version, *key))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = self.cached(scope) if scope["type"] == "http" else None
        if body is None:
            await self.app(scope, receive, send)
            return
        self.app.state.metrics["listings_from_fastpath"] += 1  # one event loop: no lock needed
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
