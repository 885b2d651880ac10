"""Nova corners clients still use: the rebuild action, remote consoles (and the older console
actions), the image and floating-IP-pool proxies of microversions before 2.36, and /extensions."""

from __future__ import annotations

import secrets
from typing import Any

from .compute_actions import _ACTIONS, Action
from .compute_common import (V, _bad, _boot_log, _console, _finish, _links, _required, _schedule, _server, _st,
                             _valid_name, router, server_view)
from .core import Request, Response, iso, lookup, nova_error
from .state import State

# protocol -> the console types it offers (Nova's remote-consoles schema)
CONSOLES = {"vnc": ("novnc", "xvpvnc"), "spice": ("spice-html5",), "rdp": ("rdp-html5",), "serial": ("serial",),
            "mks": ("webmks",)}
# the older per-protocol actions: action -> protocol
CONSOLE_ACTIONS = {"os-getVNCConsole": "vnc", "os-getSPICEConsole": "spice", "os-getRDPConsole": "rdp",
                   "os-getSerialConsole": "serial"}
PROXY_REMOVED = (2, 36)  # images and floating-IP pools proxies answer 404 from this microversion on


# ------------------------------------------------------------ rebuild

def _a_rebuild(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
    if not isinstance(arg, dict) or "imageRef" not in arg:
        raise _bad("rebuild", arg, "'imageRef' is a required property")
    image = st.images.get(str(arg["imageRef"]))
    if image is None or image.get("status") != "active":
        raise nova_error(400, f"Image {arg['imageRef']} could not be found.")
    if "name" in arg and not _valid_name(arg["name"]):
        raise _bad("name", arg["name"], "is not a valid name")
    if s["vm_state"] not in ("active", "stopped", "error") or s.get("task_state"):
        which = "task_state" if s.get("task_state") else "vm_state"
        raise nova_error(409, f"Cannot 'rebuild' instance {s['id']} while it is in {which} {s[which]}")
    if image.get("min_disk") and s["flavor"]["disk"] and image["min_disk"] > s["flavor"]["disk"]:
        raise nova_error(400, "Flavor's disk is too small for requested image.")
    s["image_id"] = image["id"]
    if "name" in arg:
        s["name"] = arg["name"]
    if isinstance(arg.get("metadata"), dict):
        s["metadata"] = {str(k): str(v) for k, v in arg["metadata"].items()}
    back = "stopped" if s["vm_state"] == "stopped" else "active"  # a stopped server stays stopped
    s.pop("fault", None)
    s["console"] = []
    _schedule(st, s, "rebuilding", st.action_delay, _finish(
        back, "SHUTDOWN" if back == "stopped" else "RUNNING",
        lambda s, t: _console(s, *_boot_log(st, s, t)) if back == "active" else None))
    view = server_view(req, s)
    view["adminPass"] = str(arg.get("adminPass") or secrets.token_urlsafe(9))
    return Response(202, {"server": view})


# ------------------------------------------------------------ consoles

def _console_url(req: Request, protocol: str, kind: str) -> str:
    token = secrets.token_hex(16)
    port = {"vnc": 6080, "spice": 6082, "rdp": 6083, "serial": 6083, "mks": 6090}[protocol]
    host = req.base_url.split("://", 1)[1].split(":")[0].split("/")[0]
    if protocol == "serial":
        return f"ws://{host}:{port}/?token={token}"
    page = {"novnc": "vnc_lite.html", "xvpvnc": "console", "spice-html5": "spice_auto.html",
            "rdp-html5": "rdp", "webmks": "mks"}[kind]
    return f"http://{host}:{port}/{page}?path=%3Ftoken%3D{token}"


def _ready(s: dict[str, Any]) -> None:
    if s["vm_state"] != "active" or s.get("task_state"):
        raise nova_error(409, f"Instance {s['id']} is not ready")


def _checked(protocol: Any, kind: Any) -> tuple[str, str]:
    if protocol not in CONSOLES:
        raise _bad("protocol", protocol, f"'{protocol}' is not one of {list(CONSOLES)}")
    if kind not in CONSOLES[protocol]:
        raise nova_error(400, f"Invalid parameters: unsupported console type {kind} for protocol {protocol}")
    return str(protocol), str(kind)


@router.route("POST", V + r"/servers/(?P<sid>[^/]+)/remote-consoles")
def remote_console(req: Request) -> Response:
    if not req.mv_at_least(2, 6):
        raise nova_error(404, "The resource could not be found.")
    body = _required(req, "remote_console")
    protocol, kind = _checked(body.get("protocol"), body.get("type"))
    st = _st(req)
    with st.lock:
        st.settle()
        _ready(_server(req))
        return Response(200, {"remote_console": {"protocol": protocol, "type": kind,
                                                 "url": _console_url(req, protocol, kind)}})


def _console_action(protocol: str) -> Action:
    def act(req: Request, st: State, s: dict[str, Any], arg: Any) -> Response:
        kind = arg.get("type") if isinstance(arg, dict) else None
        _, kind = _checked(protocol, kind)
        _ready(s)
        return Response(200, {"console": {"type": kind, "url": _console_url(req, protocol, kind)}})
    return act


_ACTIONS["rebuild"] = _a_rebuild
_ACTIONS.update({name: _console_action(protocol) for name, protocol in CONSOLE_ACTIONS.items()})


# ------------------------------------------------------------ proxies of old microversions

def _proxy(req: Request) -> None:
    if req.mv_at_least(*PROXY_REMOVED):
        raise nova_error(404, "The resource could not be found.")


@router.route("GET", V + r"/os-floating-ip-pools")
def floating_ip_pools(req: Request) -> Response:
    _proxy(req)
    st = _st(req)
    with st.lock:
        pools = [{"name": n["name"]} for n in st.networks.values() if n["router:external"]]
    return Response(200, {"floating_ip_pools": pools})


def _nova_image(req: Request, img: dict[str, Any], detail: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"id": img["id"], "name": img["name"], "links": _links(req, "images", img["id"])}
    if detail:
        d.update({"status": "ACTIVE" if img["status"] == "active" else str(img["status"]).upper(),
                  "progress": 100 if img["status"] == "active" else 0,
                  "minDisk": img.get("min_disk", 0), "minRam": img.get("min_ram", 0),
                  "created": iso(img["created_at"]), "updated": iso(img["updated_at"]),
                  "OS-EXT-IMG-SIZE:size": img.get("size"),
                  "metadata": {k: v for k, v in img.items() if k in ("os_distro", "os_version",
                                                                     "hw_disk_bus", "hw_architecture")}})
    return d


def _visible_images(st: State) -> list[dict[str, Any]]:
    from .image import _visible

    return sorted((i for i in st.images.values() if _visible(i)), key=lambda i: i["created_at"], reverse=True)


def _list_images(req: Request, detail: bool) -> Response:
    _proxy(req)
    st = _st(req)
    with st.lock:
        images = _visible_images(st)
        if req.q("name"):
            images = [i for i in images if i["name"] == req.q("name")]
        return Response(200, {"images": [_nova_image(req, i, detail) for i in images]})


router.add("GET", V + r"/images", lambda r: _list_images(r, False))
router.add("GET", V + r"/images/detail", lambda r: _list_images(r, True))


@router.route("GET", V + r"/images/(?P<iid>[^/]+)")
def show_image(req: Request) -> Response:
    _proxy(req)
    st = _st(req)
    with st.lock:
        from .image import _visible

        img = lookup(st.images, req.match["iid"],  # type: ignore[index]
                     lambda k: nova_error(404, "Image not found."), _visible)
        return Response(200, {"image": _nova_image(req, img, True)})


# ------------------------------------------------------------ extensions
# Only what this server does: each alias names a feature a client can use here.

_EXTENSIONS = [
    ("os-availability-zone", "AvailabilityZone", "1. Add availability_zone to the Create Server API."),
    ("os-console-output", "ConsoleOutput", "Console log output support, with tailing ability."),
    ("os-extended-availability-zone", "ExtendedAvailabilityZone", "Extended Availability Zone support."),
    ("OS-EXT-IPS", "ExtendedIps", "Adds type parameter to the ip list."),
    ("OS-EXT-IPS-MAC", "ExtendedIpsMac", "Adds mac address parameter to the ip list."),
    ("OS-EXT-STS", "ExtendedStatus", "Extended Status support."),
    ("os-extended-volumes", "ExtendedVolumes", "Extended Volumes support."),
    ("OS-FLV-DISABLED", "FlavorDisabled", "Support to show the disabled status of a flavor."),
    ("os-flavor-access", "FlavorAccess", "Flavor access support."),
    ("OS-FLV-EXT-DATA", "FlavorExtraData", "Provide additional data for flavors."),
    ("os-keypairs", "Keypairs", "Keypair Support."),
    ("os-lock-server", "LockServer", "Enable lock/unlock server actions."),
    ("os-multiple-create", "MultipleCreate", "Allow multiple create in the Create Server v2.1 API."),
    ("os-pause-server", "PauseServer", "Enable pause/unpause server actions."),
    ("os-quota-sets", "Quotas", "Quotas management support."),
    ("os-remote-consoles", "Consoles", "Interactive Console support."),
    ("os-scheduler-hints", "SchedulerHints", "Pass arbitrary key/value pairs to the scheduler."),
    ("os-security-groups", "SecurityGroups", "Security group support."),
    ("os-server-groups", "ServerGroups", "Server group support."),
    ("os-server-usage", "ServerUsage", "Adds launched_at and terminated_at on Servers."),
    ("os-simple-tenant-usage", "SimpleTenantUsage", "Simple tenant usage extension."),
    ("os-suspend-server", "SuspendServer", "Enable suspend/resume server actions."),
    ("os-user-data", "UserData", "Add user_data to the Create Server API."),
]


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": description, "links": [],
            "namespace": f"http://docs.openstack.org/compute/ext/{name.lower()}/api/v1.1",
            "updated": "2014-12-03T00:00:00Z"}


@router.route("GET", V + r"/extensions")
def extensions(req: Request) -> Response:
    return Response(200, {"extensions": [_extension(*e) for e in _EXTENSIONS]})


@router.route("GET", V + r"/extensions/(?P<alias>[^/]+)")
def extension(req: Request) -> Response:
    alias = req.match["alias"]  # type: ignore[index]
    for e in _EXTENSIONS:
        if e[0] == alias:
            return Response(200, {"extension": _extension(*e)})
    raise nova_error(404, "The resource could not be found.")
