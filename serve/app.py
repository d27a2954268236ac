"""The FastAPI app factory: ``create_app(settings) -> FastAPI``.

Lifespan: load the artifact through :func:`export.runtime.load_artifact` (unless one is passed in), start
the micro-batcher, warm up in the background and only then report ready; on shutdown report not-ready,
let in-flight requests finish (uvicorn waits for them, up to ``drain_timeout_s``) and drain the batcher.

Run it with ``distill serve --model ARTIFACT`` / ``python -m serve``, or with any ASGI server:
``uvicorn --factory serve.app:app_from_env`` (settings from ``DISTILL_SERVE_*``).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import os
import re
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from export.runtime import Artifact

from .batching import Arrival, MicroBatcher
from .decode import DecodePool
from .errors import ApiError, BodyTooLarge
from .metrics import CONTENT_TYPE_LATEST, ServeMetrics
from .routes import router
from .repository import Loader, ModelRepository, router as repository_router
from .schemas import ErrorResponse, Health
from .settings import ServeSettings
from .version import server_version
from .security import install_cors, install_security
from .state import ServeState
from . import v2
from .v2_models import SingleModelSet

log = logging.getLogger("serve")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:@/+=\-]{1,128}$")


class RequestIds:
    """Generated request ids: 32 hex digits, a random prefix per process and a counter, unique across workers and
    restarts. Not ``uuid4`` per request: its ``os.urandom`` call gives up the GIL on the event loop's thread, and under
    load the loop then waits for the decode threads to hand it back (py-spy, docs/results.md 18)."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._count = itertools.count()

    def __call__(self) -> str:
        pid = os.getpid()
        if self._pid != pid:  # a fresh process (a forked worker): a prefix of its own
            self._pid, self._prefix, self._count = pid, os.urandom(8).hex(), itertools.count()
        return f"{self._prefix}{next(self._count):016x}"


new_request_id = RequestIds()

API_DESCRIPTION = """
Image classification with a distilled student exported by `distill export` (ONNX via onnxruntime, or a
TensorRT engine). Concurrent requests share inference calls (dynamic micro-batching).

Every response carries an `X-Request-ID` header (the client's own, when it sends a valid one, is kept) and
error bodies repeat it as `request_id`. See `POST /v1/classify` for the upload format, the limits and the
all-or-nothing policy for multi-image requests.
"""


class ServeMiddleware:
    """Pure ASGI middleware: request id, body-size limit, per-route request metrics (cheap: no BaseHTTPMiddleware)
    and the batcher announcement of every POST.

    A request over the body limit is refused with 413 before its body is read (``Content-Length``) or as soon as
    it grows past the limit; the response is sent first, then what the client still sends is read and dropped
    (up to ``drain_bytes`` within ``drain_s``) before the connection is closed. Closing with an unread body makes
    the kernel reset the connection, and a client still sending (async httpx, for one) then gets a read error
    instead of the 413.

    A POST is announced to the batcher (``scope["state"]["arrival"]``, see :meth:`MicroBatcher.announce`) as soon
    as its headers are in, before its body is read: a batch already queued waits for an upload that is still
    arriving, so real overlapping uploads share an inference call. The route passes the arrival to ``submit``;
    whatever happens, the announcement ends with the request.
    """

    def __init__(self, app: ASGIApp, max_body: int, state: Optional[ServeState] = None,
                 metrics: Optional[ServeMetrics] = None, drain_bytes: int = 0, drain_s: float = 0.0) -> None:
        """``state`` (the single-model app) gives the metrics and the batcher to announce to; the repository app,
        whose models each batch on their own, passes ``metrics`` alone."""
        self.app = app
        self.state = state
        self.metrics = metrics if metrics is not None else state.metrics  # type: ignore[union-attr]
        self.max_body = max_body
        self.drain_bytes = drain_bytes
        self.drain_s = drain_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        length = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _REQUEST_ID_OK.match(cand) else None
            elif k == b"content-length":
                length = v
        rid = rid or new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started_response = False
        received = 0
        limit = self.max_body
        arrival: Optional[Arrival] = None
        body_done = False  # the client has sent its whole body (or gone)
        refused = False  # over the body limit: drain before closing

        def route_path() -> str:
            return getattr(scope.get("route"), "path", None) or "unmatched"

        def count() -> None:
            self.metrics.requests.labels(route_path(), scope.get("method", ""), str(status)).inc()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", []), rid_header]
                count()  # before any byte reaches the client: a scrape after a response always includes it
            elif refused and not body_done and not message.get("more_body", False):
                await send({**message, "more_body": True})  # the whole answer is out; the connection stays open
                await self._drain(receive)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received, body_done, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    refused = True
                    raise BodyTooLarge(limit)
            else:
                body_done = True
            return message

        self.metrics.in_flight.inc()
        try:
            too_long = False
            if length is not None:
                try:
                    too_long = int(length) > limit
                except ValueError:
                    too_long = False
            if too_long:
                refused = True
                msg = f"request body of {int(length)} bytes exceeds the limit of {limit} bytes"
                body: dict[str, Any] = {"detail": msg, "request_id": rid, "errors": []}
                await _send_json(send_wrapper, 413, {"error": msg} if scope["path"].startswith("/v2") else body)
            else:
                batcher = self.state.batcher if self.state is not None else None
                if scope.get("method") == "POST" and batcher is not None and self.state.ready:
                    arrival = scope["state"]["arrival"] = batcher.announce()
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:  # noqa: BLE001 - a bug must become a 500 with the request id, not a dropped socket
            log.exception("unhandled error in request %s %s (request id %s)", scope.get("method"),
                          scope.get("path"), rid)
            if not started_response:
                await _send_json(send_wrapper, 500, {"detail": "internal server error", "request_id": rid,
                                                     "errors": []})
        finally:
            if arrival is not None:
                arrival.done()
            self.metrics.in_flight.dec()
            if not started_response:  # no answer went out (the client left first): counted as the 500 it became
                count()
            self.metrics.latency.labels(route_path()).observe(time.perf_counter() - started)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop the rest of a refused body: at most ``drain_bytes``, for at most ``drain_s``."""
        loop = asyncio.get_running_loop()
        t_end = loop.time() + self.drain_s
        dropped = 0
        while dropped <= self.drain_bytes:
            left = t_end - loop.time()
            if left <= 0:
                return
            try:
                message = await asyncio.wait_for(receive(), left)
            except asyncio.TimeoutError:
                return
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": data})


def _error(request: Request, status: int, detail: str, errors: list[Any] | None = None,
           headers: Optional[dict[str, str]] = None) -> JSONResponse:
    rid = getattr(request.state, "request_id", None)
    body = ErrorResponse(detail=detail, request_id=rid, errors=errors or [])
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(request, exc.status, exc.detail, exc.errors, exc.headers)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return _error(request, 413, f"request body exceeds the limit of {exc.limit} bytes",
                      headers={"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))


def create_app(settings: Optional[ServeSettings] = None, artifact: Optional[Artifact] = None) -> FastAPI:
    """Build the app. ``artifact``: an already loaded model (the CLI loads it first to fail fast)."""
    settings = settings or ServeSettings()
    if settings.model_repository is not None:  # v2 only, every model of a Triton model repository
        return create_repository_app(settings)
    state = ServeState(settings, artifact)
    v2_models = SingleModelSet(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(state.load)  # ArtifactError here aborts start-up
        art = state.artifact
        batcher = MicroBatcher(
            # embedding models batch the embeddings; each request applies the label set it started with
            art.embed if art.is_embedding else art.run,  # type: ignore[union-attr]
            max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, queue_size=settings.queue_size,
            adaptive_wait=settings.adaptive_wait, observer=state.metrics,
        )
        await batcher.start()
        state.batcher = batcher
        await v2_models.start()
        state.decoder = DecodePool(settings.decode_pool_threads(), settings.decode_queue)
        log.info("decode pool: %d threads; onnxruntime intra-op threads: %d", state.decoder.threads,
                 settings.ort_threads())

        async def warm() -> None:
            try:
                t0 = time.perf_counter()
                await anyio.to_thread.run_sync(state.warm_up)
                freeze_heap()
                state.set_status("ok")
                log.info("ready: warm-up took %.0f ms", (time.perf_counter() - t0) * 1e3)
            except Exception as e:  # noqa: BLE001 - reported by /health/ready, never ready
                log.exception("warm-up failed")
                state.set_status("failed", f"warm-up failed: {e}")

        if settings.warmup == 0:
            freeze_heap()
            state.set_status("ok")  # nothing to warm: ready as soon as the server accepts connections
            warm_task = asyncio.create_task(asyncio.sleep(0))
        else:
            warm_task = asyncio.create_task(warm())
        try:
            yield
        finally:
            state.set_status("draining")
            warm_task.cancel()
            await v2_models.close()
            await batcher.close(timeout=settings.drain_timeout_s)
            state.decoder.close()
            state.metrics.close()
            log.info("stopped: %d batches, %d images", batcher.batches, batcher.images)

    app = FastAPI(
        title="distill serve",
        description=API_DESCRIPTION,
        version=server_version(),
        lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,  # re-added by _install_docs as metered, offline routes
    )
    app.state.serve = state
    app.include_router(router)
    v2.install(app, v2_models)
    _install_common(app, settings, state=state)
    return app


def freeze_heap() -> None:
    """Move everything alive once the server is loaded (modules, the app, the model) out of the garbage
    collector's reach (``gc.freeze``): a full collection then scans only what requests allocate, instead of
    pausing every request in flight while it walks the whole heap (a 59 ms pause measured under load at
    concurrency 32, docs/results.md section 9)."""
    gc.collect()
    gc.freeze()


def _install_common(app: FastAPI, settings: ServeSettings, *, state: Optional[ServeState] = None,
                    metrics: Optional[ServeMetrics] = None) -> None:
    """What both apps share: the offline docs, error handlers, auth, the request middleware and CORS (outermost)."""
    _install_docs(app)
    _install_handlers(app)
    install_security(app, settings)
    app.add_middleware(ServeMiddleware, state=state, metrics=metrics, max_body=settings.max_request_bytes,
                       drain_bytes=settings.refused_drain_bytes, drain_s=settings.refused_drain_s)
    install_cors(app, settings)


#: Swagger UI files /docs needs, served from the swagger-ui-bundle package (no CDN: the page works offline).
_DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
                "favicon-32x32.png": "image/png"}


def _install_docs(app: FastAPI) -> None:
    """``/openapi.json`` and ``/docs`` as ordinary API routes, so metrics label them by path (not "unmatched"),
    with the Swagger UI assets served by the app itself when swagger-ui-bundle is installed (else the CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # pragma: no cover - the serve extra installs it
        swagger_ui_path = None

    @app.get("/openapi.json", include_in_schema=False)
    async def _openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        local = {} if swagger_ui_path is None else {
            "swagger_js_url": "/docs/assets/swagger-ui-bundle.js", "swagger_css_url": "/docs/assets/swagger-ui.css",
            "swagger_favicon_url": "/docs/assets/favicon-32x32.png"}
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs",
                                   oauth2_redirect_url="/docs/oauth2-redirect", **local)

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def _redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def _asset(name: str) -> FileResponse:
        if swagger_ui_path is None or name not in _DOCS_ASSETS:
            raise StarletteHTTPException(404, f"no docs asset {name!r}")
        return FileResponse(str(swagger_ui_path / name), media_type=_DOCS_ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory serve.app:app_from_env``: settings from ``DISTILL_SERVE_*``."""
    return create_app(ServeSettings())


def create_repository_app(settings: ServeSettings, loader: Optional[Loader] = None) -> FastAPI:
    """The v2-only app over ``settings.model_repository`` (``/health/*`` and ``/metrics`` as usual)."""
    assert settings.model_repository is not None
    metrics = ServeMetrics()
    repo = ModelRepository(settings.model_repository, settings, loader=loader, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(repo.start())  # serve /health/live at once; ready once all are warm
        task.add_done_callback(lambda t: metrics.ready.set(1 if repo.ready() else 0))
        try:
            yield
        finally:
            task.cancel()
            await repo.close()

    app = FastAPI(title="distill serve (model repository)", version=server_version(), lifespan=lifespan,
                  description="Every model of a Triton model repository over the Open Inference Protocol v2.",
                  docs_url=None, redoc_url=None, openapi_url=None)  # re-added offline by _install_docs
    app.state.serve_settings = settings
    app.state.repository = repo

    @app.get("/health/live", response_model=Health, tags=["health"])
    async def live() -> Health:
        return Health(status="ok" if repo.ready() else "loading", ready=repo.ready())

    @app.get("/health/ready", response_model=Health, tags=["health"],
             responses={503: {"model": Health, "description": "Not ready."}})
    async def ready(response: Response) -> Health:
        if not repo.ready():
            response.status_code = 503
            response.headers["Retry-After"] = str(settings.retry_after_s)
            return Health(status="failed" if repo.started else "loading", ready=False,
                          detail="; ".join(f"{k}: {v}" for k, v in repo._errors.items()) or None)
        return Health(status="ok", ready=True)

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus() -> Response:
        metrics.ready.set(1 if repo.ready() else 0)
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    v2.install(app, repo)
    app.include_router(repository_router)
    _install_common(app, settings, metrics=metrics)
    return app
