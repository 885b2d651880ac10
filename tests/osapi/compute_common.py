"""Nova helpers shared by the compute modules: router, state lookups,
the server view (microversion-aware), status mapping and transitions."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Callable

from .core import (Request, Router, add_next_link, iso, iso_naive, lookup, nova_error, now,
                   paginate)
from .guest_console import final_message
from .state import AZ, POWER, State, owned

router = Router()
V = r"/v2\.1"

# ------------------------------------------------------------ helpers

_STATUS_BY_VM = {
    "active": "ACTIVE", "building": "BUILD", "stopped": "SHUTOFF",
    "resized": "VERIFY_RESIZE", "paused": "PAUSED", "suspended": "SUSPENDED",
    "rescued": "RESCUE", "error": "ERROR", "deleted": "DELETED",
    "soft-delete": "SOFT_DELETED", "shelved": "SHELVED",
    "shelved_offloaded": "SHELVED_OFFLOADED",
}
_STATUS_BY_TASK = {
    "rebooting": "REBOOT", "reboot_pending": "REBOOT", "reboot_started": "REBOOT",
    "rebooting_hard": "HARD_REBOOT", "reboot_pending_hard": "HARD_REBOOT",
    "reboot_started_hard": "HARD_REBOOT", "rebuilding": "REBUILD",
    "resize_prep": "RESIZE", "resize_migrating": "RESIZE",
    "resize_migrated": "RESIZE", "resize_finish": "RESIZE",
    "resize_reverting": "REVERT_RESIZE",
}


def status_of(s: dict[str, Any]) -> str:
    task = s.get("task_state")
    if s["vm_state"] in ("active", "stopped", "resized") and task in _STATUS_BY_TASK:
        return _STATUS_BY_TASK[task]
    return _STATUS_BY_VM.get(s["vm_state"], "UNKNOWN")


def _st(req: Request) -> State:
    return req.state


def _server(req: Request, sid: str | None = None) -> dict[str, Any]:
    return lookup(_st(req).servers, sid or req.match["sid"],  # type: ignore[index]
                  lambda k: nova_error(404, f"Instance {k} could not be found."), owned)


def _page(req: Request, items: list[dict[str, Any]], coll: str, path: str,
          view: Callable[[dict[str, Any]], dict[str, Any]], **limits: Any) -> dict[str, Any]:
    """A Nova list body: one page of ``items`` shown by ``view``, and a
    ``<coll>_links`` next link to ``path`` (below /compute/v2.1) when more follow."""
    page, nxt = paginate(items, req, not_found=lambda m: nova_error(400, f"marker [{m}] not found"),
                         **limits)
    return add_next_link({coll: [view(i) for i in page]}, coll, req,
                         f"{req.base_url}/compute/v2.1/{path}", nxt)


def _bookmark(req: Request, kind: str, oid: str) -> list[dict[str, str]]:
    return [{"rel": "bookmark", "href": f"{req.base_url}/compute/{kind}/{oid}"}]


def _links(req: Request, kind: str, oid: str) -> list[dict[str, str]]:
    return [{"rel": "self", "href": f"{req.base_url}/compute/v2.1/{kind}/{oid}"}] + \
        _bookmark(req, kind, oid)


def _flavor_in_server(req: Request, f: dict[str, Any]) -> dict[str, Any]:
    if req.mv_at_least(2, 47):
        return {"vcpus": f["vcpus"], "ram": f["ram"], "disk": f["disk"],
                "ephemeral": f["ephemeral"], "swap": f["swap"],
                "original_name": f["name"], "extra_specs": dict(f["extra_specs"])}
    return {"id": f["id"], "links": _bookmark(req, "flavors", f["id"])}


_PROGRESS_STATUSES = {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}


def server_view(req: Request, s: dict[str, Any]) -> dict[str, Any]:
    st = _st(req)
    status = status_of(s)
    image: Any = ""
    if s["image_id"]:
        image = {"id": s["image_id"], "links": _bookmark(req, "images", s["image_id"])}
    host = s["host"]
    d: dict[str, Any] = {
        "id": s["id"], "name": s["name"], "status": status,
        "tenant_id": s["project_id"], "user_id": s["user_id"],
        "metadata": dict(s["metadata"]),
        "hostId": hashlib.sha224((s["project_id"] + host).encode()).hexdigest() if host else "",
        "image": image, "flavor": _flavor_in_server(req, s["flavor"]),
        "created": iso(s["created"]), "updated": iso(s["updated"]),
        "addresses": st.addresses(s),
        "accessIPv4": s["access_ipv4"], "accessIPv6": s["access_ipv6"],
        "links": _links(req, "servers", s["id"]),
        "OS-DCF:diskConfig": s["disk_config"],
        "OS-EXT-AZ:availability_zone": AZ if host else "",
        "config_drive": "True" if s["config_drive"] else "",
        "key_name": s["key_name"],
        "OS-SRV-USG:launched_at": iso_naive(s["launched_at"]),
        "OS-SRV-USG:terminated_at": None,
        "OS-EXT-STS:task_state": s["task_state"],
        "OS-EXT-STS:vm_state": s["vm_state"],
        "OS-EXT-STS:power_state": s["power_state"],
        "os-extended-volumes:volumes_attached": [],
    }
    if status in _PROGRESS_STATUSES:
        prog = 0
        p = s.get("pending")
        if status == "BUILD" and p and p["at"] > s["created"]:
            prog = int(100 * min(1.0, (now() - s["created"]) / (p["at"] - s["created"])))
        d["progress"] = prog
    if s["vm_state"] != "building" or s["security_groups"]:
        d["security_groups"] = [{"name": n} for n in s["security_groups"]]
    if status in ("ERROR", "DELETED") and s.get("fault"):
        f = s["fault"]
        d["fault"] = {"code": f["code"], "created": iso(f["created"]),
                      "message": f["message"]}
        if f["code"] != 500:
            d["fault"]["details"] = f.get("details", "")
    if req.mv_at_least(2, 9):
        d["locked"] = s["locked"]
    if req.mv_at_least(2, 19):
        d["description"] = s["description"]
    if req.mv_at_least(2, 26):
        d["tags"] = list(s["tags"])
    if req.mv_at_least(2, 63):
        d["trusted_image_certificates"] = None
    if req.mv_at_least(2, 71):
        d["server_groups"] = []
    if req.mv_at_least(2, 73):
        d["locked_reason"] = None
    if req.mv_at_least(2, 90):
        d["OS-EXT-SRV-ATTR:hostname"] = s["hostname"]
    if req.mv_at_least(2, 96):
        d["pinned_availability_zone"] = None
    return d


def _conflict(s: dict[str, Any], action: str) -> Exception:
    which = "task_state" if s.get("task_state") else "vm_state"
    return nova_error(409, f"Cannot '{action}' instance {s['id']} while it is in "
                           f"{which} {s[which]}")


def _over_quota(overs: list[str], requested: dict[str, int], used: dict[str, int],
                limits: dict[str, int]) -> Exception:
    """Nova's 403 for the resources in ``overs``, each listed in that order."""
    def each(d: dict[str, int]) -> str:
        return ", ".join(str(d[k]) for k in overs)
    names = ", ".join(overs)
    return nova_error(403, f"Quota exceeded for {names}: Requested {each(requested)}, but "
                           f"already used {each(used)} of {each(limits)} {names}")


def _require(s: dict[str, Any], action: str, vm_states: tuple[str, ...],
             allow_task: bool = False) -> None:
    if (s.get("task_state") and not allow_task) or s["vm_state"] not in vm_states:
        raise _conflict(s, action)


def _schedule(st: State, s: dict[str, Any], task: str | None, delay: float,
              apply: Callable[[dict[str, Any], float], None]) -> None:
    t = now()
    s["updated"] = t
    s["task_state"] = task
    if delay <= 0:
        s["task_state"] = None
        apply(s, t)
        return
    s["pending"] = {"at": t + delay, "apply": apply}


def _finish(vm_state: str, power: str, extra: Callable[[dict[str, Any], float], None] | None = None
            ) -> Callable[[dict[str, Any], float], None]:
    def apply(s: dict[str, Any], t: float) -> None:
        s["vm_state"] = vm_state
        s["task_state"] = None
        s["power_state"] = POWER[power]
        s["updated"] = t
        if extra:
            extra(s, t)
    return apply


def _console(s: dict[str, Any], *lines: str) -> None:
    s["console"].extend(lines)


def _boot_log(st: State, s: dict[str, Any], t: float) -> list[str]:
    ips = [f["ip_address"] for p in st.server_ports(s["id"]) for f in p["fixed_ips"]]
    ip = ips[0] if ips else "-"
    stamp = iso(t)
    lines = [
        "[    0.000000] Linux version 6.1.0-18-cloud-amd64 (debian-kernel@lists.debian.org)",
        "[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz root=/dev/vda1 ro console=ttyS0",
        "[    0.412345] virtio_blk virtio1: [vda] 2097152 512-byte logical blocks",
        "[    1.234567] EXT4-fs (vda1): mounted filesystem with ordered data mode.",
        f"[    2.345678] cloud-init[312]: Cloud-init v. 23.1.1 running 'init' at {stamp}. Up 2.30 seconds.",
        "[    2.401234] cloud-init[312]: ci-info: ++++++++++++++++++++++Net device info+++++++++++++++++++++++",
        f"[    2.401300] cloud-init[312]: ci-info: |  eth0  | True | {ip} | 255.255.255.0 | global |",
    ]
    if s.get("key_name"):
        lines.append(f"[    3.100000] cloud-init[380]: Authorized keys from key pair '{s['key_name']}' installed")
    if s.get("user_data"):
        lines.append(f"[    3.200000] cloud-init[380]: user-data: {len(s['user_data'])} bytes processed")
    lines += [
        "-----BEGIN SSH HOST KEY FINGERPRINTS-----",
        "256 SHA256:" + base64.b64encode(hashlib.sha256(s["id"].encode()).digest()).decode()[:43]
        + f" root@{s['hostname']} (ED25519)",
        "-----END SSH HOST KEY FINGERPRINTS-----",
        "[    4.500000] cloud-init[402]: " + (final_message(s.get("user_data"), stamp, "4.49") or
                                               f"Cloud-init v. 23.1.1 finished at {stamp}. Datasource "
                                               "DataSourceOpenStackLocal [net,ver=2].  Up 4.49 seconds"),
        "",
        f"{s['hostname']} login: ",
    ]
    return lines


def _hostname(name: str) -> str:
    h = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return (h or "server")[:63]



def _parse_ref(v: Any) -> str:
    return str(v).rstrip("/").rsplit("/", 1)[-1] if v else ""


def _bad(field: str, value: Any, why: str) -> Exception:
    return nova_error(400, f"Invalid input for field/attribute {field}. Value: {value}. {why}")


def _body_part(req: Request, key: str) -> Any:
    """body[key] of a JSON object body, else None."""
    body = req.json() or {}
    return body.get(key) if isinstance(body, dict) else None


def _required(req: Request, key: str) -> dict[str, Any]:
    """body[key], which must be an object: {"server": {...}} and the like."""
    part = _body_part(req, key)
    if not isinstance(part, dict):
        raise _bad(key, req.json() or {}, f"'{key}' is a required property")
    return part


def _valid_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name.strip()) and len(name) <= 255
