"""The v2 protocol at the byte level: every malformed request is a 4xx with ``{"error": ...}``, never a 5xx;
binary tensor data, BYTES encoding, compression, micro-batching of concurrent v2 requests."""

from __future__ import annotations

import asyncio
import gzip
import json
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from serve_helpers import GatedArtifact, running, wait_ready

from serve.v2 import deserialize_bytes, serialize_bytes

MODEL = "cifar_resnet8"
INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def v2(make_app) -> Iterator[TestClient]:
    app = make_app(max_upload_bytes=200_000, max_request_bytes=2_000_000, max_pixels=1_000_000,
                   max_images_per_request=4, max_wait_ms=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


def binary_body(header: dict[str, Any], *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                     "Content-Type": "application/octet-stream"}


def image_request(images: list[bytes], **extra: Any) -> tuple[bytes, dict[str, str]]:
    blob = serialize_bytes(images)
    return binary_body({"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                                    "parameters": {"binary_data_size": len(blob)}}], **extra}, blob)


def test_bytes_roundtrip() -> None:
    items = [b"", b"a", b"\x00" * 300]
    assert deserialize_bytes(serialize_bytes(items), "t") == items


def test_json_tensor_and_binary_response(v2: TestClient, artifact, jpeg: bytes) -> None:
    x = artifact.prepare([jpeg])
    body = {"id": "r1", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "data": x.tolist()}],  # nested lists are accepted as row-major
            "outputs": [{"name": "probs", "parameters": {"binary_data": True}}]}
    r = v2.post(INFER, json=body, headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "trace-42"
    n = int(r.headers["inference-header-content-length"])
    head = json.loads(r.content[:n])
    assert head["id"] == "r1" and head["model_version"] == "1"
    probs = np.frombuffer(r.content[n:], "<f4").reshape(head["outputs"][0]["shape"])
    np.testing.assert_allclose(probs, artifact.run(x), atol=1e-6)


def test_images_json_classification_scores_are_full_precision(v2: TestClient, artifact, jpeg: bytes) -> None:
    body, headers = image_request([jpeg], outputs=[{"name": "probs", "parameters": {"classification": 10}}])
    r = v2.post(INFER, content=body, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [1, 10]
    ref = artifact.top_k(artifact.classify([jpeg]), 10)[0]
    assert out["data"] == [f"{p.score!r}:{p.index}:{p.label}" for p in ref]


def test_gzip_request_body(v2: TestClient, jpeg: bytes) -> None:
    body, headers = image_request([jpeg])
    r = v2.post(INFER, content=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text


def _tensor(shape: list[int], dtype: str = "FP32", **kw: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": shape, "datatype": dtype, **kw}]}


BAD_JSON: list[tuple[str, Any, int, str]] = [
    ("not json", b"{nope", 400, "not valid JSON"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
    ("huge integer", _tensor([1, 3, 32, 32], data=[10 ** 400] * 3072), 400, "must be a (flat or nested) list"),
    ("no inputs", {"inputs": []}, 400, "invalid inference request"),
    ("inputs not a list", {"inputs": 3}, 400, "invalid inference request"),
    ("two inputs", {"inputs": [_tensor([1])["inputs"][0]] * 2}, 400, "exactly one input"),
    ("unknown input", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400, "unknown input"),
    ("wrong dtype", _tensor([1, 3, 32, 32], "INT64", data=[0] * 3072), 400, "datatype 'INT64'"),
    ("wrong shape", _tensor([1, 3, 32, 31], data=[0] * 2976), 400, "this model takes"),
    ("negative dim", _tensor([-1, 3, 32, 32], data=[0]), 400, "non-negative"),
    ("zero batch", _tensor([0, 3, 32, 32], data=[]), 400, "at least 1"),
    ("too many values", _tensor([1, 3, 32, 32], data=[0.0] * 3073), 400, "3073 values"),
    ("strings as floats", _tensor([1, 3, 32, 32], data=["a"] * 3072), 400, "must be a (flat or nested) list"),
    ("ragged", _tensor([1, 3, 32, 32], data=[[1, 2], [3]]), 400, "list"),
    ("no data", _tensor([1, 3, 32, 32]), 400, "neither data nor binary_data_size"),
    ("batch over limit", _tensor([5, 3, 32, 32], data=[0] * 5 * 3072), 413, "exceeds the limit of 4"),
    ("image not bytes", {"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [1]}]}, 400, "BYTES"),
    ("image text", {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]}, 400,
     "cannot decode image"),
    ("image shape", {"inputs": [{"name": "image", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}]}, 400,
     "expected [N] or [N, 1]"),
    ("unknown output", {**_tensor([1, 3, 32, 32], data=[0] * 3072), "outputs": [{"name": "nope"}]}, 400,
     "unknown output"),
    ("classification too big", {**_tensor([1, 3, 32, 32], data=[0] * 3072),
                                "outputs": [{"name": "probs", "parameters": {"classification": 11}}]}, 400, "0..10"),
    ("binary_data not bool", {**_tensor([1, 3, 32, 32], data=[0] * 3072),
                              "outputs": [{"name": "probs", "parameters": {"binary_data": "yes"}}]}, 400, "true or false"),
]


@pytest.mark.parametrize("what,body,status,msg", BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_malformed_json_requests_are_4xx_with_protocol_body(v2: TestClient, what, body, status, msg) -> None:
    r = v2.post(INFER, content=body if isinstance(body, bytes) else json.dumps(body).encode(),
                headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and msg in r.json()["error"], r.text


def test_non_finite_and_out_of_range_values(v2: TestClient) -> None:
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[0, 0, 0, 0] = np.nan
    body, headers = binary_body({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                             "parameters": {"binary_data_size": x.nbytes}}]}, x.tobytes())
    r = v2.post(INFER, content=body, headers=headers)
    assert r.status_code == 400 and "NaN" in r.json()["error"]


def test_malformed_binary_requests(v2: TestClient, jpeg: bytes) -> None:
    x = np.zeros((1, 3, 32, 32), np.float32).tobytes()
    hdr = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                       "parameters": {"binary_data_size": len(x)}}]}
    good, headers = binary_body(hdr, x)
    cases = [
        (good[:-4], headers, "runs past the end"),
        (good + b"xx", headers, "follow the tensors"),
        (good, {**headers, "Inference-Header-Content-Length": "abc"}, "must be an integer"),
        (good, {**headers, "Inference-Header-Content-Length": str(len(good) + 1)}, "outside 1.."),
        (binary_body({"inputs": [{**hdr["inputs"][0], "parameters": {"binary_data_size": len(x) - 4}}]}, x[:-4])[0],
         None, "needs 12288"),
        (binary_body({"inputs": [{**hdr["inputs"][0], "parameters": {"binary_data_size": -3}}]})[0], None,
         "non-negative integer"),
        (image_request([jpeg])[0][:-5], None, "runs past the end"),
        (gzip.compress(good)[:20], {**headers, "Content-Encoding": "gzip"}, "cannot decompress"),
        (good, {**headers, "Content-Encoding": "br"}, "unsupported Content-Encoding"),
    ]
    for body, hdrs, msg in cases:
        if hdrs is None:
            head_len = body.index(b"}]}") + 3
            hdrs = {"Inference-Header-Content-Length": str(head_len)}
        r = v2.post(INFER, content=body, headers=hdrs)
        assert r.status_code == 400, (msg, r.text)
        assert msg in r.json()["error"], (msg, r.text)


def test_truncated_bytes_element(v2: TestClient) -> None:
    blob = struct.pack("<I", 100) + b"abc"
    body, headers = binary_body({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                             "parameters": {"binary_data_size": len(blob)}}]}, blob)
    r = v2.post(INFER, content=body, headers=headers)
    assert r.status_code == 400 and "runs past the end of the tensor" in r.json()["error"]


def test_too_large_image_body_and_pixels(v2: TestClient) -> None:
    from PIL import Image
    import io

    body, headers = image_request([b"\xff" * 200_001])
    r = v2.post(INFER, content=body, headers=headers)
    assert r.status_code == 413 and "larger than 200000" in r.json()["error"]
    buf = io.BytesIO()
    Image.new("L", (2000, 1000)).save(buf, "PNG")  # 2 Mpx > max_pixels, but a small file
    body, headers = image_request([buf.getvalue()])
    r = v2.post(INFER, content=body, headers=headers)
    assert r.status_code == 413 and "too large" in r.json()["error"]
    r = v2.post(INFER, content=b"x" * 2_000_001, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]


def test_unknown_model_version_and_routes(v2: TestClient) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/{MODEL}/versions/2",
                 f"/v2/models/{MODEL}/versions/2/ready"):
        r = v2.get(path)
        assert r.status_code == 404 and "unknown" in r.json()["error"], path
    r = v2.post("/v2/models/nope/infer", json=_tensor([1, 3, 32, 32], data=[0] * 3072))
    assert r.status_code == 404
    assert v2.get("/v2/health/live").status_code == 200 and v2.get("/v2/health/ready").status_code == 200
    assert v2.get("/v2/repository/index").status_code in (404, 405)  # only with --model-repository


def test_concurrent_v2_requests_share_one_inference_call(make_app, artifact) -> None:
    """While one v2 batch is held in flight, four more queue up; they are answered by one batched call."""
    held = GatedArtifact(artifact, method="run_raw")  # a v2 batch calls run_raw
    app = make_app(art=held, max_batch=8, warmup=0)
    x = np.zeros((1, 3, 32, 32), np.float32)
    body, headers = binary_body({"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32",
                                             "parameters": {"binary_data_size": x.nbytes}}]}, x.tobytes())

    async def main() -> list[Any]:
        async with running(app) as c:
            first = asyncio.create_task(c.post(INFER, content=body, headers=headers))
            await asyncio.to_thread(held.entered.wait, 30)  # the first batch is in run_raw, behind the gate
            rest = [asyncio.create_task(c.post(INFER, content=body, headers=headers)) for _ in range(4)]
            batcher = app.state.v2_models.model.batcher
            while batcher.queue_depth < 4:  # a condition, not a timer: the thread is held, so nothing is popped
                await asyncio.sleep(0)
            held.gate.set()
            return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    assert all(r.status_code == 200 for r in results), [r.text for r in results]
    assert held.calls == [1, 4]
    assert [json.loads(r.content[:int(r.headers["inference-header-content-length"])])["parameters"]["batch_size"]
            if "inference-header-content-length" in r.headers else r.json()["parameters"]["batch_size"]
            for r in results] == [1, 4, 4, 4, 4]
