"""HTTP front end of the local OpenStack API server and its control object.

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
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import compute, identity, image, network
from .core import ApiError, Request, Response, nova_error, reason, request_id, service_error
from .state import (DEMO_PASSWORD, DEMO_PROJECT, DEMO_USER, DOMAIN_NAME,
                    NEUTRON_QUOTA_DEFAULTS, NOVA_QUOTA_DEFAULTS, PROJECT_ID, REGION,
                    USER_ID, State)

_SERVICES = [
    ("/identity", "identity", identity.router),
    ("/compute", "compute", compute.router),
    ("/image", "image", image.router),
    ("/networking", "network", network.router),
]

DEFAULT_BOOT_FAULT = "No valid host was found. There are not enough hosts available."


def _parse_version(v: str) -> tuple[int, int]:
    major, _, minor = v.strip().partition(".")
    return int(major), int(minor or 0)


def _compute_microversion(req: Request, st: State) -> tuple[int, int]:
    raw = None
    hdr = req.header("OpenStack-API-Version")
    if hdr:
        for part in hdr.split(","):
            svc, _, ver = part.strip().partition(" ")
            if svc.lower() == "compute":
                raw = ver.strip()
    if raw is None:
        raw = req.header("X-OpenStack-Nova-API-Version")
    max_v = _parse_version(st.max_microversion)
    if raw is None or raw == "":
        return (2, 1)
    if raw.lower() == "latest":
        return max_v
    try:
        v = _parse_version(raw)
    except ValueError:
        raise nova_error(400, f"Invalid API version request string {raw}")
    if v < (2, 1) or v > max_v:
        raise ApiError(406, {"computeFault": {
            "code": 406, "message": f"Version {raw} is not supported by the API. Minimum is "
                                    f"2.1 and maximum is {st.max_microversion}."}})
    return v


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "osapi-fake/1.0"
    sys_version = ""
    server: "_HTTPServer"

    def setup(self) -> None:
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        with self.server.conn_lock:
            self.server.open_conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.open_conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.fake.state.verbose:
            sys.stderr.write("osapi: " + (format % args) + "\n")

    # every method goes through one path
    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _handle(self) -> None:
        fake = self.server.fake
        st = fake.state
        body = self._read_body()
        req = Request(self.command, self.path, self.headers, body, fake.base_url)
        req.state = st
        started = time.monotonic()

        # configured latency, then fault injection
        delay = fake._latency_for(req.method, req.path)
        if delay > 0:
            time.sleep(delay)
        fault = fake._take_fault(req.method, req.path)
        if fault is not None and fault["kind"] == "drop":
            fake._log(req, 0, started)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return

        service, router, sub = "", None, req.path
        for prefix, name, r in _SERVICES:
            if req.path == prefix or req.path.startswith(prefix + "/"):
                service, router, sub = name, r, req.path[len(prefix):] or "/"
                break
        if router is None and req.path in ("/", ""):
            service, router, sub = "identity", identity.router, "/"
        req.service, req.subpath = service, sub

        try:
            if fault is not None:
                raise fault["error"](service)
            resp = self._dispatch(req, router, sub)
        except ApiError as exc:
            resp = Response(exc.status, exc.body, exc.headers, exc.content_type)
        except Exception:  # pragma: no cover - a bug in the fake
            traceback.print_exc()
            resp = Response(500, service_error(service or "compute", 500,
                                               "Unexpected API Error. Please report this at "
                                               "http://bugs.launchpad.net/nova/ and attach the "
                                               "Nova API log if possible.").body)
        self._send(req, resp)
        fake._log(req, resp.status, started)

    def _dispatch(self, req: Request, router: Any, sub: str) -> Response:
        st = req.state
        if router is None:
            raise ApiError(404, "404 Not Found\n\nThe resource could not be found.\n\n   ",
                           content_type="text/plain; charset=UTF-8")
        fn, match, needs_auth, known = router.find(req.method, sub)
        if fn is None:
            if known:
                raise service_error(req.service, 405, "The method specified is not allowed "
                                                      "for this resource.")
            if req.service == "compute":
                raise nova_error(404, "The resource could not be found.")
            raise service_error(req.service, 404, "The resource could not be found.")
        if needs_auth:
            tok = identity.check_token(st, req.header("X-Auth-Token"))
            if tok is None:
                raise ApiError(401, {"error": {
                    "code": 401, "title": "Unauthorized",
                    "message": "The request you have made requires authentication."}},
                    {"WWW-Authenticate": f'Keystone uri="{req.base_url}/identity"'})
            req.token = tok
        if req.service == "compute":
            req.microversion = _compute_microversion(req, st)
        req.match = match
        return fn(req)  # type: ignore[no-any-return]

    def _send(self, req: Request, resp: Response) -> None:
        data = resp.encode()
        self.send_response(resp.status, reason(resp.status) if resp.status >= 400 else None)
        rid = request_id()
        headers = {"Content-Type": resp.content_type if data else "application/json",
                   "Content-Length": str(len(data)),
                   "x-openstack-request-id": rid}
        if req.service == "compute":
            mv = "%d.%d" % req.microversion
            headers.update({"OpenStack-API-Version": f"compute {mv}",
                            "X-OpenStack-Nova-API-Version": mv,
                            "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
                            "X-Compute-Request-Id": rid})
        headers.update(resp.headers)
        for k, v in headers.items():
            self.send_header(k, v)
        # Headers and body in one write: two small writes on a keep-alive
        # socket hit Nagle + delayed ACK (~40 ms per request).
        self._headers_buffer.append(b"\r\n")
        if req.method != "HEAD" and data:
            self._headers_buffer.append(data)
        self.flush_headers()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    fake: "FakeOpenStack"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_conns: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def close_open_connections(self) -> None:
        """Keep-alive connections would otherwise outlive stop()."""
        with self.conn_lock:
            conns = list(self.open_conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, BrokenPipeError, TimeoutError)):
            return
        super().handle_error(request, client_address)


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
        self._httpd = _HTTPServer((host, port), _Handler)
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
    def set_build_delay(self, seconds: float) -> None:
        with self.state.lock:
            self.state.build_delay = float(seconds)

    def set_create_delay(self, seconds: float) -> None:
        with self.state.lock:
            self.state.create_delay = float(seconds)

    def set_action_delay(self, seconds: float) -> None:
        """Time stop/start/reboot/suspend/resize/delete take to complete."""
        with self.state.lock:
            self.state.action_delay = float(seconds)

    def inject_latency(self, seconds: float, method: str | None = None,
                       path_regex: str | None = None) -> None:
        """Delay every matching request (all requests by default); 0 clears."""
        with self.state.lock:
            if seconds <= 0 and method is None and path_regex is None:
                self.state.latency = []
                return
            self.state.latency.append({"method": (method or "*").upper(),
                                       "rx": re.compile(path_regex or ""),
                                       "seconds": float(seconds)})

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
            self.state.faults.append({"kind": kind, "method": (method or "*").upper(),
                                      "rx": re.compile(path_regex), "count": int(count),
                                      "error": error})

    def _take_fault(self, method: str, path: str) -> dict[str, Any] | None:
        with self.state.lock:
            for f in self.state.faults:
                if f["count"] > 0 and f["method"] in ("*", method) and f["rx"].search(path):
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.state.faults.remove(f)
                    return f
        return None

    def _latency_for(self, method: str, path: str) -> float:
        with self.state.lock:
            return sum(x["seconds"] for x in self.state.latency
                       if x["method"] in ("*", method) and x["rx"].search(path))

    def fail_next_boot(self, message: str = DEFAULT_BOOT_FAULT, code: int = 500,
                       count: int = 1, details: str = "") -> None:
        """The next ``count`` servers created go BUILD -> ERROR with this fault."""
        with self.state.lock:
            for _ in range(count):
                self.state.boot_failures.append({"message": message, "code": code,
                                                 "details": details})

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

    def add_keypair_directly(self, name: str, public_key: str) -> None:
        from .state import ssh_fingerprint
        with self.state.lock:
            self.state.keypair_seq += 1
            self.state.keypairs[name] = {"name": name, "public_key": public_key,
                                         "fingerprint": ssh_fingerprint(public_key),
                                         "type": "ssh", "created_at": time.time(),
                                         "seq": self.state.keypair_seq}

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
