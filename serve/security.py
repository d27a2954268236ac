"""Security for a shared cluster: optional bearer-token auth on every route but health and metrics, and CORS.

Request ids are :class:`serve.app.ServeMiddleware`'s job (a caller's valid ``X-Request-ID`` is kept and
returned on every response, 401s included, because auth runs inside it).
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

#: Never behind the token: probes and scrapers do not carry secrets.
OPEN_PREFIXES = ("/health/", "/v2/health/")
OPEN_PATHS = frozenset({"/metrics", "/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def token_ok(authorization: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class BearerAuthMiddleware:
    """401 + ``WWW-Authenticate: Bearer`` unless the request carries the token (CORS preflights pass: the CORS
    middleware outside answers them, and browsers never send credentials on a preflight)."""

    def __init__(self, app: ASGIApp, token: str, admin_token: str | None = None) -> None:
        self.app, self.tokens = app, [t for t in (token, admin_token) if t]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope.get("path", "")) or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        auth = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), "")
        if any(token_ok(auth, t) for t in self.tokens):  # the admin token opens everything the API token does
            await self.app(scope, receive, send)
            return
        reason = "missing bearer token" if not auth else "wrong bearer token"
        msg = f"{reason}: send Authorization: Bearer <token>"
        body = {"error": msg} if scope.get("path", "").startswith("/v2") else {"detail": msg, "errors": []}
        rid = scope.get("state", {}).get("request_id")
        if rid and "detail" in body:
            body["request_id"] = rid
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
            (b"www-authenticate", b'Bearer realm="distill-serve"')]})
        await send({"type": "http.response.body", "body": data})


def install_security(app, settings) -> None:  # type: ignore[no-untyped-def]
    """Add auth (when a token is set) inside, and CORS (when origins are set) outside, the app's middleware."""
    if settings.api_token:
        app.add_middleware(BearerAuthMiddleware, token=settings.api_token, admin_token=settings.admin_token)


def install_cors(app, settings) -> None:  # type: ignore[no-untyped-def]
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_credentials=settings.cors_allow_credentials, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-ID",
                                          "Inference-Header-Content-Length", "Content-Encoding"],
                           expose_headers=["X-Request-ID", "Inference-Header-Content-Length", "Retry-After"])
