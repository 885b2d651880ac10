"""Nova server actions (start/stop/reboot/suspend/resume/pause/resize/
console/createImage/security groups) and server sub-resources
(ips, metadata, os-security-groups, os-interface)."""

from __future__ import annotations

from typing import Any, Callable

from .compute_common import (V, _bad, _boot_log, _conflict, _console, _finish, _require,
                             _schedule, _server, _st, router)
from .core import Request, Response, new_id, nova_error, now
from .state import POWER, PROJECT_ID, USER_ID, State

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


def _a_start(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "start", ("stopped",))
    _schedule(st, s, "powering-on", st.action_delay, _finish(
        "active", "RUNNING", lambda s, t: _console(s, *_boot_log(st, s, t))))
    return Response(202)


def _a_stop(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "stop", ("active", "resized", "rescued", "error"))
    _schedule(st, s, "powering-off", st.action_delay, _finish(
        "stopped", "SHUTDOWN", lambda s, t: _console(
            s, "[  OK  ] Reached target System Power Off.", "[   99.000000] reboot: Power down")))
    return Response(202)


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


def _a_suspend(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "suspend", ("active",))
    _schedule(st, s, "suspending", st.action_delay, _finish("suspended", "SUSPENDED"))
    return Response(202)


def _a_resume(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "resume", ("suspended",))
    _schedule(st, s, "resuming", st.action_delay, _finish("active", "RUNNING"))
    return Response(202)


def _a_pause(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "pause", ("active",))
    _schedule(st, s, "pausing", st.action_delay, _finish("paused", "PAUSED"))
    return Response(202)


def _a_unpause(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "unpause", ("paused",))
    _schedule(st, s, "unpausing", st.action_delay, _finish("active", "RUNNING"))
    return Response(202)


def _a_lock(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    s["locked"] = True
    return Response(202)


def _a_unlock(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    s["locked"] = False
    return Response(202)


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
        raise nova_error(403, "Quota exceeded for %s: Requested %s, but already used %s of %s %s"
                         % (", ".join(overs), ", ".join(str(deltas[k]) for k in overs),
                            ", ".join(str(used[k]) for k in overs),
                            ", ".join(str(q[k]) for k in overs), ", ".join(overs)))
    was = s["vm_state"]

    def apply(s: dict[str, Any], t: float) -> None:
        s["old_flavor"] = dict(old)
        s["flavor"] = dict(new)
        s["vm_state"] = "resized"
        s["task_state"] = None
        s["resize_from"] = was
        s["power_state"] = POWER["RUNNING"] if was == "active" else POWER["SHUTDOWN"]
        s["updated"] = t

    _schedule(st, s, "resize_prep", st.action_delay, apply)
    return Response(202)


def _a_confirm_resize(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "confirmResize", ("resized",))
    back = s.get("resize_from", "active")
    s["old_flavor"] = None
    s["vm_state"] = back
    s["power_state"] = POWER["RUNNING"] if back == "active" else POWER["SHUTDOWN"]
    s["updated"] = now()
    return Response(204)


def _a_revert_resize(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    _require(s, "revertResize", ("resized",))
    back = s.get("resize_from", "active")
    old = s["old_flavor"]

    def apply(s: dict[str, Any], t: float) -> None:
        s["flavor"] = old
        s["old_flavor"] = None
        s["vm_state"] = back
        s["task_state"] = None
        s["power_state"] = POWER["RUNNING"] if back == "active" else POWER["SHUTDOWN"]
        s["updated"] = t

    _schedule(st, s, "resize_reverting", st.action_delay, apply)
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


def _a_add_sg(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    name = (arg or {}).get("name") if isinstance(arg, dict) else None
    grp = st.find_sg(str(name)) if name else None
    if grp is None:
        raise nova_error(404, f"Security group {name} not found for project {PROJECT_ID}.")
    if s["vm_state"] == "building":
        raise _conflict(s, "addSecurityGroup")
    for p in st.server_ports(s["id"]):
        if grp["id"] not in p["security_groups"]:
            p["security_groups"].append(grp["id"])
    if grp["name"] not in s["security_groups"]:
        s["security_groups"].append(grp["name"])
    return Response(202)


def _a_remove_sg(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    name = (arg or {}).get("name") if isinstance(arg, dict) else None
    grp = st.find_sg(str(name)) if name else None
    if grp is None:
        raise nova_error(404, f"Security group {name} not found for project {PROJECT_ID}.")
    if grp["name"] not in s["security_groups"]:
        raise nova_error(400, f"Security group {name} not associated with the instance {s['id']}")
    for p in st.server_ports(s["id"]):
        if grp["id"] in p["security_groups"]:
            p["security_groups"].remove(grp["id"])
    s["security_groups"].remove(grp["name"])
    return Response(202)


_ACTIONS: dict[str, Callable[[Request, State, dict[str, Any], Any], Response]] = {
    "os-start": _a_start, "os-stop": _a_stop, "reboot": _a_reboot,
    "suspend": _a_suspend, "resume": _a_resume, "pause": _a_pause,
    "unpause": _a_unpause, "lock": _a_lock, "unlock": _a_unlock,
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
    body = req.json() or {}
    md = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(md, dict):
        raise _bad("metadata", body, "'metadata' is a required property")
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


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)/metadata/(?P<key>[^/]+)")
def get_meta_item(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        s = _server(req)
        k = req.match["key"]  # type: ignore[index]
        if k not in s["metadata"]:
            raise nova_error(404, "Metadata item was not found")
        return Response(200, {"meta": {k: s["metadata"][k]}})


@router.route("PUT", V + r"/servers/(?P<sid>[^/]+)/metadata/(?P<key>[^/]+)")
def put_meta_item(req: Request) -> Response:
    st = _st(req)
    body = req.json() or {}
    meta = body.get("meta") if isinstance(body, dict) else None
    k = req.match["key"]  # type: ignore[index]
    if not isinstance(meta, dict) or list(meta) != [k]:
        raise nova_error(400, "Request body and URI mismatch")
    with st.lock:
        s = _server(req)
        s["metadata"][k] = str(meta[k])
        return Response(200, {"meta": {k: s["metadata"][k]}})


@router.route("DELETE", V + r"/servers/(?P<sid>[^/]+)/metadata/(?P<key>[^/]+)")
def delete_meta_item(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        s = _server(req)
        k = req.match["key"]  # type: ignore[index]
        if k not in s["metadata"]:
            raise nova_error(404, "Metadata item was not found")
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
