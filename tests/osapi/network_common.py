"""Neutron helpers shared by network.py and network_security.py: the router,
request bodies, list filtering/sorting/paging, and ``Kind``, one resource
type (where it lives in State, how it is found, shown, listed, updated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .core import (Request, Response, Router, add_next_link, iso, lookup, neutron_error, now,
                   paginate)
from .state import PROJECT_ID, State, owned

router = Router()
V = r"/v2\.0"

_NON_FILTERS = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse",
                "tags", "tags-any", "not-tags", "not-tags-any"}

Record = dict[str, Any]
Builder = Callable[[Request, State, Record], Record]  # (req, state, body) -> new record
Check = Callable[[State, Record, Record], None]       # (state, record, body) on update


def _st(req: Request) -> State:
    return req.state


def _body(req: Request, key: str) -> Record:
    body = req.json("network")
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise neutron_error(400, "Resource body required", "HTTPBadRequest")
    return body[key]  # type: ignore[no-any-return]


def _truthy(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _match(item: Record, key: str, values: list[str]) -> bool:
    if key == "fixed_ips":
        for cond in values:
            k, _, v = cond.partition("=")
            if not any(str(f.get(k)) == v for f in item.get("fixed_ips", [])):
                return False
        return True
    if key not in item:
        return True  # unknown filters are ignored
    cur = item[key]
    if isinstance(cur, list):
        return any(v in [str(c) for c in cur] for v in values)
    cv = _truthy(cur)
    return any(cv == v or (isinstance(cur, bool) and cv == v.lower()) for v in values)


def _listing(req: Request, coll: str, items: list[Record],
             view: Callable[[Record], Record]) -> Response:
    out = [view(i) for i in items]
    for k, vals in req.query.items():
        if k in _NON_FILTERS:
            continue
        out = [i for i in out if _match(i, k, vals)]
    if req.q("tags"):
        need = set((req.q("tags") or "").split(","))
        out = [i for i in out if need <= set(i.get("tags", []))]
    if req.q("tags-any"):
        anyt = set((req.q("tags-any") or "").split(","))
        out = [i for i in out if anyt & set(i.get("tags", []))]
    keys = req.query.get("sort_key", [])
    dirs = req.query.get("sort_dir", [])
    for idx in reversed(range(len(keys))):
        k = keys[idx]
        rev = (dirs[idx] if idx < len(dirs) else "asc") == "desc"
        out.sort(key=lambda i: _truthy(i.get(k)), reverse=rev)
    page, nxt = paginate(out, req, not_found=lambda m: neutron_error(
        404, f"Marker {m} could not be found.", "NotFound"))
    fields = req.query.get("fields")
    if fields:
        page = [{k: v for k, v in i.items() if k in fields} for i in page]
    return Response(200, add_next_link({coll: page}, coll, req,
                                       f"{req.base_url}/networking/v2.0/{coll}", nxt))


def _ts(d: Record) -> Record:
    out = dict(d)
    for k in ("created_at", "updated_at"):
        if k in out:
            out[k] = iso(out[k])
    return out


def _one(req: Request, key: str, item: Record, status: int = 200) -> Response:
    fields = req.query.get("fields")
    if fields:
        item = {k: v for k, v in item.items() if k in fields}
    return Response(status, {key: item})


def _quota_check(st: State, res: str, used: int) -> None:
    limit = st.neutron_quota.get(res, -1)
    if limit >= 0 and used + 1 > limit:
        raise neutron_error(409, f"Quota exceeded for resources: ['{res}'].", "OverQuota")


def _own_or_403(obj: Record) -> None:
    """Only the owner may change what other projects can merely see."""
    if obj["project_id"] != PROJECT_ID:
        raise neutron_error(403, "disallowed by policy", "PolicyNotAuthorized")


def _copy_fields(obj: Record, body: Record, fields: tuple[str, ...]) -> None:
    for k in fields:
        if k in body:
            obj[k] = body[k]


def parse_routes(routes: Any, field: str) -> list[Record]:
    """A list of {destination: CIDR, nexthop: IP} (host routes, a router's extra routes), normalized."""
    import ipaddress

    if not isinstance(routes, list):
        raise neutron_error(400, f"Invalid input for {field}. Reason: '{routes}' is not a list.", "HTTPBadRequest")
    out = []
    for route in routes:
        try:
            dest = ipaddress.ip_network(str(route["destination"]), strict=False)
            hop = ipaddress.ip_address(str(route["nexthop"]))
        except (KeyError, TypeError, ValueError):
            raise neutron_error(400, f"Invalid input for {field}. Reason: Invalid data format for hostroute: "
                                     f"'{route}'.", "HTTPBadRequest")
        out.append({"destination": str(dest), "nexthop": str(hop)})
    return out


def plain_view(st: State, obj: Record) -> Record:
    """How a resource without computed attributes is shown."""
    return _ts(obj)


def owned_by_demo(st: State, obj: Record) -> bool:
    return owned(obj)


@dataclass(frozen=True)
class Kind:
    """One Neutron resource type.

    key: body key ("port"); its plural is the response key and quota name.
    table: the State attribute holding the records; path: the URL collection.
    missing: the 404 message ("{}" is the id) and error_type its NeutronError type.
    visible: who may see a record (the demo project's own by default);
    listed: what a list shows, when it differs from what can be looked up.
    """

    key: str
    table: str
    path: str
    missing: str
    error_type: str
    view: Callable[[State, Record], Record] = plain_view
    visible: Callable[[State, Record], bool] = owned_by_demo
    listed: Callable[[State, Record], bool] | None = None
    settle: bool = False

    @property
    def coll(self) -> str:
        return self.key + "s"

    def rows(self, st: State) -> dict[str, Record]:
        return getattr(st, self.table)  # type: ignore[no-any-return]

    def find(self, req: Request, oid: str | None = None) -> Record:
        st = _st(req)
        return lookup(self.rows(st), oid or req.match["id"],  # type: ignore[index]
                      lambda k: neutron_error(404, self.missing.format(k), self.error_type),
                      lambda obj: self.visible(st, obj))

    def quota_check(self, st: State) -> None:
        _quota_check(st, self.key, st.count_owned(self.rows(st)))

    def reply(self, req: Request, obj: Record, status: int = 200) -> Response:
        return _one(req, self.key, self.view(_st(req), obj), status)

    def index(self, req: Request) -> Response:
        st = _st(req)
        shown = self.listed or self.visible
        with st.lock:
            if self.settle:
                st.settle()
            return _listing(req, self.coll, [o for o in self.rows(st).values() if shown(st, o)],
                            lambda o: self.view(st, o))

    def show(self, req: Request) -> Response:
        st = _st(req)
        with st.lock:
            if self.settle:
                st.settle()
            return self.reply(req, self.find(req))

    def create(self, req: Request, build: Builder) -> Response:
        """POST: ``build`` checks the body and adds the record it returns."""
        st = _st(req)
        body = _body(req, self.key)
        with st.lock:
            return self.reply(req, build(req, st, body), 201)

    def update(self, req: Request, fields: tuple[str, ...], check: Check | None = None) -> Response:
        """PUT: ``check`` may refuse or apply what is special, then the
        plain ``fields`` are copied and the revision bumped."""
        st = _st(req)
        body = _body(req, self.key)
        with st.lock:
            obj = self.find(req)
            if check is not None:
                check(st, obj, body)
            _copy_fields(obj, body, fields)
            obj["updated_at"] = now()
            obj["revision_number"] += 1
            return self.reply(req, obj)

    def delete(self, req: Request,
               before: Callable[[State, Record], None] | None = None) -> Response:
        """DELETE: ``before`` may refuse, or clean up what hangs on the record."""
        st = _st(req)
        with st.lock:
            obj = self.find(req)
            if before is not None:
                before(st, obj)
            del self.rows(st)[obj["id"]]
        return Response(204)

    # ---------------------------------------------------------- routes
    @property
    def _one_path(self) -> str:
        return f"{V}/{self.path}/(?P<id>[^/]+)"

    def serve(self, *ops: str) -> None:
        """Register the generic handlers named in ``ops``: index, show, delete."""
        routes = {"index": ("GET", f"{V}/{self.path}"), "show": ("GET", self._one_path),
                  "delete": ("DELETE", self._one_path)}
        for op in ops:
            router.add(*routes[op], getattr(self, op))

    def creates(self, build: Builder) -> Builder:
        """Decorator: POST to the collection creates a record with ``build``."""
        router.add("POST", f"{V}/{self.path}", lambda req: self.create(req, build))
        return build

    def updates(self, *fields: str) -> Callable[[Check], Check]:
        """Decorator: PUT on a record copies ``fields`` after the decorated check."""
        def deco(check: Check) -> Check:
            router.add("PUT", self._one_path, lambda req: self.update(req, fields, check))
            return check
        return deco

    def deletes(self, before: Callable[[State, Record], None]) -> Callable[[State, Record], None]:
        """Decorator: DELETE on a record, after the decorated check/clean-up."""
        router.add("DELETE", self._one_path, lambda req: self.delete(req, before))
        return before
