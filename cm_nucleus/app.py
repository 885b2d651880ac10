"""The HTTP API (FastAPI): routes, error handlers, and `serve` (uvicorn)."""

from __future__ import annotations

import asyncio
import html
import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from cm_nucleus import API_VERSION, computesets, images, nodes
from cm_nucleus.auth import Authenticator, basic
from cm_nucleus.core import ApiError, Service, bad, log
from cm_nucleus.fastpath import CachedListings, listing_key
from cm_nucleus.settings import Settings

BODY_SCHEMA = {"requestBody": {"content": {"application/json": {"schema": {
    "type": "object", "required": ["cluster"],
    "properties": {k: {"type": "string"} for k in ("cluster", "count", "computes", "walltime_mins", "allocation",
                                                   "reservation")}}}}}}


async def form_or_json(request: Request) -> dict[str, Any]:
    """The request body as a mapping: JSON, or form-encoded (the Cloudmesh client sent both)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=True))
        except (ValueError, UnicodeDecodeError):
            raise bad("Malformed form body") from None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"Malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    return body


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    service = service or Service(settings)
    auth = Authenticator(service)
    base = settings.base_path

    def lifespan(app: FastAPI):  # noqa: ARG001 - FastAPI's signature
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def run(_app):
            from cm_nucleus.reconcile import reconcile

            await run_in_threadpool(reconcile, service)
            thread = threading.Thread(target=_reconcile_loop, args=(service,), daemon=True, name="reconcile")
            thread.start()
            yield
            service.stopping.set()
            thread.join(timeout=10)
            service.hv.close()
        return run(app)

    app = FastAPI(title="Nucleus (cm reference service)", version=API_VERSION, lifespan=lifespan,
                  docs_url=f"{base}/docs/", openapi_url=f"{base}/openapi.json", redoc_url=None,
                  description="The Comet virtual-cluster API on a Slurm cluster and libvirt.")
    app.state.service = service
    app.state.auth = auth
    _handlers(app)

    async def user(request: Request) -> str:
        known = auth.known_token(request.headers)  # most requests: no thread, no query
        return known or await run_in_threadpool(auth.user, request.headers)

    listings: dict[tuple[Any, ...], bytes] = {}  # (store version, *listing_key) -> JSON; fastpath reads it too
    app.state.listings = listings
    # what the fast path and the routes each answered: an operator (and the tests) can see the cache work
    metrics = {"listings_from_fastpath": 0, "listings_from_cache": 0, "listings_built": 0}
    app.state.metrics = metrics
    building = asyncio.Lock()

    async def cached(key: tuple[Any, ...], build) -> Response:
        """A listing as JSON, rebuilt only after a computeset or node changed (50 clients polling cost one build)."""
        body = listings.get((service.store.version, *key))
        if body is None:
            async with building:  # the others wait for this build instead of each doing their own
                version = service.store.version
                body = listings.get((version, *key))
                if body is None:
                    body = json.dumps(await run_in_threadpool(build)).encode()
                    metrics["listings_built"] += 1
                    if len(listings) > 256:
                        listings.clear()
                    listings[(version, *key)] = body
                    return Response(body, media_type="application/json")
        metrics["listings_from_cache"] += 1
        return Response(body, media_type="application/json")

    top = APIRouter(prefix=base)
    v1 = APIRouter(prefix=f"{base}/{API_VERSION}", dependencies=[Depends(user)])

    @top.post("/rest-auth/login/")
    async def login(request: Request) -> dict[str, str]:
        body = await form_or_json(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise bad("username and password are required")
        return {"key": await run_in_threadpool(auth.login, username, password)}

    @top.post("/rest-auth/logout/")
    def logout(request: Request) -> dict[str, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "token" and token.strip():
            auth.logout(token.strip())
        return {"detail": "Successfully logged out."}

    @top.get("/metrics", response_class=PlainTextResponse)
    def metrics_text() -> str:
        """The counters in Prometheus' text format (no user data: counts only)."""
        lines = []
        for name, value in metrics.items():
            lines += [f"# TYPE nucleus_{name}_total counter", f"nucleus_{name}_total {value}"]
        return "\n".join(lines) + "\n"

    @top.get("/getkey")
    def getkey(request: Request) -> Any:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return Response(status_code=401, headers={"WWW-Authenticate": 'Basic realm="nucleus"'},
                            content=json.dumps({"detail": "getkey needs HTTP Basic credentials"}),
                            media_type="application/json")
        username = auth.check_password(*basic(value))
        if "application/json" not in request.headers.get("accept", ""):
            raise ApiError(415, "ask for Accept: application/json")
        return auth.api_key(username)

    @top.get("/console/{token}", response_class=HTMLResponse)
    def console(token: str, format: str = "html") -> Response:
        name, text = nodes.console_text(service, token)
        if format == "text":
            return PlainTextResponse(text)
        page = (f"<!doctype html><html><head><meta http-equiv='refresh' content='3'><title>console {html.escape(name)}"
                f"</title></head><body><h1>{html.escape(name)}</h1><pre>{html.escape(text)}</pre></body></html>")
        return HTMLResponse(page)

    @top.post("/v1/internal/computeset/{cs_id}/event", include_in_schema=False)
    async def job_event(cs_id: int, request: Request) -> Any:
        body = await form_or_json(request)
        return await run_in_threadpool(computesets.event, service, cs_id, request.headers.get("x-callback-secret", ""),
                                       str(body.get("event", "")), str(body.get("job", "")), str(body.get("nodes", "")))

    @v1.get("/user")
    def who(me: str = Depends(user)) -> dict[str, str]:
        return {"username": me, "email": service.user(me).email, "first_name": "", "last_name": ""}

    @v1.get("/project")
    def projects(me: str = Depends(user)) -> list[dict[str, str]]:
        return [{"name": a} for a in service.user(me).allocations]

    @v1.get("/cluster/")
    async def cluster_list(me: str = Depends(user)) -> Response:
        return await cached(listing_key(me, "clusters", ""), lambda: nodes.clusters(service, me))

    @v1.get("/cluster/{name}/")
    async def cluster_one(name: str, me: str = Depends(user)) -> Response:
        return await cached((me, "cluster", name), lambda: nodes.cluster(service, name, me))

    @v1.get("/cluster/{name}/frontend/")
    def frontend_info(name: str, me: str = Depends(user)) -> dict[str, Any]:
        return nodes.node_info(service, name, None, me)

    @v1.get("/cluster/{name}/frontend/console/")
    def frontend_console(name: str, me: str = Depends(user)) -> Response:
        return RedirectResponse(nodes.console_url(service, name, None, me), status_code=303)

    @v1.put("/cluster/{name}/frontend/attach_iso")
    def frontend_iso(name: str, iso_name: str | None = None, me: str = Depends(user)) -> Response:
        nodes.attach_iso(service, name, None, iso_name, me)
        return Response(status_code=204)

    @v1.put("/cluster/{name}/frontend/{action}")
    def frontend_power(name: str, action: str, me: str = Depends(user)) -> Response:
        nodes.power(service, name, None, action, me)
        return Response(status_code=204)

    @v1.get("/cluster/{name}/compute/{node}/")
    def compute_info(name: str, node: str, me: str = Depends(user)) -> dict[str, Any]:
        return nodes.node_info(service, name, node, me)

    @v1.get("/cluster/{name}/compute/{node}/console/")
    def compute_console(name: str, node: str, me: str = Depends(user)) -> Response:
        return RedirectResponse(nodes.console_url(service, name, node, me), status_code=303)

    @v1.put("/cluster/{name}/compute/{node}/attach_iso")
    def compute_iso(name: str, node: str, iso_name: str | None = None, me: str = Depends(user)) -> Response:
        nodes.attach_iso(service, name, node, iso_name, me)
        return Response(status_code=204)

    @v1.post("/cluster/{name}/compute/{node}/rename")
    async def compute_rename(name: str, node: str, request: Request, me: str = Depends(user)) -> Response:
        body = await form_or_json(request)
        await run_in_threadpool(nodes.rename, service, name, node, body.get("name"), me)
        return Response(status_code=204)

    @v1.put("/cluster/{name}/compute/{node}/{action}")
    def compute_power(name: str, node: str, action: str, me: str = Depends(user)) -> Response:
        nodes.power(service, name, node, action, me)
        return Response(status_code=204)

    @v1.get("/computeset/")
    async def computeset_list(request: Request, me: str = Depends(user)) -> Response:
        key = listing_key(me, "computesets", request.url.query)
        return await cached(key, lambda: computesets.listing(service, me, list(key[2])))

    @v1.post("/computeset/", status_code=201, openapi_extra=BODY_SCHEMA)
    async def computeset_create(request: Request, me: str = Depends(user)) -> Response:
        body = await form_or_json(request)
        created = await run_in_threadpool(computesets.create, service, me, body)
        location = f"{settings.public_url}/{API_VERSION}/computeset/{created['id']}/"
        return JSONResponse(created, status_code=201, headers={"Location": location})

    @v1.get("/computeset/{cs_id}/")
    def computeset_one(cs_id: int, me: str = Depends(user)) -> dict[str, Any]:
        return computesets.one(service, me, cs_id)

    @v1.put("/computeset/{cs_id}/{action}")
    def computeset_action(cs_id: int, action: str, me: str = Depends(user)) -> dict[str, Any]:
        if action not in ("shutdown", "poweroff", "reboot", "reset"):
            raise ApiError(404, f"unknown action '{action}'")
        return computesets.terminate(service, me, cs_id, action)

    @v1.get("/image")
    def image_list(me: str = Depends(user)) -> list[str]:
        return images.listing(service, me)

    async def upload(request: Request, me: str, private: bool) -> Response:
        md5 = request.headers.get("md5")
        if not md5:
            raise bad("md5 was not provided")
        try:
            form = await request.form()
        except Exception as exc:  # noqa: BLE001 - python-multipart raises several kinds
            raise bad(f"malformed upload: {exc}") from None
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise bad("the upload needs a multipart field 'file'")
        await run_in_threadpool(images.upload, service, file.filename or "", file.file, md5, me, private)
        return Response(status_code=204)

    @v1.post("/image")
    async def image_upload(request: Request, me: str = Depends(user)) -> Response:
        return await upload(request, me, private=False)

    @v1.post("/image/private")
    async def image_upload_private(request: Request, me: str = Depends(user)) -> Response:
        """cm's extension: the upload is the caller's private/<file> (a plain Nucleus answers 404: nothing stored)."""
        return await upload(request, me, private=True)

    @v1.delete("/image/{kind}/{name}")
    def image_delete(kind: str, name: str, me: str = Depends(user)) -> Response:
        images.delete(service, kind, name, me)
        return Response(status_code=204)

    @v1.get("/reservation/")
    def reservations() -> list[dict[str, str]]:
        from cm_nucleus.slurm import SlurmError

        try:
            return service.slurm.reservations()
        except SlurmError as exc:
            raise ApiError(502, f"Slurm: {exc}") from exc

    app.include_router(top)
    app.include_router(v1)
    return app


def _handlers(app: FastAPI) -> None:
    """Every refusal is the API's status with a one-line message; nothing escapes as a traceback."""

    def detail(status: int, message: str) -> JSONResponse:
        # Nucleus answered 400 with a plain JSON string and the others with {"detail": ...}.
        return JSONResponse(message if status == 400 else {"detail": message}, status_code=status)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return detail(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        if first.get("loc", ("",))[0] == "path":
            return detail(404, f"not found ({where}: {first.get('msg', 'invalid')})")
        return detail(400, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return detail(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
        return detail(500, "internal error; the service's log has the details")


def _reconcile_loop(service: Service) -> None:
    from cm_nucleus.reconcile import reconcile

    while not service.stopping.wait(service.settings.reconcile_interval):
        try:
            reconcile(service)
            service.store.forget_old_nonces(service.settings.timestamp_window)
        except Exception as exc:  # noqa: BLE001 - the safety net must keep running
            log.warning("reconcile failed: %s: %s", type(exc).__name__, exc)


def serve(config: str, port: int | None = None, log_level: str = "info") -> None:
    """Run the service in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    from cm_nucleus.settings import load

    settings = load(config, port)
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = CachedListings(create_app(settings))  # one process: see docs/comet.md, "One process"
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                server_header=False, backlog=2048)
