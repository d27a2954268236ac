"""The FastAPI app factory: ``create_app(settings) -> FastAPI``.

Lifespan: load the artifact through :func:`export.runtime.load_artifact` (unless one is passed in), start
the micro-batcher, warm up in the background and only then report ready; on shutdown report not-ready,
let in-flight requests finish (uvicorn waits for them, up to ``drain_timeout_s``) and drain the batcher.

Run it with ``distill serve --model ARTIFACT`` / ``python -m serve``, or with any ASGI server:
``uvicorn --factory serve.app:app_from_env`` (settings from ``DISTILL_SERVE_*``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from export.runtime import Artifact

from .batching import MicroBatcher
from .errors import ApiError, BodyTooLarge
from .metrics import ServeMetrics
from .routes import router
from .schemas import ErrorResponse
from .settings import ServeSettings
from .state import ServeState

log = logging.getLogger("serve")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:@/+=\-]{1,128}$")

API_DESCRIPTION = """
Image classification with a distilled student exported by `distill export` (ONNX via onnxruntime, or a
TensorRT engine). Concurrent requests share inference calls (dynamic micro-batching).

Every response carries an `X-Request-ID` header (the client's own, when it sends a valid one, is kept) and
error bodies repeat it as `request_id`. See `POST /v1/classify` for the upload format, the limits and the
all-or-nothing policy for multi-image requests.
"""


class ServeMiddleware:
    """Pure ASGI middleware: request id, body-size limit and per-route request metrics (cheap: no BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

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
        rid = rid or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500
        started_response = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        received = 0
        limit = self.max_body

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
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
                await _send_json(send_wrapper, 413, {"detail": f"request body of {int(length)} bytes exceeds the "
                                                     f"limit of {limit} bytes", "request_id": rid, "errors": []})
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:  # noqa: BLE001 - a bug must become a 500 with the request id, not a dropped socket
            log.exception("unhandled error in request %s %s (request id %s)", scope.get("method"),
                          scope.get("path"), rid)
            if not started_response:
                await _send_json(send_wrapper, 500, {"detail": "internal server error", "request_id": rid,
                                                     "errors": []})
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(path, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)


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
    state = ServeState(settings, artifact)

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

        async def warm() -> None:
            try:
                t0 = time.perf_counter()
                await anyio.to_thread.run_sync(state.warm_up)
                state.set_status("ok")
                log.info("ready: warm-up took %.0f ms", (time.perf_counter() - t0) * 1e3)
            except Exception as e:  # noqa: BLE001 - reported by /health/ready, never ready
                log.exception("warm-up failed")
                state.set_status("failed", f"warm-up failed: {e}")

        if settings.warmup == 0:
            state.set_status("ok")  # nothing to warm: ready as soon as the server accepts connections
            warm_task = asyncio.create_task(asyncio.sleep(0))
        else:
            warm_task = asyncio.create_task(warm())
        try:
            yield
        finally:
            state.set_status("draining")
            warm_task.cancel()
            await batcher.close(timeout=settings.drain_timeout_s)
            log.info("stopped: %d batches, %d images", batcher.batches, batcher.images)

    app = FastAPI(
        title="distill serve",
        description=API_DESCRIPTION,
        version=_version(),
        lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,  # re-added by _install_docs as metered, offline routes
    )
    app.state.serve = state
    app.include_router(router)
    _install_docs(app)
    _install_handlers(app)
    app.add_middleware(ServeMiddleware, metrics=state.metrics, max_body=settings.max_request_bytes)
    return app


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


def _version() -> str:
    try:
        from distill import __version__

        return __version__
    except Exception:  # noqa: BLE001
        return "0"
