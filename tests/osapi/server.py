"""The control object of the local OpenStack API server, and how clients
find it.  The HTTP side is frontend.py.

    fake = start_server(port=0, build_delay=0.2)
    cfg = fake.clouds_yaml("fake")      # {"clouds": {"fake": {...}}}
    ...  openstack.connect(cloud="fake") with OS_CLIENT_CONFIG_FILE ...
    fake.stop()

Standard library only (http.server.ThreadingHTTPServer + json).
"""

from __future__ import annotations

import collections
import copy
import json
import re
import threading
import time
from typing import Any

from . import compute
from .core import ApiError, Request, reason, service_error
from .frontend import FakeHTTPServer, RequestHandler
from .state import (DEMO_PASSWORD, DEMO_PROJECT, DEMO_USER, DOMAIN_NAME,
                    NEUTRON_QUOTA_DEFAULTS, NOVA_QUOTA_DEFAULTS, PROJECT_ID, REGION,
                    USER_ID, State, ssh_fingerprint)

DEFAULT_BOOT_FAULT = "No valid host was found. There are not enough hosts available."


class FakeOpenStack:
    """A running fake cloud.  All setters are thread-safe and take effect at once."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, build_delay: float = 0.0,
                 create_delay: float = 0.0, action_delay: float = 0.0,
                 max_microversion: str = "2.79", verbose: bool = False) -> None:
        self.state = State()
        self.state.build_delay = float(build_delay)
        self.state.create_delay = float(create_delay)
        self.state.action_delay = float(action_delay)
        self.state.max_microversion = max_microversion
        self.state.verbose = verbose
        self._httpd = FakeHTTPServer((host, port), RequestHandler)
        self._httpd.fake = self
        self.host = host
        self.port = self._httpd.server_address[1]
        self._log_entries: collections.deque[tuple[str, str, int, float]] = \
            collections.deque(maxlen=20000)
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FakeOpenStack":
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"osapi-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_open_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenStack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The Keystone auth_url."""
        return f"{self.base_url}/identity/v3"

    auth_url = url

    # ------------------------------------------------------------ client config
    def cloud_entry(self) -> dict[str, Any]:
        return cloud_entry(self.url)

    def clouds_yaml(self, cloud_name: str = "fake") -> dict[str, Any]:
        """A whole clouds.yaml document: {"clouds": {cloud_name: {...}}}."""
        return clouds_yaml(cloud_name, self.url)

    def write_clouds_yaml(self, path: str, cloud_name: str = "fake") -> str:
        """Write clouds.yaml (JSON is valid YAML, so no PyYAML needed)."""
        with open(path, "w") as fh:
            json.dump(self.clouds_yaml(cloud_name), fh, indent=2)
        return path

    # ------------------------------------------------------------ timing knobs
    def _set_delay(self, which: str, seconds: float) -> None:
        with self.state.lock:
            setattr(self.state, which, float(seconds))

    def set_build_delay(self, seconds: float) -> None:
        """Time a new server stays in BUILD."""
        self._set_delay("build_delay", seconds)

    def set_create_delay(self, seconds: float) -> None:
        """Time POST /servers takes to answer."""
        self._set_delay("create_delay", seconds)

    def set_action_delay(self, seconds: float) -> None:
        """Time stop/start/reboot/suspend/resize/delete take to complete."""
        self._set_delay("action_delay", seconds)

    def inject_latency(self, seconds: float, method: str | None = None,
                       path_regex: str | None = None) -> None:
        """Delay every matching request (all requests by default); 0 clears."""
        with self.state.lock:
            if seconds <= 0 and method is None and path_regex is None:
                self.state.latency = []
                return
            self.state.latency.append(_rule(method, path_regex or "", seconds=float(seconds)))

    # ------------------------------------------------------------ faults
    def inject_fault(self, method: str | None, path_regex: str, status: int = 500,
                     count: int = 1, message: str | None = None,
                     headers: dict[str, str] | None = None) -> None:
        """The next ``count`` requests matching method (None/'*' = any) and
        ``re.search(path_regex, path)`` fail with ``status`` and an error body
        in the shape of the service hit."""
        msg = message or reason(status)
        if status == 500 and message is None:
            msg = ("Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ "
                   "and attach the Nova API log if possible.\n<class 'oslo_db.exception."
                   "DBConnectionError'>")

        def make(service: str) -> ApiError:
            err = service_error(service or "compute", status, msg)
            if headers:
                err.headers.update(headers)
            return err

        self._add_fault("error", method, path_regex, count, make)

    def drop_connection(self, method: str | None, path_regex: str, count: int = 1) -> None:
        """Close the socket without answering the next ``count`` matching requests."""
        self._add_fault("drop", method, path_regex, count, None)

    def clear_faults(self) -> None:
        with self.state.lock:
            self.state.faults = []
            self.state.latency = []
            self.state.boot_failures = []

    def _add_fault(self, kind: str, method: str | None, path_regex: str, count: int,
                   error: Any) -> None:
        with self.state.lock:
            self.state.faults.append(_rule(method, path_regex, kind=kind, count=int(count),
                                           error=error))

    def _take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        with self.state.lock:
            for f in self.state.faults:
                if f["count"] > 0 and _applies(f, method, path):
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.state.faults.remove(f)
                    return f
        return None

    def _latency_for(self, method: str, path: str) -> float:
        with self.state.lock:
            return sum(x["seconds"] for x in self.state.latency if _applies(x, method, path))

    def fail_next_boot(self, message: str = DEFAULT_BOOT_FAULT, code: int = 500,
                       count: int = 1, details: str = "", name: str = "") -> None:
        """The next ``count`` servers created (named ``name``, if given) go BUILD -> ERROR with this fault."""
        with self.state.lock:
            for _ in range(count):
                self.state.boot_failures.append({"message": message, "code": code,
                                                 "details": details, "name": name})

    # ------------------------------------------------------------ quotas
    def set_quota(self, **limits: int) -> None:
        """Nova keys (instances, cores, ram, key_pairs, metadata_items,
        server_groups, server_group_members) and Neutron keys (floatingip,
        security_group, security_group_rule, port, network, subnet, router).
        -1 means unlimited."""
        with self.state.lock:
            for k, v in limits.items():
                if k in NOVA_QUOTA_DEFAULTS:
                    self.state.nova_quota[k] = int(v)
                elif k in NEUTRON_QUOTA_DEFAULTS:
                    self.state.neutron_quota[k] = int(v)
                elif k == "floating_ips":
                    self.state.neutron_quota["floatingip"] = int(v)
                elif k == "security_groups":
                    self.state.neutron_quota["security_group"] = int(v)
                else:
                    raise ValueError(f"unknown quota {k!r}")

    # ------------------------------------------------------------ state helpers
    def add_server_directly(self, name: str, *, flavor: str = "m1.small",
                            image: str | None = None, network: str = "private",
                            status: str = "ACTIVE", key_name: str | None = None,
                            metadata: dict[str, str] | None = None,
                            created: float | None = None) -> str:
        """A server the cloud has but this client never created; returns its id.
        ``flavor``/``image``/``network`` take names or ids; ``status`` one of
        ACTIVE, SHUTOFF, SUSPENDED, PAUSED, ERROR."""
        s = compute.add_server(self.state, name, flavor=flavor, image=image, network=network,
                               status=status, key_name=key_name, metadata=metadata,
                               created=created)
        return str(s["id"])

    def add_network_directly(self, name: str, cidr: str, first: str = "", last: str = "") -> str:
        """A private network of this project with one subnet (addresses handed out from ``first`` to
        ``last`` when given, as an operator's allocation pool); returns its id."""
        with self.state.lock:
            net = self.state.add_network(name, PROJECT_ID, time.time(), external=False)
            sub = self.state.add_subnet(net, f"{name}-subnet", cidr, time.time())
            pool = sub["allocation_pools"][0]
            pool.update({k: v for k, v in (("start", first), ("end", last)) if v})
            return str(net["id"])

    def fixed_addresses(self, server_id: str) -> dict[str, list[str]]:
        """{network name: the fixed addresses of the server's ports there}: what a guest learns by DHCP."""
        with self.state.lock:
            s = self.state.servers.get(server_id)
            if s is None:
                return {}
            return {net: [e["addr"] for e in entries if e["OS-EXT-IPS:type"] == "fixed"]
                    for net, entries in self.state.addresses(s).items()}

    def add_keypair_directly(self, name: str, public_key: str) -> None:
        with self.state.lock:
            self.state.add_keypair(name, public_key, ssh_fingerprint(public_key))

    def corrupt_next_upload(self, count: int = 1) -> None:
        """Store the next ``count`` Glance uploads with one byte changed (a disk or network fault)."""
        with self.state.lock:
            self.state.corrupt_uploads = count

    def expire_tokens(self) -> None:
        """Invalidate every issued token (clients must re-authenticate)."""
        with self.state.lock:
            self.state.tokens.clear()

    def reset(self) -> None:
        """Back to the seeded cloud (flavors, images, networks, default
        security group); drops servers, keypairs, floating IPs, faults and
        quota changes.  Tokens stay valid."""
        self.state.reset()

    def server(self, server_id: str) -> dict[str, Any] | None:
        """Internal record of a server (copy), including user_data, or None."""
        with self.state.lock:
            self.state.settle()
            s = self.state.servers.get(server_id)
            if s is None:
                return None
            out = {k: copy.deepcopy(v) for k, v in s.items() if k != "pending"}
            out["status"] = compute.status_of(s)
            return out

    def servers(self) -> list[dict[str, Any]]:
        with self.state.lock:
            ids = list(self.state.servers)
        return [x for x in (self.server(i) for i in ids) if x is not None]

    # ------------------------------------------------------------ request log
    def _log(self, req: Request, status: int, started: float) -> None:
        self._log_entries.append((req.method, req.path, status, time.monotonic() - started))

    @property
    def request_log(self) -> list[tuple[str, str, int, float]]:
        """(method, path, status, seconds) of every request; status 0 = dropped."""
        return list(self._log_entries)

    def request_count(self, method: str | None = None, path_regex: str | None = None) -> int:
        rx = re.compile(path_regex) if path_regex else None
        return sum(1 for m, p, _s, _t in list(self._log_entries)
                   if (method is None or m == method.upper()) and (rx is None or rx.search(p)))

    def clear_request_log(self) -> None:
        self._log_entries.clear()


def _rule(method: str | None, path_regex: str, **what: Any) -> dict[str, Any]:
    """A latency or fault rule for requests of ``method`` (None/'*' = any)
    whose path ``path_regex`` finds."""
    return {"method": (method or "*").upper(), "rx": re.compile(path_regex), **what}


def _applies(rule: dict[str, Any], method: str, path: str) -> bool:
    return rule["method"] in ("*", method) and bool(rule["rx"].search(path))


def cloud_entry(auth_url: str) -> dict[str, Any]:
    return {
        "auth": {
            "auth_url": auth_url,
            "username": DEMO_USER,
            "password": DEMO_PASSWORD,
            "project_name": DEMO_PROJECT,
            "user_domain_name": DOMAIN_NAME,
            "project_domain_name": DOMAIN_NAME,
        },
        "region_name": REGION,
        "interface": "public",
        "identity_api_version": 3,
    }


_LAST_STARTED: list[FakeOpenStack] = []


def clouds_yaml(cloud_name: str = "fake", auth_url: str | None = None) -> dict[str, Any]:
    """A clouds.yaml document {"clouds": {cloud_name: {...}}} for ``auth_url``
    (default: the most recently started server in this process)."""
    if auth_url is None:
        if not _LAST_STARTED:
            raise RuntimeError("no fake OpenStack started; pass auth_url")
        auth_url = _LAST_STARTED[-1].url
    return {"clouds": {cloud_name: cloud_entry(auth_url)}}


def start_server(port: int = 0, *, host: str = "127.0.0.1", build_delay: float = 0.0,
                 create_delay: float = 0.0, action_delay: float = 0.0,
                 max_microversion: str = "2.79", verbose: bool = False) -> FakeOpenStack:
    """Start the fake cloud in a background thread and return its handle."""
    fake = FakeOpenStack(host, port, build_delay=build_delay, create_delay=create_delay,
                         action_delay=action_delay, max_microversion=max_microversion,
                         verbose=verbose).start()
    _LAST_STARTED[:] = [fake]
    return fake


__all__ = ["FakeOpenStack", "start_server", "clouds_yaml", "cloud_entry", "DEMO_USER",
           "DEMO_PASSWORD", "DEMO_PROJECT", "PROJECT_ID", "USER_ID", "DEFAULT_BOOT_FAULT"]
