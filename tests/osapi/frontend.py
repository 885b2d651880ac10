"""HTTP front end of the local OpenStack API server: one request handler
for every service (routing by path prefix, latency and fault injection,
token check, Nova microversions, error bodies) on a threading HTTP server.
The control object around it is server.FakeOpenStack.

Standard library only (http.server.ThreadingHTTPServer + json).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import compute, identity, image, network
from .core import ApiError, Request, Response, nova_error, reason, request_id, service_error
from .state import State

if TYPE_CHECKING:
    from .server import FakeOpenStack

_SERVICES = [
    ("/identity", "identity", identity.router),
    ("/compute", "compute", compute.router),
    ("/image", "image", image.router),
    ("/networking", "network", network.router),
]


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


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "osapi-fake/1.0"
    sys_version = ""
    server: "FakeHTTPServer"

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
        # Logged before the answer goes out: a client that has its answer finds the request in the
        # log (logged after, a loaded machine could run the client's check first).
        fake._log(req, resp.status, started)
        self._send(req, resp)

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


class FakeHTTPServer(ThreadingHTTPServer):
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
