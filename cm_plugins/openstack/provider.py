"""The openstack cloud kind: VMs, images, flavors and keys through openstacksdk.

One Connection per provider, shared by the threads of a parallel boot: it is
authenticated and its compute endpoint discovered under a lock before any
thread uses it, lookups the threads share (images, flavors, networks, keys)
are cached under the same lock, and its HTTP pool is large enough for them.
Networks, security groups, floating IPs, quotas, limits and usage are in
:mod:`cm_plugins.openstack.networking`.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from typing import Any

from openstack import exceptions as os_exc
from openstack import utils as os_utils

from cm.bulk import proceed
from cm.errors import CmError, Conflict, NotFound, ProviderError, UsageError, stopped
from cm.names import ambiguous
from cm.provider import VM, BootSpec, Flavor, Image, Key, Provider, State
from cm_plugins.openstack import convert
from cm_plugins.openstack.images import ImagesMixin
from cm_plugins.openstack.networking import NetworkingMixin
from cm_plugins.openstack.polling import PollTimeout, poll
from cm_plugins.openstack.ports import PortsMixin
from cm_plugins.openstack.session import connect, secrets_of, translate, translated

# OS_* variables of an openrc → (section, key) of the cloud entry ("" = top level).
ENV_AUTH = {
    "OS_AUTH_URL": "auth_url", "OS_USERNAME": "username", "OS_USER_ID": "user_id", "OS_PASSWORD": "password",
    "OS_PROJECT_NAME": "project_name", "OS_PROJECT_ID": "project_id", "OS_TENANT_NAME": "project_name",
    "OS_TENANT_ID": "project_id", "OS_USER_DOMAIN_NAME": "user_domain_name", "OS_USER_DOMAIN_ID": "user_domain_id",
    "OS_PROJECT_DOMAIN_NAME": "project_domain_name", "OS_PROJECT_DOMAIN_ID": "project_domain_id",
    "OS_DOMAIN_NAME": "domain_name", "OS_DOMAIN_ID": "domain_id", "OS_TOKEN": "token",
    "OS_APPLICATION_CREDENTIAL_ID": "application_credential_id",
    "OS_APPLICATION_CREDENTIAL_NAME": "application_credential_name",
    "OS_APPLICATION_CREDENTIAL_SECRET": "application_credential_secret",
    "OS_SYSTEM_SCOPE": "system_scope",
}
ENV_TOP = {
    "OS_AUTH_TYPE": "auth_type", "OS_REGION_NAME": "region_name", "OS_INTERFACE": "interface",
    "OS_ENDPOINT_TYPE": "interface", "OS_IDENTITY_API_VERSION": "identity_api_version",
    "OS_CACERT": "cacert", "OS_CERT": "cert", "OS_KEY": "key", "OS_INSECURE": "insecure",
    "OS_COMPUTE_API_VERSION": "compute_api_version",
}
# The newest compute microversion this provider reads (2.47+ embeds the flavor in a server).
COMPUTE_MICROVERSION = "2.79"
CACHE_TTL = 60.0  # seconds the image, flavor, network and key lookups of boots are reused (interactive shells)
NAMES_TTL = 5.0  # seconds a snapshot of the cloud's server names serves duplicate checks at boot
# The action that brings a VM in this status back to running.
RESUME_ACTIONS = {"SUSPENDED": "resume_server", "PAUSED": "unpause_server"}
REGEX_SPECIAL = re.compile(r"([.^$*+?{}\[\]\\|()])")
UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def exact(name: str) -> str:
    """Nova's name filter is a regular expression: one that matches ``name`` only."""
    return "^" + REGEX_SPECIAL.sub(r"\\\1", name) + "$"


class OpenStackProvider(PortsMixin, NetworkingMixin, ImagesMixin, Provider):
    """One OpenStack cloud (a clouds.yaml entry or a cm.yaml entry made with --from-env)."""

    kind = "openstack"
    # VM creates, deletes, power actions, IP assign/release and secgroup/IP deletes first ask
    # cm.bulk.proceed(): none is sent after a Ctrl-C
    gates_calls = True
    required_settings = (("auth_url", "cloud", "auth"),)  # where to log in, or a clouds.yaml cloud
    boot_matches_prefix = True  # `--image cirros-0.6` boots cirros-0.6.2-x86_64-disk, as the openstack CLI does

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        super().__init__(name, config)
        self._lock = threading.RLock()
        self._conn: Any = None
        self.secrets: set[str] = secrets_of(config)
        self._image_names: dict[str, str] = {}  # id -> name
        self._flavor_names: dict[str, str] = {}
        self._images: list[Image] | None = None
        self._flavors: list[Flavor] | None = None
        self._keys: dict[str, str] | None = None  # name -> fingerprint, of the keys the cloud has
        self._default_network: list[dict[str, str]] | str | None = None
        self._microversion: str | None = None
        self._taken: tuple[float, set[str]] | None = None  # (when, names of the cloud's servers)
        self._cached_at = time.monotonic()

    # -- configuration and the connection ---------------------------------------------------------------
    @classmethod
    def config_from_env(cls, environ: dict[str, str]) -> dict[str, Any]:
        """A cloud entry from a sourced openrc's OS_* variables (cm.yaml is written 0600)."""
        if environ.get("OS_CLOUD") and not environ.get("OS_AUTH_URL"):
            return {"cloud": environ["OS_CLOUD"]}
        if not environ.get("OS_AUTH_URL"):
            raise UsageError("no OS_AUTH_URL in the environment: source your openrc file first "
                             "(or name a clouds.yaml cloud with OS_CLOUD)")
        auth = {key: environ[var] for var, key in ENV_AUTH.items() if environ.get(var)}
        conf: dict[str, Any] = {key: environ[var] for var, key in ENV_TOP.items() if environ.get(var)}
        if "auth_type" not in conf:
            if auth.get("application_credential_secret"):
                conf["auth_type"] = "v3applicationcredential"
            elif auth.get("token") and not auth.get("password"):
                conf["auth_type"] = "v3token"
            else:
                conf["auth_type"] = "password"
        if conf["auth_type"].startswith("v3applicationcredential"):
            for key in ("project_name", "project_id", "project_domain_name", "project_domain_id"):
                auth.pop(key, None)  # an application credential is already scoped
        if "insecure" in conf:
            conf["insecure"] = conf["insecure"].lower() in ("1", "true", "yes")
        return {**conf, "auth": auth}

    @property
    def conn(self) -> Any:
        """The shared Connection, made (and authenticated) once, under the lock."""
        if self._conn is None:
            with self._lock:
                if self._conn is None:
                    conn = connect(self.name, self.config)
                    self.secrets |= secrets_of(conn.config.config)
                    conn.compute.get_endpoint()  # authenticate and discover compute before threads share it
                    self._conn = conn
        return self._conn

    def service(self, name: str) -> Any:
        """A service proxy (compute, network, image), made under the lock the first time."""
        conn = self.conn
        if name not in getattr(conn, "_proxies", {}):
            with self._lock:
                getattr(conn, name)
        return getattr(conn, name)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001, S110 - closing must never fail a command
                pass
            self._conn = None

    def timeout(self) -> float:
        return float(self.config.get("timeout") or 600)

    # -- servers as plain JSON ---------------------------------------------------------------------------------
    # Servers are read through the SDK's compute adapter (auth, endpoint, retries
    # are the SDK's), but not turned into SDK resources: building and reading a
    # Server resource costs ~15 ms, so a 200-VM list took 3.5 s instead of 0.1 s.
    def _nova(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        compute = self.service("compute")
        if self._microversion is None:
            with self._lock:
                if self._microversion is None:
                    self._microversion = os_utils.maximum_supported_microversion(compute, COMPUTE_MICROVERSION) or ""
        if self._microversion:
            kwargs["microversion"] = self._microversion
        response = compute.request(path, method, **kwargs)
        os_exc.raise_from_response(response)
        return response.json() if response.content else {}

    def _server_list(self, detail: bool = True, **query: Any) -> list[dict[str, Any]]:
        """Every server (following Nova's pages), optionally filtered by Nova's query parameters."""
        url: str | None = "/servers/detail" if detail else "/servers"
        params: dict[str, Any] | None = query
        servers: list[dict[str, Any]] = []
        while url:
            body = self._nova("GET", url, params=params)
            page = body.get("servers") or []
            servers += page
            following = [link["href"] for link in body.get("servers_links") or [] if link.get("rel") == "next"]
            url, params = (following[0], None) if following and page else (None, None)
        return servers

    def _server_by_id(self, server_id: str) -> dict[str, Any]:
        return self._nova("GET", f"/servers/{server_id}")["server"]

    # -- name resolution -----------------------------------------------------------------------------------
    def _servers_named(self, name: str, details: bool = False) -> list[dict[str, Any]]:
        return [s for s in self._server_list(details, name=exact(name)) if s.get("name") == name]

    def _server(self, ref: str, details: bool = False) -> dict[str, Any]:
        """The one server called ``ref``, or with that id: NotFound if none, Conflict if several share the name."""
        found = self._servers_named(ref, details)
        if len(found) > 1:
            raise Conflict(ambiguous(ref, self.name, [s["id"] for s in found]))
        if found:
            return found[0]
        if UUID.match(ref):
            try:
                return self._server_by_id(ref)
            except os_exc.NotFoundException:
                pass
        raise NotFound(f"no VM '{ref}' on cloud '{self.name}' (see `cm vm list --refresh`)")

    @staticmethod
    def _one(kind: str, wanted: str, items: list[Any], cloud: str, prefix: bool = False) -> Any:
        """The item whose name or id is ``wanted`` (or, with ``prefix``, whose name alone starts with it);
        several with that name is a Conflict.  Only boot's --image/--flavor lookups take ``prefix``:
        a verb that deletes or changes something acts on exactly the name given."""
        by_id = [i for i in items if i.id == wanted]
        if by_id:
            return by_id[0]
        by_name = [i for i in items if i.name == wanted]
        if not by_name and prefix:  # "cirros-0.6" for "cirros-0.6.2-x86_64-disk", if no other image starts so
            starting = [i for i in items if i.name.startswith(wanted)]
            if len(starting) > 1:
                names = ", ".join(sorted(i.name for i in starting))
                raise Conflict(f"{kind} '{wanted}' on cloud '{cloud}' could be any of {names}; give the full name")
            by_name = starting
        if not by_name:
            raise NotFound(f"no {kind} '{wanted}' on cloud '{cloud}' (see `cm {kind} list --refresh`)")
        if len(by_name) > 1:
            raise Conflict(f"cloud '{cloud}' has {len(by_name)} {kind}s named '{wanted}'; give the id instead")
        return by_name[0]

    def _image(self, wanted: str) -> Image:
        with self._lock:  # parallel boots share one image list
            images = self.list_images() if self._images is None else self._images
        try:
            return self._one("image", wanted, images, self.name, prefix=True)
        except NotFound:
            return self._one("image", wanted, self.list_images(), self.name, prefix=True)  # new since the cache?

    def _flavor(self, wanted: str, prefix: bool = True) -> Flavor:
        with self._lock:
            flavors = self.list_flavors() if self._flavors is None else self._flavors
        try:
            return self._one("flavor", wanted, flavors, self.name, prefix=prefix)
        except NotFound:
            return self._one("flavor", wanted, self.list_flavors(), self.name, prefix=prefix)

    def _network(self, wanted: str) -> Any:
        try:
            return self._one("network", wanted, self._cached_networks(), self.name)
        except NotFound:
            return self._one("network", wanted, self.list_networks(), self.name)

    def _expire_lookups(self) -> None:
        """Forget cached lookups older than CACHE_TTL, so a long interactive session sees changes."""
        with self._lock:
            if time.monotonic() - self._cached_at > CACHE_TTL:
                self._images = self._flavors = self._keys = self._networks = self._default_network = None
                self._cached_at = time.monotonic()

    def _names_for_vms(self, servers: list[dict[str, Any]]) -> None:
        """Make sure the image and flavor names of these servers are known (one list call each at most)."""
        with self._lock:
            if {convert.image_id(s) for s in servers} - {""} - set(self._image_names):
                self.list_images()
            linked = {(s.get("flavor") or {}).get("id") for s in servers if not (s.get("flavor") or {}).get(
                "original_name")} - {None, ""}
            if linked - set(self._flavor_names):
                self.list_flavors()

    def _to_vm(self, server: dict[str, Any]) -> VM:
        return convert.to_vm(server, self._image_names, self._flavor_names)

    # -- VMs -------------------------------------------------------------------------------------------------
    @translated("list VMs")
    def list_vms(self) -> list[VM]:
        servers = self._server_list(detail=True)
        self._names_for_vms(servers)
        return [self._to_vm(s) for s in servers]

    @translated("show the VM")
    def get_vm(self, name: str) -> VM:
        server = self._server(name, details=True)
        self._names_for_vms([server])
        return self._to_vm(server)

    def _boot_network(self, spec: BootSpec) -> list[dict[str, str]] | str:
        """The networks attribute of a create: the named ones, the cloud's default, or its one private network."""
        wanted = spec.networks or ([self.config["network"]] if self.config.get("network") else [])
        if wanted:
            return [{"uuid": self._network(n).id} for n in wanted]
        with self._lock:
            if self._default_network is None:
                private = [n for n in self._cached_networks() if not n.external]
                # One private network: use it; several or none: let Nova pick ("auto").
                self._default_network = [{"uuid": private[0].id}] if len(private) == 1 else "auto"
            return self._default_network

    def _ensure_key(self, spec: BootSpec) -> str:
        """The key name to boot with, uploading the user's public key once if the cloud lacks it."""
        if not spec.key_name:
            return ""
        with self._lock:
            if self._keys is None:
                self._keys = {k.name: k.fingerprint for k in self.list_keys()}
            have = self._keys.get(spec.key_name)
            if have is None:
                if not spec.public_key:
                    raise NotFound(f"key '{spec.key_name}' is not on cloud '{self.name}' and no public key file was "
                                   "found for it; upload one with `cm key upload`")
                key = self.upload_key(spec.key_name, spec.public_key)
                self._keys[key.name] = key.fingerprint
            elif spec.public_key and have and convert.md5_fingerprint(spec.public_key) not in ("", have):
                raise Conflict(f"key '{spec.key_name}' on cloud '{self.name}' is not your local {spec.key_name}.pub; "
                               "delete it with `cm key delete` or boot with another --key")
        return spec.key_name

    def _name_taken(self, name: str) -> bool:
        """Whether the cloud has a server called ``name``, from one list shared by a parallel boot's threads."""
        with self._lock:
            if self._taken is None or time.monotonic() - self._taken[0] > NAMES_TTL:
                self._taken = (time.monotonic(), {s["name"] for s in self._server_list(detail=False)})
            if name in self._taken[1]:
                return True
            self._taken[1].add(name)  # claimed: a second boot of this name in this process is a conflict too
            return False

    @translated("boot the VM")
    def create_vm(self, spec: BootSpec) -> VM:
        """Send the create and return at once (BUILD); --public also waits for the port and attaches an IP."""
        self._expire_lookups()
        image = self._image(spec.image)
        flavor = self._flavor(spec.flavor)
        networks = self._reserved_networks(spec) or self._boot_network(spec)
        key_name = self._ensure_key(spec)
        if self._name_taken(spec.name):
            raise Conflict(f"a VM named '{spec.name}' already exists on cloud '{self.name}' "
                           "(see `cm vm list --refresh`)")
        attrs: dict[str, Any] = {"name": spec.name, "imageRef": image.id, "flavorRef": flavor.id,
                                 "networks": networks}
        if key_name:
            attrs["key_name"] = key_name
        if spec.secgroups:
            attrs["security_groups"] = [{"name": g} for g in spec.secgroups]
        if spec.user_data:
            attrs["user_data"] = base64.b64encode(spec.user_data.encode()).decode()
        if spec.user:
            attrs["metadata"] = {"cm_user": spec.user}
        try:
            proceed()  # after a Ctrl-C, no create is sent
            server = self._nova("POST", "/servers", json={"server": attrs})["server"]
        except BaseException:
            with self._lock:  # not created: the name is free again
                if self._taken is not None:
                    self._taken[1].discard(spec.name)
            raise
        vm = VM(name=spec.name, id=server["id"], state=State.PENDING, image=image.name, flavor=flavor.name,
                key=key_name, extra={"status": "BUILD", "security_groups": list(spec.secgroups) or ["default"]})
        if spec.public:
            try:
                proceed()
                vm.public_ips = [self._give_public_ip(server["id"], spec.name)]
            except Exception as exc:  # the VM exists (the command records it): say why it has no address
                why = exc if isinstance(exc, CmError) else translate(exc, self.name, "", self.secrets)
                vm.extra["public_ip_error"] = f"created, but could not give it a public IP: {why}"
        return vm

    def _act(self, name: str, action: str, *args: Any, done: tuple[str, ...] = (), verb: str = "",
             by_status: dict[str, str] | None = None, server: dict[str, Any] | None = None) -> None:
        """Ask Nova for ``action`` (or ``by_status``'s action for the VM's status).  As on kvm, a VM already
        settled in a ``done`` status is left alone, and with ``verb`` a stopped one is refused saying what to do."""
        server = server or self._server(name, details=True)
        status = (server.get("status") or "").upper()
        if not server.get("OS-EXT-STS:task_state"):  # mid-transition: Nova decides
            if status in done:
                return
            if verb and convert.state_of(status) == State.STOPPED:
                raise stopped(name, verb)
        proceed()
        getattr(self.service("compute"), (by_status or {}).get(status, action))(server["id"], *args)

    @translated("start the VM")
    def start_vm(self, name: str) -> None:
        """Start a stopped VM; as on kvm, a suspended or paused one is resumed and a running one left alone."""
        self._act(name, "start_server", done=("ACTIVE",), by_status=RESUME_ACTIONS)

    @translated("stop the VM")
    def stop_vm(self, name: str, timeout: float | None = None) -> None:
        """Ask Nova to stop the VM; the command waits for SHUTOFF, so ``timeout`` is not needed here.
        Nova stops only running VMs: a suspended or paused one is resumed first (kvm does the same)."""
        server = self._server(name, details=True)
        resume = RESUME_ACTIONS.get((server.get("status") or "").upper())
        if resume and not server.get("OS-EXT-STS:task_state"):
            proceed()
            getattr(self.service("compute"), resume)(server["id"])
            server = self._wait_status(server["id"], {"ACTIVE"}, "resuming it to stop it")
        self._act(name, "stop_server", done=("SHUTOFF",), server=server)

    @translated("reboot the VM")
    def reboot_vm(self, name: str) -> None:
        self._act(name, "reboot_server", "SOFT", verb="rebooted")

    @translated("suspend the VM")
    def suspend_vm(self, name: str) -> None:
        self._act(name, "suspend_server", done=("SUSPENDED", "PAUSED"), verb="suspended")

    @translated("resume the VM")
    def resume_vm(self, name: str) -> None:
        self._act(name, "resume_server", done=("ACTIVE",), verb="resumed", by_status=RESUME_ACTIONS)

    @translated("delete the VM")
    def delete_vm(self, name: str) -> None:
        server = self._server(name)
        proceed()
        self._release_ips_of(server["id"], delete_ours=True, only_ours=True)
        proceed()  # abandoned meanwhile: the VM stays
        self.service("compute").delete_server(server["id"])
        with self._lock:
            if self._taken is not None:
                self._taken[1].discard(name)  # a VM of this name may be booted again (a replacement on its port)

    @translated("rename the VM")
    def rename_vm(self, old: str, new: str) -> VM:
        server = self._server(old)
        if self._servers_named(new):
            raise Conflict(f"a VM named '{new}' already exists on cloud '{self.name}'")
        self._nova("PUT", f"/servers/{server['id']}", json={"server": {"name": new}})
        return self.get_vm(new)

    def _wait_status(self, server_id: str, wanted: set[str], what: str) -> Any:
        def settled(server: dict[str, Any]) -> bool:
            status = (server.get("status") or "").upper()
            if status == "ERROR":
                fault = convert.fault_of(server)
                raise ProviderError(f"{server['name']} went to ERROR while {what}" + (f": {fault}" if fault else ""))
            return status in wanted

        try:
            return poll(lambda: self._server_by_id(server_id), settled, self.timeout())
        except PollTimeout as late:
            raise ProviderError(f"{late.last['name']} is still {late.last.get('status')} after {self.timeout():g} s "
                                f"of {what}") from None

    @translated("resize the VM")
    def resize_vm(self, name: str, flavor: str) -> VM:
        """Resize, wait for VERIFY_RESIZE, confirm, and return the VM in its new flavor."""
        server = self._server(name)
        target = self._flavor(flavor, prefix=False)  # resizing restarts the VM: only the exact flavor
        compute = self.service("compute")
        compute.resize_server(server["id"], target.id)
        resized = self._wait_status(server["id"], {"VERIFY_RESIZE", "ACTIVE", "SHUTOFF"}, "resizing")
        if (resized.get("status") or "").upper() == "VERIFY_RESIZE":
            compute.confirm_server_resize(server["id"])
            self._wait_status(server["id"], {"ACTIVE", "SHUTOFF"}, "confirming the resize")
        return self.get_vm(name)

    @translated("read the console")
    def console_log(self, name: str, lines: int = 0) -> str:
        server = self._server(name)
        output = self.service("compute").get_server_console_output(server["id"], length=lines or None)
        return str((output or {}).get("output") or "")

    # -- addresses ---------------------------------------------------------------------------------------------
    @translated("assign a public IP")
    def assign_public_ip(self, name: str) -> str:
        server = self._server(name, details=True)
        public, _ = convert.addresses(server)
        if public:
            return public[0]  # already reachable: assigning is idempotent
        return self._give_public_ip(server["id"], name)

    @translated("release public IPs")
    def release_public_ip(self, name: str) -> list[str]:
        server = self._server(name)
        proceed()
        released = self._release_ips_of(server["id"], delete_ours=True, only_ours=False)
        if not released:
            raise NotFound(f"VM '{name}' has no public IP on cloud '{self.name}'")
        return released

    # -- images, flavors, keys -----------------------------------------------------------------------------------
    @translated("list images")
    def list_images(self) -> list[Image]:
        images = [convert.to_image(i) for i in self.service("image").images()]
        self._image_names.update({i.id: i.name for i in images})
        self._images = images
        return images

    @translated("delete the image")
    def delete_image(self, name: str) -> None:
        """Delete the image called exactly ``name`` (or with that id): never one it merely starts."""
        image = self._one("image", name, self.list_images(), self.name)
        self.service("image").delete_image(image.id, ignore_missing=False)
        self._images = None

    @translated("list flavors")
    def list_flavors(self) -> list[Flavor]:
        flavors = [convert.to_flavor(f) for f in self.service("compute").flavors(details=True)]
        self._flavor_names.update({f.id: f.name for f in flavors})
        self._flavors = flavors
        return flavors

    @translated("list keys")
    def list_keys(self) -> list[Key]:
        return [convert.to_key(k) for k in self.service("compute").keypairs()]

    @translated("upload the key")
    def upload_key(self, name: str, public_key: str) -> Key:
        compute = self.service("compute")
        try:
            return convert.to_key(compute.create_keypair(name=name, public_key=public_key.strip()))
        except os_exc.ConflictException:
            raise Conflict(f"key '{name}' already exists on cloud '{self.name}'; delete it first or pick another "
                           "name") from None

    @translated("delete the key")
    def delete_key(self, name: str) -> None:
        self.service("compute").delete_keypair(name, ignore_missing=False)
        with self._lock:
            if self._keys is not None:
                self._keys.pop(name, None)
