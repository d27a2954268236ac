"""The HTTP API on real JPEGs: responses, every 4xx path, image variants, request ids, metadata, metrics."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serve_helpers import png_bytes

from serve.schemas import ClassifyResponse


def _probs(resp_json: dict, i: int = 0) -> np.ndarray:
    preds = resp_json["results"][i]["predictions"]
    out = np.zeros(len(preds), np.float32)
    for p in preds:
        out[p["index"]] = p["score"]
    return out


def _classify(client, data: bytes, name: str = "x.png", ctype: str = "image/png", top_k: int = 10):
    return client.post(f"/v1/classify?top_k={top_k}", files={"file": (name, data, ctype)})


# -- happy paths ------------------------------------------------------------------------------------------
def test_real_jpegs_match_the_runtime(client, artifact, real_jpegs):
    for path in real_jpegs[:4]:
        r = client.post("/classify", files={"file": (path.name, path.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        body = r.json()
        want = artifact.top_k(artifact.classify([path]), 5)[0]
        got = body["results"][0]["predictions"]
        assert [p["index"] for p in got] == [p.index for p in want]
        assert [p["label"] for p in got] == [p.label for p in want]
        assert np.allclose([p["score"] for p in got], [p.score for p in want], atol=1e-6)
        assert body["top_k"] == 5 and body["results"][0]["filename"] == path.name
        assert body["model"]["name"] and len(body["model"]["version"]) == 12
        t = body["timing"]
        assert t["total_ms"] >= t["inference_ms"] >= 0 and t["queue_ms"] >= 0 and t["batch_size"] >= 1
        assert r.headers["x-request-id"] == body["request_id"]
        # the body is built by hand (hot path): it must be exactly what the documented response model gives
        assert ClassifyResponse.model_validate(body).model_dump(mode="json") == body
        assert r.headers["content-type"] == "application/json"


def test_several_images_in_order_under_both_field_names(client, artifact, real_jpegs):
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in real_jpegs[:2]]
    files.append(("file", (real_jpegs[2].name, real_jpegs[2].read_bytes(), "application/octet-stream")))
    r = client.post("/v1/classify", params={"top_k": 10}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["index"] for x in body["results"]] == [0, 1, 2]
    assert [x["filename"] for x in body["results"]] == [p.name for p in real_jpegs[:3]]
    ref = artifact.classify(real_jpegs[:3])
    for i in range(3):
        assert np.allclose(_probs(body, i), ref[i], atol=1e-6)


def test_top_k_from_form_field_and_default(client, jpeg):
    r = client.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")}, data={"top_k": "2"})
    assert r.status_code == 200 and len(r.json()["results"][0]["predictions"]) == 2
    r = client.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert len(r.json()["results"][0]["predictions"]) == 5


def test_request_id_is_honoured_or_generated(client, jpeg):
    r = client.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")}, headers={"X-Request-ID": "req-42"})
    assert r.headers["x-request-id"] == "req-42" and r.json()["request_id"] == "req-42"
    r = client.get("/health/live", headers={"X-Request-ID": "bad id with spaces" * 20})
    rid = r.headers["x-request-id"]
    assert rid and " " not in rid
    r2 = client.get("/health/live")
    assert r2.headers["x-request-id"] != rid


def test_generated_request_ids_are_unique_per_process_and_across_forks(monkeypatch):
    import os as os_mod

    from serve.app import RequestIds

    ids = RequestIds()
    first = [ids() for _ in range(1000)]
    assert len(set(first)) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in first)
    monkeypatch.setattr(os_mod, "getpid", lambda: -7)  # as a forked worker sees it: another process
    forked = [ids() for _ in range(1000)]
    assert len(set(forked)) == 1000 and not set(forked) & set(first)
    assert forked[0][:16] != first[0][:16]  # a prefix of its own, not the parent's with its counter reset


# -- image variants: each must classify exactly like the RGB image it shows ---------------------------------
@pytest.fixture(scope="module")
def rgb(real_jpegs) -> Image.Image:
    with Image.open(real_jpegs[5]) as im:
        return im.convert("RGB")


def _variants(rgb: Image.Image) -> dict[str, tuple[bytes, str, Image.Image]]:
    """name -> (encoded bytes, content type, the RGB image it should be seen as)."""
    out: dict[str, tuple[bytes, str, Image.Image]] = {}
    gray = rgb.convert("L")
    out["grayscale_png"] = (png_bytes(gray), "image/png", gray.convert("RGB"))
    rgba = rgb.convert("RGBA")
    out["rgba_opaque_png"] = (png_bytes(rgba), "image/png", rgb)
    half = rgba.copy()
    half.putalpha(128)
    expect_half = Image.alpha_composite(Image.new("RGBA", rgb.size, (255, 255, 255, 255)), half).convert("RGB")
    out["rgba_half_transparent_png"] = (png_bytes(half), "image/png", expect_half)
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    out["palette_png"] = (png_bytes(pal), "image/png", pal.convert("RGB"))
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, "TIFF")
    out["cmyk_tiff"] = (buf.getvalue(), "image/tiff", rgb.convert("CMYK").convert("RGB"))
    g16 = Image.fromarray(np.asarray(gray, dtype=np.uint16) * 257)  # full 16-bit range, same picture
    assert g16.mode.startswith("I;16")
    out["gray16_png"] = (png_bytes(g16), "image/png", gray.convert("RGB"))
    buf = io.BytesIO()
    rgb.save(buf, "WEBP", lossless=True)
    out["webp_lossless"] = (buf.getvalue(), "image/webp", rgb)
    return out


@pytest.mark.parametrize("variant", ["grayscale_png", "rgba_opaque_png", "rgba_half_transparent_png", "palette_png",
                                     "cmyk_tiff", "gray16_png", "webp_lossless"])
def test_image_variants_classify_like_their_rgb(client, rgb, variant):
    data, ctype, expect = _variants(rgb)[variant]
    got = _classify(client, data, f"{variant}.bin", ctype)
    ref = _classify(client, png_bytes(expect))
    assert got.status_code == 200, got.text
    assert np.allclose(_probs(got.json()), _probs(ref.json()), atol=1e-6), variant


def test_cmyk_jpeg_is_accepted_and_close_to_rgb(client, rgb):
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, "JPEG", quality=100)
    got = _classify(client, buf.getvalue(), "cmyk.jpg", "image/jpeg")
    assert got.status_code == 200, got.text
    ref = _classify(client, png_bytes(rgb))
    assert np.abs(_probs(got.json()) - _probs(ref.json())).max() < 0.05


def test_exif_rotated_jpeg_is_turned_upright(client, real_jpegs):
    with Image.open(real_jpegs[7]) as im:
        upright = im.convert("RGB").resize((48, 32))  # not square: rotation matters
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # the camera stored it turned
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display" undoes ROTATE_90 (which is CCW)
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif)
    data = buf.getvalue()
    # what the JPEG decodes to, turned upright by hand
    with Image.open(io.BytesIO(data)) as im:
        raw = im.convert("RGB")
    by_hand = raw.transpose(Image.Transpose.ROTATE_270)
    assert by_hand.size == upright.size
    got = _classify(client, data, "rotated.jpg", "image/jpeg")
    assert got.status_code == 200, got.text
    assert np.allclose(_probs(got.json()), _probs(_classify(client, png_bytes(by_hand)).json()), atol=1e-6)
    # and it is really different from ignoring the tag
    assert not np.allclose(_probs(got.json()), _probs(_classify(client, png_bytes(raw)).json()), atol=1e-4)


# -- bad input: a clear 4xx and the server keeps serving ---------------------------------------------------
def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims width*height pixels (a decompression bomb's signature)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _noise_png(w: int, h: int) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return png_bytes(Image.fromarray(arr))


BAD_CASES = {
    # name: (kwargs for client.post, expected status, text expected in detail)
    "json_body": (dict(json={"file": "x"}), 415, "multipart/form-data"),
    "no_body": (dict(), 415, "multipart/form-data"),
    "text_part": (dict(files={"file": ("a.txt", b"hello", "text/plain")}), 415, "content type"),
    "undecodable": (dict(files={"file": ("a.jpg", b"\xff\xd8\xff garbage", "image/jpeg")}), 400, "decode"),
    "empty_file": (dict(files={"file": ("a.jpg", b"", "image/jpeg")}), 400, "empty"),
    "bomb_header": (dict(files={"file": ("bomb.png", _bomb_png(), "image/png")}), 413, "pixels"),
    "too_many_pixels": (dict(files={"file": ("big.png", png_bytes(Image.new("L", (1200, 1000))), "image/png")}),
                        413, "pixels"),
    "file_too_large": (dict(files={"file": ("noise.png", _noise_png(300, 300), "image/png")}), 413, "larger than"),
    "too_many_images": (dict(files=[("files", (f"{i}.png", png_bytes(Image.new("RGB", (8, 8))), "image/png"))
                                    for i in range(5)]), 413, "too many images"),
    "no_file_part": (dict(files={"other": ("a.jpg", b"x", "image/jpeg")}), 422, "no image"),
    "file_field_not_a_file": (dict(data={"file": "just text"}, files={"x": ("x", b"", "image/png")}), 422,
                              "must be a file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gets_a_clear_4xx(client, jpeg, case):
    kwargs, status, text = BAD_CASES[case]
    r = client.post("/v1/classify", **kwargs)
    assert r.status_code == status, (case, r.status_code, r.text)
    body = r.json()
    assert text in str(body["detail"]).lower() or text in str(body).lower(), body
    assert body["request_id"] == r.headers["x-request-id"]
    ok = client.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert ok.status_code == 200  # still serving


def test_truncated_jpeg_is_400(client, jpeg):
    r = client.post("/v1/classify", files={"file": ("t.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")})
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("query", ["top_k=0", "top_k=11", "top_k=abc", "top_k=-3"])
def test_bad_top_k_is_422(client, jpeg, query):
    r = client.post(f"/v1/classify?{query}", files={"file": ("a.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 422, r.text
    assert "top_k" in r.text


@pytest.mark.parametrize("value", ["0", "99", "x"])
def test_bad_top_k_form_field_is_422(client, jpeg, value):
    r = client.post("/v1/classify", files={"file": ("a.jpg", jpeg, "image/jpeg")}, data={"top_k": value})
    assert r.status_code == 422, r.text


def test_request_body_over_limit_is_413_by_header_and_by_stream(client):
    big = b"x" * 1_100_000
    r = client.post("/v1/classify", content=big, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while receiving
        for _ in range(12):
            yield b"y" * 100_000

    r = client.post("/v1/classify", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413, r.text


def test_multi_image_policy_all_or_nothing(client, jpeg):
    """One bad image rejects the whole request with the first bad image's status; errors name every bad one."""
    files = [
        ("files", ("good.jpg", jpeg, "image/jpeg")),
        ("files", ("broken.jpg", b"not an image", "image/jpeg")),
        ("files", ("good2.jpg", jpeg, "image/jpeg")),
        ("files", ("notes.txt", b"hello", "text/plain")),
    ]
    r = client.post("/v1/classify", files=files)
    assert r.status_code == 400, r.text
    body = r.json()
    assert "results" not in body
    assert [(e["index"], e["filename"], e["status"]) for e in body["errors"]] == [(1, "broken.jpg", 400),
                                                                               (3, "notes.txt", 415)]
    assert "#1" in body["detail"] and "broken.jpg" in body["detail"]


# -- health, model, metrics, docs ------------------------------------------------------------------------
def test_health_model_metrics_docs(client, artifact):
    assert client.get("/health/live").json()["status"] == "ok"
    r = client.get("/health/ready")
    assert r.status_code == 200 and r.json()["ready"] is True
    info = client.get("/v1/model").json()
    assert info["classes"] == artifact.class_names and info["num_classes"] == len(artifact.class_names)
    assert info["providers"] == artifact.providers and info["precision"] == "fp32"
    assert info["input"]["shape"] == ["N", 3, 32, 32] and info["input"]["preprocess"]["size"] == 32
    assert info["verification"] and info["verification"].get("passed") is True
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    text = m.text
    for name in ("distill_serve_requests_total", "distill_serve_request_latency_seconds_bucket",
                 "distill_serve_batch_size_bucket", "distill_serve_queue_depth", "distill_serve_ready 1.0"):
        assert name in text, name
    assert 'route="/v1/classify"' in text and 'status="200"' in text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    desc = schema["paths"]["/v1/classify"]["post"]["description"]
    assert "all or nothing" in desc.lower()
