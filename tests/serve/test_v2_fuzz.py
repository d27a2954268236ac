"""schemathesis over the v2 routes only (single model and model repository): valid and invalid requests from the
app's own OpenAPI schema, and hypothesis-made binary bodies: never a 5xx, statuses and bodies as documented."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import wait_ready

schemathesis = pytest.importorskip("schemathesis")

MODEL = "cifar_resnet8"


def _fuzz(app, min_paths: set[str], examples: int) -> set[str]:
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

    schema = schemathesis.openapi.from_asgi("/openapi.json", app).include(path_regex="^/v2")
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))
    seen: set[str] = set()
    statuses: dict[str, set[int]] = {}

    @given(case=cases)
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def check(case):
        seen.add(case.operation.path)
        params = case.path_parameters or {}
        if "name" in params and len(seen) % 4:  # mostly the served model, so bodies reach the tensor checks
            params["name"] = MODEL
        # a readiness route answers 503 by design (documented in the schema: strict readiness, as Triton's, e.g. after a
        # fuzzed load left a model in error); status_code_conformance still holds it to the documented statuses
        ready_route = case.operation.path.endswith("/ready")
        response = case.call_and_validate(checks=[*([] if ready_route else [not_a_server_error]),
                                                  status_code_conformance, response_schema_conformance])
        statuses.setdefault(case.operation.path, set()).add(response.status_code)

    check()
    assert min_paths <= seen, sorted(seen)
    return statuses


def test_v2_routes_never_5xx(make_app) -> None:
    app = make_app(warmup=0, max_upload_bytes=100_000, max_request_bytes=400_000, max_images_per_request=4,
                   max_wait_ms=0)
    statuses = _fuzz(app, {"/v2/models/{name}/infer", "/v2/models/{name}", "/v2/health/ready"}, 300)
    assert 200 in statuses["/v2/models/{name}"] and 400 in statuses["/v2/models/{name}/infer"], statuses


def test_repository_routes_never_5xx(tiny_artifact: Path, tmp_path: Path) -> None:
    from export.triton import export_triton
    from serve.app import create_repository_app
    from serve.settings import ServeSettings

    export_triton(tiny_artifact, tmp_path / "repo", name=MODEL)
    app = create_repository_app(ServeSettings(model_repository=tmp_path / "repo", warmup=0, max_wait_ms=0,
                                              max_request_bytes=400_000, batch_sizing="fixed"))
    _fuzz(app, {"/v2/repository/index", "/v2/repository/models/{name}/load", "/v2/models/{name}/infer"}, 200)


@pytest.fixture(scope="module")
def v2_client(make_app):
    with TestClient(make_app(warmup=0, max_request_bytes=400_000, max_images_per_request=4),
                    raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


_INPUT = st.fixed_dictionaries({
    "name": st.sampled_from(["input", "image", "x"]),
    "shape": st.lists(st.integers(-2, 40), max_size=5),
    "datatype": st.sampled_from(["FP32", "UINT8", "BYTES", "FP16", "INT64", "??"]),
}, optional={"parameters": st.fixed_dictionaries({}, optional={
    "binary_data_size": st.one_of(st.integers(-5, 20_000), st.text(max_size=3), st.none())}),
    "data": st.one_of(st.lists(st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=4)),
                               max_size=50), st.text(max_size=5), st.none())})


@given(header=st.fixed_dictionaries({"inputs": st.lists(_INPUT, max_size=2)}, optional={
    "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["probs", "logits", "nope"])}, optional={
        "parameters": st.dictionaries(st.sampled_from(["classification", "binary_data"]),
                                      st.one_of(st.integers(-2, 20), st.booleans(), st.text(max_size=2)))}),
        max_size=3),
    "parameters": st.dictionaries(st.sampled_from(["binary_data_output"]), st.one_of(st.booleans(), st.integers()))}),
       tail=st.binary(max_size=13_000), declared=st.one_of(st.none(), st.integers(-3, 20_000)))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_random_binary_infer_bodies_never_5xx(v2_client, header, tail, declared) -> None:
    head = json.dumps(header).encode()
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(len(head) if declared is None else declared)}
    r = v2_client.post(f"/v2/models/{MODEL}/infer", content=head + tail, headers=headers)
    assert r.status_code in (200, 400, 413), (r.status_code, r.text)
    if r.status_code != 200:
        assert set(r.json()) == {"error"}
