"""Nova servers: create (quota, networks, multi-create), list/detail with
filters and paging, show, update, delete; lazy BUILD -> ACTIVE/ERROR."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from typing import Any

from . import compute_groups
from .compute_common import (V, _bad, _boot_log, _console, _finish, _hostname, _links,
                             _over_quota, _page, _parse_ref, _required, _server, _st,
                             _valid_name, router, server_view, status_of)
from .core import Request, Response, new_id, nova_error, now, parse_time
from .state import AZ, HOST, POWER, PROJECT_ID, USER_ID, State

@router.route("POST", V + r"/servers")
def create_server(req: Request) -> Response:
    st = _st(req)
    sv = _required(req, "server")
    body = req.json()
    hints = body.get("OS-SCH-HNT:scheduler_hints") or body.get("os:scheduler_hints") or {}
    with st.lock:
        group = compute_groups.hinted_group(st, hints)
    name = sv.get("name")
    if not _valid_name(name):
        raise _bad("name", name, "'name' is a required property" if name is None
                   else "is not a valid name")
    if "flavorRef" not in sv:
        raise _bad("server", sv, "'flavorRef' is a required property")
    networks = sv.get("networks")
    if networks is None and req.mv_at_least(2, 37):
        raise _bad("server", sv, "'networks' is a required property")
    if isinstance(networks, str) and networks not in ("auto", "none"):
        raise _bad("networks", networks, "'%s' is not one of ['none', 'auto']" % networks)
    if networks is not None and not isinstance(networks, (list, str)):
        raise _bad("networks", networks, "is not valid under any of the given schemas")
    user_data = sv.get("user_data")
    if user_data is not None:
        try:
            base64.b64decode(str(user_data).encode(), validate=True)
        except (binascii.Error, ValueError):
            raise _bad("user_data", user_data, f"'{user_data}' is not a 'base64'")
        if len(str(user_data)) > 65535:
            raise _bad("user_data", "...", "is too long")
    try:
        min_count = int(sv.get("min_count", 1))
        max_count = int(sv.get("max_count", min_count))
    except (TypeError, ValueError):
        raise _bad("min_count", sv.get("min_count"), "is not of type 'integer'")
    if min_count < 1 or max_count < min_count:
        raise nova_error(400, "min_count must be <= max_count")
    metadata = sv.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise _bad("metadata", metadata, "is not of type 'object'")

    with st.lock:
        delay = st.create_delay
    if delay > 0:
        time.sleep(delay)  # API latency; outside the lock so requests overlap

    with st.lock:
        st.settle()
        flavor = st.find_flavor(sv["flavorRef"])
        if flavor is None:
            raise nova_error(400, "Invalid flavorRef provided.")
        image_id = _parse_ref(sv.get("imageRef"))
        if not image_id:
            for bdm in sv.get("block_device_mapping_v2") or []:
                if bdm.get("source_type") == "image" and str(bdm.get("boot_index", "")) in ("0",):
                    image_id = bdm.get("uuid", "")
            if not image_id:
                raise nova_error(400, "Block Device Mapping is Invalid: Boot sequence for the "
                                      "instance and image/block device mapping combination is not valid.")
        image = st.find_image(image_id)
        if image is None or image["status"] != "active":
            raise nova_error(400, "Can not find requested image")
        if flavor["disk"] and image["min_disk"] > flavor["disk"]:
            raise nova_error(400, "Flavor's disk is too small for requested image. Flavor disk "
                                  f"is {flavor['disk'] * 1024 ** 3} bytes, minimum disk is "
                                  f"{image['min_disk'] * 1024 ** 3} bytes.")
        if image["min_ram"] > flavor["ram"]:
            raise nova_error(400, "Flavor's memory is too small for requested image.")
        key_name = sv.get("key_name")
        if key_name is not None and key_name not in st.keypairs:
            raise nova_error(400, "Invalid key_name provided.")
        sg_names: list[str] = []
        sg_ids: list[str] = []
        for g in sv.get("security_groups") or [{"name": "default"}]:
            ref = g.get("name") if isinstance(g, dict) else g
            grp = st.find_sg(str(ref))
            if grp is None:
                raise nova_error(400, f"Security group {ref} not found.")
            if grp["id"] not in sg_ids:
                sg_ids.append(grp["id"])
                sg_names.append(grp["name"])
        # network requests
        net_reqs: list[dict[str, Any]] = []
        if networks in (None, "auto"):
            net_reqs = [{"uuid": st.private_net_id}]
        elif networks == "none":
            net_reqs = []
        else:
            for n in networks:  # type: ignore[union-attr]
                if not isinstance(n, dict):
                    raise _bad("networks", networks, "is not valid under any of the given schemas")
                if n.get("port"):
                    port = st.ports.get(n["port"])
                    if port is None:
                        raise nova_error(400, f"Port {n['port']} could not be found.")
                    if port["device_id"]:
                        raise nova_error(409, f"Port {n['port']} is still in use.")
                    net_reqs.append({"port": port["id"]})
                    continue
                nid = n.get("uuid")
                net = st.networks.get(nid or "")
                if net is None:
                    raise nova_error(400, f"Network {nid} could not be found.")
                if net["router:external"] and net["project_id"] != PROJECT_ID and not net["shared"]:
                    raise nova_error(403, f"It is not allowed to create an interface on external "
                                          f"network {nid}")
                fixed = n.get("fixed_ip")
                if fixed and fixed in st.used_ips(nid):
                    raise nova_error(400, f"Fixed IP address {fixed} is already in use on instance.")
                net_reqs.append({"uuid": nid, "fixed_ip": fixed})
        if max_count > 1 and any("port" in n or n.get("fixed_ip") for n in net_reqs):
            raise nova_error(400, "Unable to launch multiple instances with a single configured "
                                  "port ID or fixed IP. Please launch your instance one by one "
                                  "with different ports.")
        # quota
        count = _quota_count(st, flavor, min_count, max_count)
        t = now()
        reservation = "r-" + secrets.token_hex(4)
        first = None
        for i in range(count):
            sname = f"{name}-{i + 1}" if count > 1 else name
            s = _new_server(st, sname, flavor, image_id, key_name, sg_names, metadata,
                            user_data, t, reservation, i, sv)
            s["hints"] = hints
            _attach_ports(st, s, net_reqs, sg_ids, t)
            failure = compute_groups.place(st, group, s)
            if failure is None:
                failure = _next_boot_failure(st, sname)
            _schedule_build(st, s, failure)
            if first is None:
                first = s
        assert first is not None
        if sv.get("return_reservation_id"):
            return Response(202, {"reservation_id": reservation})
        resp = {"server": {
            "id": first["id"], "links": _links(req, "servers", first["id"]),
            "OS-DCF:diskConfig": first["disk_config"],
            "security_groups": [{"name": n} for n in sg_names],
            "adminPass": first["admin_pass"],
        }}
        return Response(202, resp, {"Location": f"{req.base_url}/compute/v2.1/servers/{first['id']}"})


def _quota_count(st: State, flavor: dict[str, Any], min_count: int, max_count: int) -> int:
    used = st.usage_counts()
    q = st.nova_quota
    per = {"instances": 1, "cores": flavor["vcpus"], "ram": flavor["ram"]}

    def fits(n: int) -> list[str]:
        return [k for k in ("cores", "instances", "ram")
                if q[k] >= 0 and used[k] + per[k] * n > q[k]]

    count = max_count
    while count >= min_count and fits(count):
        count -= 1
    if count < min_count:
        raise _over_quota(fits(min_count), {k: n * min_count for k, n in per.items()}, used, q)
    return count


def _new_server(st: State, name: str, flavor: dict[str, Any], image_id: str,
                key_name: str | None, sg_names: list[str], metadata: dict[str, Any],
                user_data: str | None, t: float, reservation: str, index: int,
                sv: dict[str, Any]) -> dict[str, Any]:
    sid = new_id()
    s: dict[str, Any] = {
        "id": sid, "name": name, "project_id": PROJECT_ID, "user_id": USER_ID,
        "image_id": image_id, "flavor": dict(flavor), "old_flavor": None,
        "key_name": key_name, "security_groups": list(sg_names),
        "metadata": {str(k): str(v) for k, v in metadata.items()},
        "user_data": user_data, "created": t, "updated": t, "launched_at": None,
        "vm_state": "building", "task_state": "spawning",
        "power_state": POWER["NOSTATE"], "pending": None, "fault": None,
        "host": "", "access_ipv4": sv.get("accessIPv4", ""),
        "access_ipv6": sv.get("accessIPv6", ""),
        "disk_config": sv.get("OS-DCF:diskConfig", "MANUAL"),
        "config_drive": bool(sv.get("config_drive")),
        "description": sv.get("description"), "locked": False, "tags": list(sv.get("tags") or []),
        "hostname": _hostname(sv.get("hostname") or name),
        "admin_pass": sv.get("adminPass") or secrets.token_urlsafe(9)[:12],
        "reservation_id": reservation, "launch_index": index,
        "owned_ports": [], "console": [],
    }
    st.servers[sid] = s
    st.server_history.append(s)
    return s


def _schedule_build(st: State, s: dict[str, Any], failure: dict[str, Any] | None) -> None:
    def apply(s: dict[str, Any], t: float) -> None:
        s["task_state"] = None
        s["updated"] = t
        fail = failure or s.pop("late_failure", None)
        if fail:
            s["vm_state"] = "error"
            s["power_state"] = POWER["NOSTATE"]
            s["fault"] = {"code": fail.get("code", 500), "message": fail["message"],
                          "created": t, "details": fail.get("details", "")}
            # Nova deallocates the networking of an instance that failed to boot.
            _drop_networking(st, s)
            s["owned_ports"] = []
            return
        _come_up(st, s, t)

    if failure is None:
        s["host"] = HOST
    delay = st.build_delay
    if delay <= 0:
        apply(s, s["created"])
    else:
        s["pending"] = {"at": s["created"] + delay, "apply": apply}


def _next_boot_failure(st: State, name: str) -> dict[str, Any] | None:
    """The first queued boot fault meant for any server or for one of this name (it is used up)."""
    for i, fault in enumerate(st.boot_failures):
        if fault.get("name", "") in ("", name):
            return st.boot_failures.pop(i)
    return None


def _attach_ports(st: State, s: dict[str, Any], net_reqs: list[dict[str, Any]],
                  sg_ids: list[str], t: float) -> None:
    for n in net_reqs:
        if "port" in n:
            port = st.ports[n["port"]]
            port["device_id"] = s["id"]
            port["device_owner"] = "compute:" + AZ
            port["updated_at"] = t
            continue
        net = st.networks[n["uuid"]]
        try:
            port = st.create_port(net, t, device_id=s["id"], device_owner="compute:" + AZ,
                                  security_groups=sg_ids, fixed_ip=n.get("fixed_ip"))
        except LookupError:
            s["late_failure"] = {
                "message": f"Build of instance {s['id']} aborted: No more IP addresses "
                           f"available on network {net['id']}.", "code": 500}
            continue
        s["owned_ports"].append(port["id"])


def _come_up(st: State, s: dict[str, Any], t: float) -> None:
    """The end of a good build: running on HOST, its ports bound and up, boot log written."""
    _finish("active", "RUNNING")(s, t)
    s.update(host=HOST, launched_at=t)
    for p in st.server_ports(s["id"]):
        p["status"] = "ACTIVE"
        p["binding:host_id"] = HOST
    _console(s, *_boot_log(st, s, t))


def _drop_networking(st: State, s: dict[str, Any], **unbound: Any) -> None:
    """Delete the ports Nova made for the server (their floating IPs come
    off); ports the user supplied are only unbound (and updated by ``unbound``)."""
    for pid in list(s["owned_ports"]):
        st.ports.pop(pid, None)
        st.detach_floating_ips(pid)
    for p in st.server_ports(s["id"]):
        p.update(device_id="", device_owner="", **unbound)


def _remove_server(st: State, s: dict[str, Any], t: float) -> None:
    _drop_networking(st, s, status="DOWN", updated_at=t)
    s["terminated_at"] = t
    s["vm_state"] = "deleted"
    st.servers.pop(s["id"], None)


def add_server(st: State, name: str, *, flavor: str = "m1.small", image: str | None = None,
               network: str = "private", status: str = "ACTIVE", key_name: str | None = None,
               metadata: dict[str, str] | None = None, created: float | None = None) -> dict[str, Any]:
    """Create a server behind the client's back (for 'unknown VM' scenarios)."""
    with st.lock:
        fl = st.find_flavor(flavor) or _id_or_name(st.flavors, flavor)
        img = next(iter(st.images.values())) if image is None else _id_or_name(st.images, image)
        net = _id_or_name(st.networks, network)
        t = created if created is not None else now()
        s = _new_server(st, name, fl, img["id"], key_name, ["default"], metadata or {},
                        None, t, "r-" + secrets.token_hex(4), 0, {})
        _attach_ports(st, s, [{"uuid": net["id"]}], [st.default_sg_id], t)
        _come_up(st, s, t)
        if status.upper() in _DIRECT_STATES:
            vm_state, power = _DIRECT_STATES[status.upper()]
            s.update(vm_state=vm_state, power_state=POWER[power])
        if status.upper() == "ERROR":
            s["fault"] = {"code": 500, "message": "Unknown", "created": t}
        return s


# add_server's status (besides ACTIVE) -> (vm_state, power state)
_DIRECT_STATES = {"SHUTOFF": ("stopped", "SHUTDOWN"), "ERROR": ("error", "NOSTATE"),
                  "SUSPENDED": ("suspended", "SUSPENDED"), "PAUSED": ("paused", "PAUSED")}


def _id_or_name(rows: dict[str, dict[str, Any]], ref: str) -> dict[str, Any]:
    return rows.get(ref) or next(r for r in rows.values() if r["name"] == ref)


def _all_projects(req: Request, detail: bool) -> None:
    """all_tenants asks for every project's servers: an admin's right, 403 for this (member) user."""
    if "all_tenants" not in req.query:
        return
    if (req.q("all_tenants") or "true").lower() in ("0", "false", "f", "no", "n", "off"):
        return
    rule = "os_compute_api:servers:detail:get_all_tenants" if detail else "os_compute_api:servers:index:get_all_tenants"
    raise nova_error(403, f"Policy doesn't allow {rule} to be performed.")


def _filter_servers(req: Request, servers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    st = _st(req)
    out = [s for s in servers if s["project_id"] == PROJECT_ID]
    name = req.q("name")
    if name:
        try:
            rx = re.compile(name)
        except re.error:
            rx = re.compile(re.escape(name))
        out = [s for s in out if rx.search(s["name"])]
    status = req.q("status")
    if status:
        wanted = {x.upper() for x in req.query["status"]}
        out = [s for s in out if status_of(s) in wanted]
    if req.q("image"):
        out = [s for s in out if s["image_id"] == _parse_ref(req.q("image"))]
    if req.q("flavor"):
        fid = _parse_ref(req.q("flavor"))
        out = [s for s in out if s["flavor"]["id"] == fid]
    if req.q("reservation_id"):
        out = [s for s in out if s["reservation_id"] == req.q("reservation_id")]
    if req.q("ip"):
        rx = re.compile(req.q("ip") or "")
        out = [s for s in out if any(rx.search(f["ip_address"])
                                     for p in st.server_ports(s["id"]) for f in p["fixed_ips"])]
    if req.q("changes-since"):
        since = parse_time(req.q("changes-since") or "")
        out = [s for s in out if s["updated"] >= since]
    if req.q("uuid"):
        out = [s for s in out if s["id"] == req.q("uuid")]
    sort_key = req.q("sort_key") or "created_at"
    sort_dir = req.q("sort_dir") or "desc"
    keymap = {"created_at": "created", "updated_at": "updated", "display_name": "name",
              "name": "name", "uuid": "id", "launched_at": "launched_at"}
    k = keymap.get(sort_key, "created")
    out.sort(key=lambda s: (s.get(k) or 0, s["id"]), reverse=(sort_dir == "desc"))
    return out


def _list_servers(req: Request, detail: bool) -> Response:
    st = _st(req)
    _all_projects(req, detail)
    with st.lock:
        st.settle()
        servers = _filter_servers(req, list(st.servers.values()))
        if detail:
            path, view = "servers/detail", lambda s: server_view(req, s)
        else:
            path, view = "servers", lambda s: {"id": s["id"], "name": s["name"],
                                               "links": _links(req, "servers", s["id"])}
        return Response(200, _page(req, servers, "servers", path, view, max_limit=1000))


router.add("GET", V + r"/servers", lambda r: _list_servers(r, False))
router.add("GET", V + r"/servers/detail", lambda r: _list_servers(r, True))


@router.route("GET", V + r"/servers/(?P<sid>[^/]+)")
def show_server(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        st.settle()
        return Response(200, {"server": server_view(req, _server(req))})


# what PUT /servers/{id} may change: API field -> record key
_UPDATABLE = {"name": "name", "description": "description", "hostname": "hostname",
              "accessIPv4": "access_ipv4", "accessIPv6": "access_ipv6",
              "OS-DCF:diskConfig": "disk_config"}


@router.route("PUT", V + r"/servers/(?P<sid>[^/]+)")
def update_server(req: Request) -> Response:
    st = _st(req)
    upd = _required(req, "server")
    allowed = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"}
    if req.mv_at_least(2, 19):
        allowed.add("description")
    if req.mv_at_least(2, 90):
        allowed.add("hostname")
    extra = set(upd) - allowed
    if extra:
        raise nova_error(400, "Invalid input for field/attribute server. Value: %s. Additional "
                              "properties are not allowed (%s were unexpected)"
                         % (upd, ", ".join(repr(x) for x in sorted(extra))))
    with st.lock:
        st.settle()
        s = _server(req)
        if "name" in upd and not _valid_name(upd["name"]):
            raise _bad("name", upd["name"], "is not a valid name")
        for field, key in _UPDATABLE.items():
            if field in upd:
                s[key] = upd[field]
        s["updated"] = now()
        return Response(200, {"server": server_view(req, s)})


@router.route("DELETE", V + r"/servers/(?P<sid>[^/]+)")
def delete_server(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        st.settle()
        s = _server(req)
        if s["locked"]:
            raise nova_error(409, f"Instance {s['id']} is locked")
        delay = st.action_delay
        if delay <= 0:
            _remove_server(st, s, now())
        else:
            s["task_state"] = "deleting"
            s["updated"] = now()
            s["pending"] = {"at": now() + delay,
                            "apply": lambda srv, t: _remove_server(st, srv, t)}
    return Response(204)
