"""Nova server groups (os-server-groups: policies before 2.64, policy and rules after) and their
place in scheduling: this cloud has one host, so anti-affinity admits one running member."""

from __future__ import annotations

from typing import Any

from .compute_common import V, _bad, _required, _st, _valid_name, router
from .core import Request, Response, lookup, new_id, nova_error
from .state import HOST, PROJECT_ID, USER_ID, State

POLICIES = ("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity")
NO_HOST = "No valid host was found. There are not enough hosts available."


def _members(st: State, g: dict[str, Any]) -> list[str]:
    """The group's servers that still exist (a deleted server leaves its group)."""
    return [sid for sid in g["members"] if sid in st.servers]


def group_view(req: Request, g: dict[str, Any]) -> dict[str, Any]:
    st = _st(req)
    d: dict[str, Any] = {"id": g["id"], "name": g["name"], "members": _members(st, g),
                         "project_id": g["project_id"]}
    if req.mv_at_least(2, 64):
        d.update(policy=g["policy"], rules=dict(g["rules"]))
    else:
        d.update(policies=[g["policy"]], metadata={})
    if req.mv_at_least(2, 13):
        d["user_id"] = g["user_id"]
    return d


def _policy(req: Request, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if req.mv_at_least(2, 64):
        policy, rules = body.get("policy"), body.get("rules") or {}
        if policy not in POLICIES:
            raise _bad("policy", policy, f"'{policy}' is not one of {list(POLICIES)}")
        if not isinstance(rules, dict) or set(rules) - {"max_server_per_host"}:
            raise _bad("rules", rules, "Additional properties are not allowed")
        if rules and policy != "anti-affinity":
            raise nova_error(400, "Only anti-affinity policy supports rules.")
        if "max_server_per_host" in rules and (not isinstance(rules["max_server_per_host"], int)
                                               or rules["max_server_per_host"] < 1):
            raise _bad("max_server_per_host", rules["max_server_per_host"], "must be a positive integer")
        return policy, rules
    policies = body.get("policies")
    if not isinstance(policies, list) or len(policies) != 1 or policies[0] not in POLICIES:
        raise _bad("policies", policies, f"must be a list of exactly one of {list(POLICIES)}")
    return policies[0], {}


@router.route("POST", V + r"/os-server-groups")
def create_group(req: Request) -> Response:
    st = _st(req)
    body = _required(req, "server_group")
    if not _valid_name(body.get("name")):
        raise _bad("name", body.get("name"), "'name' is a required property")
    policy, rules = _policy(req, body)
    with st.lock:
        limit = st.nova_quota.get("server_groups", -1)
        if 0 <= limit <= sum(1 for g in st.server_groups.values() if g["project_id"] == PROJECT_ID):
            raise nova_error(403, "Quota exceeded, too many server groups.")
        g = {"id": new_id(), "name": body["name"], "policy": policy, "rules": rules, "members": [],
             "project_id": PROJECT_ID, "user_id": USER_ID}
        st.server_groups[g["id"]] = g
        return Response(200, {"server_group": group_view(req, g)})


@router.route("GET", V + r"/os-server-groups")
def list_groups(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        groups = [g for g in st.server_groups.values() if g["project_id"] == PROJECT_ID]
        return Response(200, {"server_groups": [group_view(req, g) for g in groups]})


def _group(req: Request) -> dict[str, Any]:
    return lookup(_st(req).server_groups, req.match["gid"],  # type: ignore[index]
                  lambda k: nova_error(404, f"Instance group {k} could not be found."),
                  lambda g: g["project_id"] == PROJECT_ID)


@router.route("GET", V + r"/os-server-groups/(?P<gid>[^/]+)")
def show_group(req: Request) -> Response:
    with _st(req).lock:
        return Response(200, {"server_group": group_view(req, _group(req))})


@router.route("DELETE", V + r"/os-server-groups/(?P<gid>[^/]+)")
def delete_group(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        del st.server_groups[_group(req)["id"]]
    return Response(204)


# ------------------------------------------------------------ scheduling

def hinted_group(st: State, hints: Any) -> dict[str, Any] | None:
    """The server group a create's scheduler hints name (400 if there is no such group)."""
    gid = hints.get("group") if isinstance(hints, dict) else None
    if not gid:
        return None
    g = st.server_groups.get(str(gid))
    if g is None or g["project_id"] != PROJECT_ID:
        raise nova_error(400, f"Invalid input for field/attribute group. Value: {gid}. Instance group {gid} "
                              "could not be found.")
    return g


def place(st: State, g: dict[str, Any] | None, s: dict[str, Any]) -> dict[str, Any] | None:
    """Add server ``s`` to group ``g``; the boot failure scheduling gives it, if any (one host here)."""
    if g is None:
        return None
    on_host = [sid for sid in _members(st, g) if st.servers[sid].get("host") == HOST
               and st.servers[sid]["vm_state"] != "error"]
    g["members"].append(s["id"])
    room = g["rules"].get("max_server_per_host", 1) if g["policy"] == "anti-affinity" else None
    if room is not None and len(on_host) >= room:
        return {"message": NO_HOST, "code": 500, "details": ""}
    return None
