"""/docs works offline (assets served by the app, no CDN) and is metered by its path; /v1/model shows a teacher's
preprocessing as JSON, also for artifacts exported before the fix."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("swagger_ui_bundle", reason="the [serve] extra is not installed")


def test_docs_page_and_assets_come_from_the_app(client) -> None:
    html = client.get("/docs").text
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    assert "/docs/assets/swagger-ui-bundle.js" in html and "/docs/assets/swagger-ui.css" in html
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript") and len(js.content) > 100_000
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/docs/assets/index.html").status_code == 404  # only the files the page needs
    assert client.get("/docs/assets/..%2F__init__.py").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/v1/classify" in schema["paths"] and "/docs" not in schema["paths"]


def test_docs_requests_are_labelled_by_route(client) -> None:
    client.get("/docs")
    client.get("/openapi.json")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'route="/docs"' in text and 'route="/openapi.json"' in text
    assert 'route="unmatched"' in text  # a real 404 probe still is


def test_teacher_preprocess_is_json_not_a_repr() -> None:
    from export.pipeline import _teacher_identity
    from serve.state import _structured

    spec = {"size": 112, "resize_size": 128, "mean": [0.5, 0.5, 0.5]}
    entry = _teacher_identity({"kind": "distill", "name": "resnet18", "preprocess": spec})
    assert entry["preprocess"] == spec  # the export side keeps it structured
    legacy = {"kind": "timm", "preprocess": str(spec), "name": "{not a literal"}
    assert _structured(legacy) == {"kind": "timm", "preprocess": spec, "name": "{not a literal"}
    assert _structured(None) is None


def test_every_route_of_the_app_is_in_the_serve_readme(make_app) -> None:
    """serve/README.md's endpoint tables list every (method, path) of the app's OpenAPI schema, plus /docs and
    /openapi.json (``/v1/labels`` was missing)."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "serve" / "README.md").read_text()
    cells = [ln.split("|")[1] for ln in readme.splitlines() if ln.startswith("| `")]
    routes = [(m.upper(), path) for path, ops in make_app().openapi()["paths"].items() for m in ops]
    routes += [("GET", "/docs"), ("GET", "/openapi.json")]
    # the v2 per-model routes are one compact row (`GET /v2/models/{m}[/versions/{v}]`, `.../ready`, `.../config`)
    assert "`GET /v2/models/{m}[/versions/{v}]`" in readme and "`POST /v2/models/{m}[/versions/{v}]/infer`" in readme
    routes = [(m, path) for m, path in routes if not path.startswith("/v2/models/")]
    assert ("GET", "/v1/labels") in routes and len(routes) > 8
    missing = [f"{m} {path}" for m, path in routes
               if not any(m in cell and (f"`{m} {path}`" in cell or f"`{path}`" in cell) for cell in cells)]
    assert missing == [], f"not in serve/README.md: {missing}"
