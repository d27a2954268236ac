"""Property tests: schemathesis against the app's own OpenAPI schema, hypothesis-generated uploads. Never a 5xx."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from serve_helpers import wait_ready

schemathesis = pytest.importorskip("schemathesis")

_FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def fuzz_app(make_app):
    # warmup=0: ready as soon as the lifespan has started, so a fresh lifespan never answers 503
    return make_app(warmup=0, max_upload_bytes=100_000, max_request_bytes=400_000, max_pixels=1_000_000,
                    max_images_per_request=4, max_wait_ms=0)


def test_openapi_contract_no_server_errors(fuzz_app):
    """Every operation of the app's own schema, valid and invalid inputs: no 5xx, statuses and bodies as documented."""
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    seen: set[str] = set()

    @given(case=cases)
    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        seen.add(case.operation.path)
        case.call_and_validate(checks=[not_a_server_error, status_code_conformance, response_schema_conformance])

    check()
    assert {"/v1/classify", "/classify", "/v1/model", "/health/ready"} <= seen


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app):
    with TestClient(fuzz_app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def _image_prefixed() -> st.SearchStrategy[bytes]:
    """Bytes that start like a real image (so decoders get past the magic number) and then go wrong."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buf, "PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buf, "JPEG")
    jpg = buf.getvalue()
    buf = io.BytesIO()
    Image.new("RGB", (16, 12)).save(buf, "GIF")
    gif = buf.getvalue()
    heads = st.sampled_from([png, jpg, gif, b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"BM", b"II*\x00", b"\xff\xd8\xff"])
    return st.builds(lambda h, cut, tail: h[: max(0, min(cut, len(h)))] + tail, heads,
                     st.integers(0, 400), st.binary(max_size=300))


@given(data=st.one_of(st.binary(max_size=2000), _image_prefixed()),
       ctype=st.sampled_from(["image/jpeg", "image/png", "application/octet-stream", "image/webp", ""]))
@_FUZZ
def test_random_upload_bytes_never_5xx(fuzz_client, data, ctype):
    r = fuzz_client.post("/v1/classify", files={"file": ("f", data, ctype)} if ctype else {"file": ("f", data)})
    assert r.status_code in (200, 400, 413), (r.status_code, r.text)
    assert r.headers.get("x-request-id")
