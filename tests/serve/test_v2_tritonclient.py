"""The Open Inference Protocol v2, driven by the real ``tritonclient.http`` client against our server on a real
loopback port: health, metadata, infer with JSON and binary tensors, BYTES images, the classification
extension, and results equal to ``/v1/classify`` on the same real photos."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402
from v2_server import serve_in_thread  # noqa: E402

MODEL = "cifar_resnet8"  # the tiny artifact's model name


@pytest.fixture(scope="module")
def server(make_app) -> Iterator[str]:
    with serve_in_thread(make_app(max_wait_ms=2, max_images_per_request=32)) as url:
        yield url


@pytest.fixture()
def client(server: str) -> Iterator[Any]:
    c = httpclient.InferenceServerClient(url=server, network_timeout=60, connection_timeout=60)
    try:
        yield c
    finally:
        c.close()


def v1_classify(url: str, images: list[bytes], k: int = 5) -> list[list[dict[str, Any]]]:
    files = [("files", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    r = httpx.post(f"http://{url}/v1/classify", params={"top_k": k}, files=files, timeout=60)
    assert r.status_code == 200, r.text
    return [res["predictions"] for res in r.json()["results"]]


def parse_classes(rows: np.ndarray) -> list[list[tuple[float, int, str]]]:
    out = []
    for row in rows:
        items = []
        for s in row:
            score, idx, label = (s.decode() if isinstance(s, bytes) else s).split(":", 2)
            items.append((float(score), int(idx), label))
        out.append(items)
    return out


def assert_same_as_v1(classes: list[list[tuple[float, int, str]]], v1: list[list[dict[str, Any]]]) -> None:
    assert len(classes) == len(v1)
    for mine, ref in zip(classes, v1):
        assert [c[2] for c in mine] == [p["label"] for p in ref]
        assert [c[1] for c in mine] == [p["index"] for p in ref]
        np.testing.assert_allclose([c[0] for c in mine], [p["score"] for p in ref], rtol=0, atol=1e-6)


def test_health_and_metadata(client: Any, artifact) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    ins = {i["name"]: i for i in meta["inputs"]}
    assert ins["input"]["datatype"] == "FP32" and ins["input"]["shape"] == [-1, 3, 32, 32]
    assert ins["image"]["datatype"] == "BYTES"
    outs = {o["name"]: o for o in meta["outputs"]}
    assert outs["probs"]["shape"] == [-1, 10] and outs["logits"]["datatype"] == "FP32"
    server = client.get_server_metadata()
    assert {"binary_tensor_data", "classification"} <= set(server["extensions"])
    cfg = client.get_model_config(MODEL)
    assert cfg["input"][0]["dims"] == [3, 32, 32]
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False])
def test_bytes_images_with_classification_equal_v1(client: Any, server: str, real_jpegs: list[Path],
                                                  binary: bool) -> None:
    images = [p.read_bytes() for p in real_jpegs[:8]]
    inp = httpclient.InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)  # images are not UTF-8 text
    outs = [httpclient.InferRequestedOutput("probs", binary_data=binary, class_count=5),
            httpclient.InferRequestedOutput("logits", binary_data=binary)]
    res = client.infer(MODEL, [inp], outputs=outs, request_id="abc-1")
    assert res.get_response()["model_version"] == "1" and res.get_response()["id"] == "abc-1"
    assert_same_as_v1(parse_classes(res.as_numpy("probs")), v1_classify(server, images))
    assert res.as_numpy("logits").shape == (8, 10)


@pytest.mark.parametrize("binary", [True, False])
def test_tensor_input_as_triton_takes_it(client: Any, server: str, artifact, real_jpegs: list[Path],
                                         binary: bool) -> None:
    images = [p.read_bytes() for p in real_jpegs[8:12]]
    x = artifact.prepare(images)  # the client preprocesses, exactly as it would for Triton
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    res = client.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("probs", binary_data=binary),
                                              httpclient.InferRequestedOutput("logits", binary_data=binary,
                                                                              class_count=3)])
    probs = res.as_numpy("probs")
    v1 = v1_classify(server, images, k=10)
    for row, ref in zip(probs, v1):
        np.testing.assert_allclose([row[p["index"]] for p in ref], [p["score"] for p in ref], rtol=0, atol=1e-6)
    raw = artifact.run_raw(x)["logits"]
    top3 = parse_classes(res.as_numpy("logits"))
    for row, mine in zip(raw, top3):
        assert [c[1] for c in mine] == list(np.argsort(-row, kind="stable")[:3])
        np.testing.assert_allclose([c[0] for c in mine], np.sort(row)[::-1][:3], atol=1e-5)


def test_all_outputs_by_default_and_version_route(client: Any, real_jpegs: list[Path]) -> None:
    inp = httpclient.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([real_jpegs[0].read_bytes()], dtype=np.object_))
    res = client.infer(MODEL, [inp], model_version="1")
    assert res.as_numpy("probs").shape == (1, 10) and res.as_numpy("logits").shape == (1, 10)
    np.testing.assert_allclose(res.as_numpy("probs").sum(), 1.0, atol=1e-5)


def test_uint8_artifact_takes_raw_pixels(tiny_checkpoint: Path, tmp_path_factory, make_app,
                                         real_jpegs: list[Path]) -> None:
    from export import export_onnx
    from export.runtime import load_artifact

    path = tmp_path_factory.mktemp("u8") / "u8.onnx"
    export_onnx(tiny_checkpoint, path, fold_heads=True, input_kind="uint8", max_verify_images=20)
    art = load_artifact(path)
    images = [p.read_bytes() for p in real_jpegs[:3]]
    with serve_in_thread(make_app(art=art, model=path)) as url:
        c = httpclient.InferenceServerClient(url=url)
        x = art.prepare(images)  # resized/cropped uint8 pixels; normalisation is in the graph
        assert x.dtype == np.uint8
        inp = httpclient.InferInput("input", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        res = c.infer(MODEL, [inp], outputs=[httpclient.InferRequestedOutput("probs", class_count=5)])
        assert_same_as_v1(parse_classes(res.as_numpy("probs")), v1_classify(url, images))
        c.close()


@pytest.mark.parametrize("shape,dtype,data,msg", [
    ([1, 3, 32], "FP32", np.zeros((1, 3, 32), np.float32), "this model takes"),
    ([1, 3, 32, 32], "FP64", np.zeros((1, 3, 32, 32), np.float64), "datatype 'FP64'"),
])
def test_malformed_tensors_are_4xx_through_the_client(client: Any, shape, dtype, data, msg) -> None:
    inp = httpclient.InferInput("input", shape, dtype)
    inp.set_data_from_numpy(data)
    with pytest.raises(InferenceServerException, match=msg) as e:
        client.infer(MODEL, [inp])
    assert e.value.status() == "400"


def test_unknown_model_and_version_are_404(client: Any) -> None:
    inp = httpclient.InferInput("input", [1, 3, 32, 32], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    for kw in ({"model_name": "nope"}, {"model_name": MODEL, "model_version": "7"}):
        with pytest.raises(InferenceServerException) as e:
            client.infer(inputs=[inp], **kw)
        assert e.value.status() == "404"
