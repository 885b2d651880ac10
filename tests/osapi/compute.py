"""Nova v2.1: version discovery, flavors, keypairs, limits, quota sets,
simple tenant usage, availability zones.  Servers and their actions live
in compute_servers.py / compute_actions.py (same router)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from typing import Any

from . import compute_actions, compute_extras, compute_groups, compute_servers
from .compute_common import V, _bad, _body_part, _links, _page, _st, router, status_of
from .compute_servers import add_server
from .core import Request, Response, iso_naive, lookup, nova_error, now, parse_time, quota_request
from .state import AZ, USER_ID, State, ssh_fingerprint

# importing them registers their routes on the shared router
ROUTE_MODULES = (compute_servers, compute_actions, compute_groups, compute_extras)
MIN_VERSION = "2.1"
_UPDATED = "2013-07-23T11:33:21Z"

# ------------------------------------------------------------ discovery

def _v21(req: Request) -> dict[str, Any]:
    st: State = req.state
    return {"id": "v2.1", "status": "CURRENT", "version": st.max_microversion,
            "min_version": MIN_VERSION, "updated": _UPDATED,
            "links": [{"rel": "self", "href": f"{req.base_url}/compute/v2.1/"},
                      {"rel": "describedby", "type": "text/html",
                       "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


def _v20(req: Request) -> dict[str, Any]:
    return {"id": "v2.0", "status": "SUPPORTED", "version": "", "min_version": "",
            "updated": "2011-01-21T11:33:21Z",
            "links": [{"rel": "self", "href": f"{req.base_url}/compute/v2/"}]}


@router.route("GET", r"/?", auth=False)
def versions(req: Request) -> Response:
    return Response(200, {"versions": [_v20(req), _v21(req)]})


@router.route("GET", V + r"/?", auth=False)
def version_v21(req: Request) -> Response:
    return Response(200, {"version": _v21(req)})


@router.route("GET", r"/v2/?", auth=False)
def version_v20(req: Request) -> Response:
    return Response(200, {"version": _v20(req)})

# ------------------------------------------------------------ flavors

def _flavor_view(req: Request, f: dict[str, Any], detail: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"id": f["id"], "name": f["name"], "links": _links(req, "flavors", f["id"])}
    if req.mv_at_least(2, 55):
        d["description"] = f["description"]
    if not detail:
        return d
    d.update({
        "ram": f["ram"], "disk": f["disk"], "vcpus": f["vcpus"],
        "OS-FLV-EXT-DATA:ephemeral": f["ephemeral"],
        "OS-FLV-DISABLED:disabled": f["disabled"],
        "os-flavor-access:is_public": f["is_public"],
        "rxtx_factor": f["rxtx_factor"],
        "swap": f["swap"] if (f["swap"] or req.mv_at_least(2, 75)) else "",
    })
    if req.mv_at_least(2, 61):
        d["extra_specs"] = dict(f["extra_specs"])
    return d


def _list_flavors(req: Request, detail: bool) -> Response:
    st = _st(req)
    with st.lock:
        fl = list(st.flavors.values())
        if req.q("minRam"):
            fl = [f for f in fl if f["ram"] >= int(req.q("minRam") or 0)]
        if req.q("minDisk"):
            fl = [f for f in fl if f["disk"] >= int(req.q("minDisk") or 0)]
        key = {"flavorid": "id", "id": "id", "name": "name", "memory_mb": "ram", "ram": "ram",
               "vcpus": "vcpus", "root_gb": "disk", "disk": "disk"}.get(req.q("sort_key") or "flavorid", "id")
        fl.sort(key=lambda f: (f[key], f["id"]), reverse=(req.q("sort_dir") == "desc"))
        return Response(200, _page(req, fl, "flavors", "flavors/detail" if detail else "flavors",
                                   lambda f: _flavor_view(req, f, detail), max_limit=1000))


router.add("GET", V + r"/flavors", lambda r: _list_flavors(r, False))
router.add("GET", V + r"/flavors/detail", lambda r: _list_flavors(r, True))


def _flavor(req: Request) -> dict[str, Any]:
    return lookup(_st(req).flavors, req.match["fid"],  # type: ignore[index]
                  lambda k: nova_error(404, f"Flavor {k} could not be found."))


@router.route("GET", V + r"/flavors/(?P<fid>[^/]+)")
def show_flavor(req: Request) -> Response:
    return Response(200, {"flavor": _flavor_view(req, _flavor(req), True)})


@router.route("GET", V + r"/flavors/(?P<fid>[^/]+)/os-extra_specs")
def flavor_extra_specs(req: Request) -> Response:
    return Response(200, {"extra_specs": dict(_flavor(req)["extra_specs"])})


# ------------------------------------------------------------ keypairs

_KP_NAME = re.compile(r"^[A-Za-z0-9 _\-@.]{1,255}$")


def _generate_keypair(name: str) -> tuple[str, str]:
    exe = shutil.which("ssh-keygen")
    if exe:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "key")
            try:
                subprocess.run([exe, "-q", "-t", "ed25519", "-N", "",
                                "-C", "Generated-by-Nova", "-f", path],
                               check=True, capture_output=True, timeout=30)
                with open(path) as fh:
                    priv = fh.read()
                with open(path + ".pub") as fh:
                    pub = fh.read().strip()
                return pub, priv
            except (OSError, subprocess.SubprocessError):
                pass
    # Fallback: a well-formed (but not usable) ed25519 key.
    import struct
    raw = secrets.token_bytes(32)
    kt = b"ssh-ed25519"
    blob = struct.pack(">I", len(kt)) + kt + struct.pack(">I", len(raw)) + raw
    pub = "ssh-ed25519 " + base64.b64encode(blob).decode() + " Generated-by-Nova"
    priv = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
            + base64.b64encode(secrets.token_bytes(300)).decode()
            + "\n-----END OPENSSH PRIVATE KEY-----\n")
    return pub, priv


def _kp_view(req: Request, kp: dict[str, Any], full: bool) -> dict[str, Any]:
    d = {"name": kp["name"], "public_key": kp["public_key"], "fingerprint": kp["fingerprint"]}
    if req.mv_at_least(2, 2):
        d["type"] = kp["type"]
    if full:
        d.update({"user_id": USER_ID, "created_at": iso_naive(kp["created_at"]),
                  "deleted": False, "deleted_at": None, "updated_at": None, "id": kp["seq"]})
    return d


@router.route("POST", V + r"/os-keypairs")
def create_keypair(req: Request) -> Response:
    st = _st(req)
    kp = _body_part(req, "keypair")
    if not isinstance(kp, dict) or "name" not in kp:
        raise _bad("keypair", kp, "'name' is a required property")
    name = kp["name"]
    if not isinstance(name, str) or not _KP_NAME.match(name) or name != name.strip():
        raise nova_error(400, "Keypair data is invalid: Keypair name contains unsafe characters")
    ktype = kp.get("type", "ssh")
    if ktype not in ("ssh", "x509"):
        raise _bad("type", ktype, f"'{ktype}' is not one of ['ssh', 'x509']")
    pub = kp.get("public_key")
    priv = None
    if pub is None:
        pub, priv = _generate_keypair(name)
    try:
        fp = ssh_fingerprint(pub) if ktype == "ssh" else \
            ":".join(hashlib.sha1(pub.encode()).hexdigest()[i:i + 2] for i in range(0, 40, 2))  # noqa: S324
    except ValueError:
        raise nova_error(400, "Keypair data is invalid: failed to generate fingerprint")
    with st.lock:
        if name in st.keypairs:
            raise nova_error(409, f"Key pair '{name}' already exists.")
        q = st.nova_quota["key_pairs"]
        if 0 <= q <= len(st.keypairs):
            raise nova_error(403, "Quota exceeded, too many key pairs.")
        rec = st.add_keypair(name, pub.strip(), fp, ktype)
        out = _kp_view(req, rec, False)
        out["user_id"] = USER_ID
        if priv is not None:
            out["private_key"] = priv
        status = 201 if req.mv_at_least(2, 2) else 200
        return Response(status, {"keypair": out})


@router.route("GET", V + r"/os-keypairs")
def list_keypairs(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        kps = sorted(st.keypairs.values(), key=lambda k: k["name"])

        def view(k: dict[str, Any]) -> dict[str, Any]:
            return {"keypair": _kp_view(req, k, False)}
        if not req.mv_at_least(2, 35):  # paging came with 2.35
            return Response(200, {"keypairs": [view(k) for k in kps]})
        return Response(200, _page(req, kps, "keypairs", "os-keypairs", view, id_key="name"))


def _kp(req: Request) -> dict[str, Any]:
    return lookup(_st(req).keypairs, req.match["name"],  # type: ignore[index]
                  lambda k: nova_error(404, f"Keypair {k} not found for user {USER_ID}"))


@router.route("GET", V + r"/os-keypairs/(?P<name>[^/]+)")
def show_keypair(req: Request) -> Response:
    with _st(req).lock:
        return Response(200, {"keypair": _kp_view(req, _kp(req), True)})


@router.route("DELETE", V + r"/os-keypairs/(?P<name>[^/]+)")
def delete_keypair(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        kp = _kp(req)
        del st.keypairs[kp["name"]]
    return Response(202 if not req.mv_at_least(2, 2) else 204)


# ------------------------------------------------------------ limits / quotas / usage

@router.route("GET", V + r"/limits")
def limits(req: Request) -> Response:
    st = _st(req)
    with st.lock:
        st.settle()
        q = st.nova_quota
        u = st.usage_counts()
        ab: dict[str, Any] = {
            "maxServerMeta": q["metadata_items"],
            "maxTotalInstances": q["instances"], "maxTotalCores": q["cores"],
            "maxTotalRAMSize": q["ram"], "maxTotalKeypairs": q["key_pairs"],
            "maxServerGroups": q["server_groups"],
            "maxServerGroupMembers": q["server_group_members"],
            "totalInstancesUsed": u["instances"], "totalCoresUsed": u["cores"],
            "totalRAMUsed": u["ram"], "totalServerGroupsUsed": 0,
        }
        if not req.mv_at_least(2, 39):
            ab["maxImageMeta"] = q["metadata_items"]
        if not req.mv_at_least(2, 36):
            ab.update({"maxSecurityGroups": q["security_groups"],
                       "maxSecurityGroupRules": q["security_group_rules"],
                       "maxTotalFloatingIps": q["floating_ips"],
                       "totalFloatingIpsUsed": u["floating_ips"],
                       "totalSecurityGroupsUsed": u["security_groups"]})
        if not req.mv_at_least(2, 57):
            ab.update({"maxPersonality": q["injected_files"],
                       "maxPersonalitySize": q["injected_file_content_bytes"]})
        return Response(200, {"limits": {"rate": [], "absolute": ab}})


_QUOTA_KEYS = ["cores", "instances", "ram", "key_pairs", "metadata_items", "server_groups",
               "server_group_members", "injected_files", "injected_file_content_bytes",
               "injected_file_path_bytes", "floating_ips", "fixed_ips", "security_groups",
               "security_group_rules", "networks"]


def _quota_keys(req: Request) -> list[str]:
    keys = list(_QUOTA_KEYS)
    keys.remove("networks")
    if req.mv_at_least(2, 36):
        for k in ("floating_ips", "fixed_ips", "security_groups", "security_group_rules"):
            keys.remove(k)
    if req.mv_at_least(2, 57):
        for k in ("injected_files", "injected_file_content_bytes", "injected_file_path_bytes"):
            keys.remove(k)
    return keys


@router.route("GET", V + r"/os-quota-sets/(?P<pid>[^/]+)(?P<kind>/detail|/defaults)?")
def quota_set(req: Request) -> Response:
    pid, kind, q, u = quota_request(req, "compute")
    out: dict[str, Any] = {"id": pid}
    for k in _quota_keys(req):
        if kind == "/detail":
            out[k] = {"in_use": u.get(k, 0), "limit": q[k], "reserved": 0}
        else:
            out[k] = q[k]
    return Response(200, {"quota_set": out})


@router.route("PUT", V + r"/os-quota-sets/(?P<pid>[^/]+)")
def update_quota_set(req: Request) -> Response:
    raise nova_error(403, "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.")


@router.route("DELETE", V + r"/os-quota-sets/(?P<pid>[^/]+)")
def delete_quota_set(req: Request) -> Response:
    raise nova_error(403, "Policy doesn't allow os_compute_api:os-quota-sets:delete to be performed.")


@router.route("GET", V + r"/os-simple-tenant-usage")
def usage_list(req: Request) -> Response:
    raise nova_error(403, "Policy doesn't allow os_compute_api:os-simple-tenant-usage:list "
                          "to be performed.")


@router.route("GET", V + r"/os-simple-tenant-usage/(?P<pid>[^/]+)")
def usage_show(req: Request) -> Response:
    st = _st(req)
    pid = req.match["pid"]  # type: ignore[index]
    t = now()
    try:
        start = parse_time(req.q("start")) if req.q("start") else t
        end = parse_time(req.q("end")) if req.q("end") else t
    except ValueError:
        raise nova_error(400, "Invalid start time. The start time cannot occur after the end time.")
    if start > end:
        raise nova_error(400, "Invalid start time. The start time cannot occur after the end time.")
    with st.lock:
        st.settle()
        usages = []
        for s in st.server_history:
            if s["project_id"] != pid:
                continue
            began = s["launched_at"] or s["created"]
            ended = s.get("terminated_at")
            lo = max(began, start)
            hi = min(ended if ended is not None else t, end, t)
            if began > end or (ended is not None and ended < start):
                continue
            hours = max(0.0, hi - lo) / 3600.0
            f = s["flavor"]
            usages.append({
                "ended_at": iso_naive(ended), "flavor": f["name"], "hours": hours,
                "instance_id": s["id"], "local_gb": f["disk"], "memory_mb": f["ram"],
                "name": s["name"], "started_at": iso_naive(began),
                "state": "terminated" if ended is not None else s["vm_state"],
                "tenant_id": pid, "uptime": int((ended or t) - began), "vcpus": f["vcpus"],
            })
        if not usages:
            return Response(200, {"tenant_usage": {}})
        body: dict[str, Any] = {
            "tenant_id": pid, "start": iso_naive(start), "stop": iso_naive(end),
            "total_hours": sum(u["hours"] for u in usages),
            "total_local_gb_usage": sum(u["hours"] * u["local_gb"] for u in usages),
            "total_memory_mb_usage": sum(u["hours"] * u["memory_mb"] for u in usages),
            "total_vcpus_usage": sum(u["hours"] * u["vcpus"] for u in usages),
        }
        body["server_usages"] = usages  # show is always detailed in Nova
        return Response(200, {"tenant_usage": body})


@router.route("GET", V + r"/os-availability-zone(?:/detail)?")
def availability_zones(req: Request) -> Response:
    return Response(200, {"availabilityZoneInfo": [
        {"zoneName": AZ, "zoneState": {"available": True}, "hosts": None}]})


__all__ = ["router", "add_server", "status_of"]
