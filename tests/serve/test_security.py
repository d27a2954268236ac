"""Bearer-token auth on every route but health and metrics (missing, wrong, right token), CORS, request ids."""

from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient
from serve_helpers import wait_ready

TOKEN = "s3cret-token"
MODEL = "cifar_resnet8"


@pytest.fixture(scope="module")
def secured(make_app) -> Iterator[TestClient]:
    app = make_app(api_token=TOKEN, admin_token="adm1n", cors_origins=["https://ui.example.com"])
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


PROTECTED = [("POST", "/v1/classify"), ("GET", "/v1/model"), ("GET", "/v2"), (f"GET", f"/v2/models/{MODEL}"),
             ("POST", f"/v2/models/{MODEL}/infer"), ("GET", "/openapi.json"), ("GET", "/docs"),
             ("GET", "/v1/labels")]
OPEN = ["/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"]


@pytest.mark.parametrize("method,path", PROTECTED)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic czNjcmV0", f"bearer{TOKEN}"])
def test_missing_or_wrong_token_is_401(secured: TestClient, method: str, path: str, auth) -> None:
    headers = {"X-Request-ID": "req-7"} | ({"Authorization": auth} if auth else {})
    r = secured.request(method, path, headers=headers)
    assert r.status_code == 401, (path, auth, r.text)
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.headers["x-request-id"] == "req-7"  # the caller's id comes back, on a 401 too
    body = r.json()
    assert ("missing" if auth is None else "wrong") in (body.get("error") or body["detail"])
    if path.startswith("/v2"):
        assert set(body) == {"error"}  # the protocol's error body


def test_right_token_passes(secured: TestClient, jpeg: bytes) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert secured.get("/v1/model", headers=auth).status_code == 200
    assert secured.get(f"/v2/models/{MODEL}", headers=auth).status_code == 200
    r = secured.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")}, headers=auth)
    assert r.status_code == 200, r.text
    # the admin token opens everything the API token does
    assert secured.get("/v1/model", headers={"Authorization": "Bearer adm1n"}).status_code == 200


@pytest.mark.parametrize("path", OPEN)
def test_health_and_metrics_need_no_token(secured: TestClient, path: str) -> None:
    assert secured.get(path).status_code == 200


def test_request_id_propagates_to_v2_answers(secured: TestClient) -> None:
    r = secured.get(f"/v2/models/{MODEL}", headers={"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "abc.123"})
    assert r.headers["x-request-id"] == "abc.123"
    r = secured.get(f"/v2/models/{MODEL}", headers={"Authorization": f"Bearer {TOKEN}", "X-Request-ID": "bad id!"})
    assert r.headers["x-request-id"] != "bad id!" and len(r.headers["x-request-id"]) == 32  # invalid: a fresh one


def test_cors_preflight_and_allowed_origin(secured: TestClient) -> None:
    pre = secured.options(f"/v2/models/{MODEL}/infer", headers={
        "Origin": "https://ui.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200  # answered without a token: browsers send none on a preflight
    assert pre.headers["access-control-allow-origin"] == "https://ui.example.com"
    r = secured.get("/v1/model", headers={"Origin": "https://ui.example.com", "Authorization": f"Bearer {TOKEN}"})
    assert r.headers["access-control-allow-origin"] == "https://ui.example.com"
    assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
    other = secured.get("/v1/model", headers={"Origin": "https://evil.example", "Authorization": f"Bearer {TOKEN}"})
    assert "access-control-allow-origin" not in other.headers


def test_no_token_configured_means_open(client: TestClient) -> None:
    assert client.get("/v1/model").status_code == 200
    assert "access-control-allow-origin" not in client.get("/v1/model", headers={"Origin": "https://x"}).headers


def test_token_and_cors_from_environment(monkeypatch) -> None:
    from serve.settings import ServeSettings

    monkeypatch.setenv("DISTILL_SERVE_API_TOKEN", "t0k")
    monkeypatch.setenv("DISTILL_SERVE_CORS_ORIGINS", '["https://a.example"]')
    s = ServeSettings()
    assert s.api_token == "t0k" and s.cors_origins == ["https://a.example"]
