"""Nova server actions (start/stop/reboot/suspend/resume/pause/resize/
console/createImage/security groups) and server sub-resources
(ips, metadata, os-security-groups, os-interface)."""

from __future__ import annotations

from typing import Any, Callable

from .compute_common import (V, _bad, _body_part, _boot_log, _conflict, _console, _finish,
                             _over_quota, _require, _required, _schedule, _server, _st, router)
from .core import Request, Response, new_id, nova_error, now
from .state import PROJECT_ID, USER_ID, State

# ------------------------------------------------------------ actions

@router.route("POST", V + r"/servers/(?P<sid>[^/]+)/action")
def server_action(req: Request) -> Response:
    st = _st(req)
    body = req.json()
    if not isinstance(body, dict) or len(body) != 1:
        raise nova_error(400, "Malformed request body")
    (action, arg), = body.items()
    fn = _ACTIONS.get(action)
    if fn is None:
        raise nova_error(400, f"There is no such action: {action}")
    with st.lock:
        st.settle()
        s = _server(req)
        if s["locked"] and action not in ("os-getConsoleOutput", "unlock", "lock"):
            raise nova_error(409, f"Instance {s['id']} is locked")
        return fn(req, st, s, arg)


Action = Callable[[Request, State, dict[str, Any], Any], Response]
Effect = Callable[[State, dict[str, Any], float], None]  # (state, server, when) on completion


def _transition(action: str, from_states: tuple[str, ...], task: str, vm_state: str,
                power: str, effect: Effect | None = None) -> Action:
    """An action that is allowed in ``from_states`` and, after the action
    delay in ``task``, leaves the server in ``vm_state``/``power``."""
    def act(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
        _require(s, action, from_states)
        _schedule(st, s, task, st.action_delay, _finish(
            vm_state, power, (lambda s, t: effect(st, s, t)) if effect else None))
        return Response(202)
    return act


def _boots(st: State, s: dict[str, Any], t: float) -> None:
    _console(s, *_boot_log(st, s, t))


def _powers_off(st: State, s: dict[str, Any], t: float) -> None:
    _console(s, "[  OK  ] Reached target System Power Off.", "[   99.000000] reboot: Power down")


def _a_reboot(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    rtype = (arg or {}).get("type") if isinstance(arg, dict) else None
    if rtype not in ("SOFT", "HARD", "soft", "hard"):
        raise _bad("type", rtype, "'type' is a required property" if rtype is None
                   else f"'{rtype}' is not one of ['HARD', 'Hard', 'hard', 'SOFT', 'Soft', 'soft']")
    hard = rtype.upper() == "HARD"
    if hard:
        _require(s, "reboot", ("active", "stopped", "paused", "suspended", "error"))
    else:
        _require(s, "reboot", ("active",))
    _schedule(st, s, "reboot_started_hard" if hard else "reboot_started", st.action_delay,
              _finish("active", "RUNNING", lambda s, t: _console(
                  s, "[  OK  ] Reached target Reboot.", "[  100.000000] reboot: Restarting system",
                  *_boot_log(st, s, t))))
    return Response(202)


def _set_locked(flag: bool) -> Action:
    def act(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
        s["locked"] = flag
        return Response(202)
    return act


def _power_after_resize(vm_state: str) -> str:
    """A resized/reverted server runs again only if it ran before."""
    return "RUNNING" if vm_state == "active" else "SHUTDOWN"


def _a_resize(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    if not isinstance(arg, dict) or "flavorRef" not in arg:
        raise _bad("resize", arg, "'flavorRef' is a required property")
    new = st.find_flavor(arg["flavorRef"])
    if new is None:
        raise nova_error(400, f"Flavor {arg['flavorRef']} could not be found.")
    _require(s, "resize", ("active", "stopped"))
    old = s["flavor"]
    if new["id"] == old["id"]:
        raise nova_error(400, "When resizing, instances must change flavor!")
    img = st.images.get(s["image_id"])
    if new["disk"] < old["disk"] and new["disk"] != 0:
        raise nova_error(400, "Resize error: Unable to resize disk down.")
    if img and new["disk"] and img["min_disk"] > new["disk"]:
        raise nova_error(400, "Flavor's disk is too small for requested image.")
    used = st.usage_counts()
    q = st.nova_quota
    deltas = {"cores": new["vcpus"] - old["vcpus"], "ram": new["ram"] - old["ram"]}
    overs = [k for k, dlt in deltas.items() if dlt > 0 and q[k] >= 0 and used[k] + dlt > q[k]]
    if overs:
        raise _over_quota(overs, deltas, used, q)
    was = s["vm_state"]
    _schedule(st, s, "resize_prep", st.action_delay, _finish(
        "resized", _power_after_resize(was),
        lambda s, t: s.update(old_flavor=dict(old), flavor=dict(new), resize_from=was)))
    return Response(202)


def _resized_from(s: dict[str, Any], action: str) -> str:
    """The vm_state a resized server had before: it returns there on confirm/revert."""
    _require(s, action, ("resized",))
    return str(s.get("resize_from", "active"))


def _a_confirm_resize(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    back = _resized_from(s, "confirmResize")
    _finish(back, _power_after_resize(back), lambda s, t: s.update(old_flavor=None))(s, now())
    return Response(204)


def _a_revert_resize(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    back = _resized_from(s, "revertResize")
    old = s["old_flavor"]
    _schedule(st, s, "resize_reverting", st.action_delay, _finish(
        back, _power_after_resize(back), lambda s, t: s.update(flavor=old, old_flavor=None)))
    return Response(202)


def _a_console(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    if s["vm_state"] == "building":
        raise nova_error(409, f"Instance {s['id']} is not ready")
    length = None
    if isinstance(arg, dict) and arg.get("length") is not None:
        try:
            length = int(arg["length"])
        except (TypeError, ValueError):
            raise _bad("length", arg["length"], "is not valid under any of the given schemas")
    lines = list(s["console"])
    if length is not None and length >= 0:
        lines = lines[-length:] if length else []
    return Response(200, {"output": "\n".join(lines)})


def _a_create_image(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    if not isinstance(arg, dict) or not arg.get("name"):
        raise _bad("createImage", arg, "'name' is a required property")
    _require(s, "createImage", ("active", "stopped", "paused", "suspended"))
    base = st.images.get(s["image_id"], {})
    iid = new_id()
    t = now()
    img = dict(base) if base else {}
    img.update({
        "id": iid, "name": arg["name"], "status": "active", "visibility": "private",
        "protected": False, "owner": PROJECT_ID, "created_at": t, "updated_at": t,
        "tags": [], "image_type": "snapshot", "instance_uuid": s["id"],
        "base_image_ref": s["image_id"], "user_id": USER_ID,
        "min_disk": s["flavor"]["disk"], "min_ram": 0,
    })
    for k, v in (arg.get("metadata") or {}).items():
        img[str(k)] = str(v)
    img.setdefault("disk_format", "qcow2")
    img.setdefault("container_format", "bare")
    img.setdefault("size", 0)
    st.images[iid] = img
    if req.mv_at_least(2, 45):
        return Response(202, {"image_id": iid})
    return Response(202, None, {"Location": f"{req.base_url}/image/v2/images/{iid}"})


def _named_group(st: State, arg: Any) -> tuple[Any, dict[str, Any]]:
    """The security group an add/removeSecurityGroup body names, and that name."""
    name = (arg or {}).get("name") if isinstance(arg, dict) else None
    grp = st.find_sg(str(name)) if name else None
    if grp is None:
        raise nova_error(404, f"Security group {name} not found for project {PROJECT_ID}.")
    return name, grp


def _a_add_sg(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    name, grp = _named_group(st, arg)
    if s["vm_state"] == "building":
        raise _conflict(s, "addSecurityGroup")
    for p in st.server_ports(s["id"]):
        if grp["id"] not in p["security_groups"]:
            p["security_groups"].append(grp["id"])
    if grp["name"] not in s["security_groups"]:
        s["security_groups"].append(grp["name"])
    return Response(202)


def _a_remove_sg(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    name, grp = _named_group(st, arg)
    if grp["name"] not in s["security_groups"]:
        raise nova_error(400, f"Security group {name} not associated with the instance {s['id']}")
    for p in st.server_ports(s["id"]):
        if grp["id"] in p["security_groups"]:
            p["security_groups"].remove(grp["id"])
    s["security_groups"].remove(grp["name"])
    return Response(202)


_ACTIONS: dict[str, Action] = {
    "os-start": _transition("start", ("stopped",), "powering-on", "active", "RUNNING", _boots),
    "os-stop": _transition("stop", ("active", "resized", "rescued", "error"), "powering-off",
                           "stopped", "SHUTDOWN", _powers_off),
    "reboot": _a_reboot,
    "suspend": _transition("suspend", ("active",), "suspending", "suspended", "SUSPENDED"),
    "resume": _transition("resume", ("suspended",), "resuming", "active", "RUNNING"),
    "pause": _transition("pause", ("active",), "pausing", "paused", "PAUSED"),
    "unpause": _transition("unpause", ("paused",), "unpausing", "active", "RUNNING"),
    "lock": _set_locked(True), "unlock": _set_locked(False),
    "resize": _a_resize, "confirmResize": _a_confirm_resize,
    "revertResize": _a_revert_resize, "os-getConsoleOutput": _a_console,
    "createImage": _a_create_image, "addSecurityGroup": _a_add_sg,
    "removeSecurityGroup": _a_remove_sg,
}


# ------------------------------------------------------------ server sub-resources

@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/ips")
def server_ips(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        st.settle()
        return Response(200, {"addresses": st.addresses(_server(req))})


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/ips/(?P<net>[^/]+)")
def server_ips_net(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        st.settle()
        addrs = st.addresses(_server(req))
        net = req.match["net"]  # type: ignore[index]
        if net not in addrs:
            raise nova_error(404, "Instance is not a member of specified network")
        return Response(200, {net: addrs[net]})


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/metadata")
def get_metadata(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        return Response(200, {"metadata": dict(_server(req)["metadata"])})


def _set_metadata(req: Request, replace: bool) -> Response:
    st = _st(req)
    md = _required(req, "metadata")
    with st.lock:
        s = _server(req)
        if replace:
            s["metadata"] = {}
        s["metadata"].update({str(k): str(v) for k, v in md.items()})
        if len(s["metadata"]) > st.nova_quota["metadata_items"] >= 0:
            raise nova_error(403, "Quota exceeded for metadata_items: Requested "
                                  f"{len(s['metadata'])}, but already used 0 of "
                                  f"{st.nova_quota['metadata_items']} metadata_items")
        s["updated"] = now()
        return Response(200, {"metadata": dict(s["metadata"])})


router.add("POST", V + r"/servers/(?P<sid>[^/]+)/metadata", lambda r: _set_metadata(r, False))
router.add("PUT", V + r"/servers/(?P<sid>[^/]+)/metadata", lambda r: _set_metadata(r, True))


def _meta_item(req: Request) -> tuple[dict[str, Any], str]:
    """The server and the metadata key of the URL, which must be set."""
    s = _server(req)
    k = req.match["key"]  # type: ignore[index]
    if k not in s["metadata"]:
        raise nova_error(404, "Metadata item was not found")
    return s, k


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/metadata/(?P<key>[^/]+)")
def get_meta_item(req: Request) -> Response:
    with _st(req).lock:
        s, k = _meta_item(req)
        return Response(200, {"meta": {k: s["metadata"][k]}})


@router.route("PUT", V + r"/servers/(?P<sid>[^/]+)/metadata/(?P<key>[^/]+)")
def put_meta_item(req: Request) -> Response:
    st = _st(req)
    meta = _body_part(req, "meta")
    k = req.match["key"]  # type: ignore[index]
    if not isinstance(meta, dict) or list(meta) != [k]:
        raise nova_error(400, "Request body and URI mismatch")
    with st.lock:
        s = _server(req)
        s["metadata"][k] = str(meta[k])
        return Response(200, {"meta": {k: s["metadata"][k]}})


@router.route("DELETE", V + r"/servers/(?P<sid>[^/]+)/metadata/(?P<key>[^/]+)")
def delete_meta_item(req: Request) -> Response:
    with _st(req).lock:
        s, k = _meta_item(req)
        del s["metadata"][k]
        return Response(204)


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/os-security-groups")
def server_security_groups(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        s = _server(req)
        out = []
        for n in s["security_groups"]:
            g = st.find_sg(n)
            if g:
                out.append({"id": g["id"], "name": g["name"], "description": g["description"],
                            "tenant_id": g["project_id"], "rules": []})
        return Response(200, {"security_groups": out})


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/os-interface")
def server_interfaces(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        s = _server(req)
        out = [{"port_id": p["id"], "net_id": p["network_id"], "mac_addr": p["mac_address"],
                "port_state": p["status"], "fixed_ips": [dict(f) for f in p["fixed_ips"]]}
               for p in st.server_ports(s["id"])]
        return Response(200, {"interfaceAttachments": out})
