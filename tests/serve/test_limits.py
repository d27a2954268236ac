"""Every refusal reaches the client, on a real uvicorn server (loopback socket, in-process, port 0): a body over
the limit gets its 413 with an async httpx client and a raw socket still sending; a truncated 12 MP JPEG, a
header claiming a huge canvas and a 12 MP PNG get their 4xx and the server stays ready."""

from __future__ import annotations

import asyncio
import io
import socket
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from PIL import Image

from serve_helpers import multipart

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

LIMIT = 1_000_000


@pytest.fixture(scope="module")
def server(make_app) -> Iterator[str]:
    """The app on a real uvicorn server in a thread, bound to port 0 (no free-port race)."""
    app = make_app(max_request_bytes=LIMIT, max_upload_bytes=LIMIT, max_pixels=20_000_000, warmup=0)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on")
    srv = uvicorn.Server(config)
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    started = threading.Event()
    for _ in range(2000):
        if srv.started:
            started.set()
            break
        started.wait(0.01)
    assert srv.started, "uvicorn did not start"
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(30)


BIG = 24 * LIMIT  # 24 MB: far over the limit, sent while the server has already answered


def test_async_httpx_gets_the_413_for_a_body_over_the_limit(server):
    body, ctype = multipart(b"\xff" * BIG)

    async def main() -> Any:
        async with httpx.AsyncClient(timeout=30) as c:
            return await c.post(server + "/v1/classify", content=body, headers={"content-type": ctype})

    r = asyncio.run(main())
    assert r.status_code == 413 and "exceeds the limit" in r.json()["detail"]


def test_async_httpx_gets_the_413_for_a_chunked_body_growing_past_the_limit(server):
    async def chunks():
        head, _ = multipart(b"")
        yield head[:200]
        for _ in range(24):
            yield b"\xff" * LIMIT

    async def main() -> Any:
        async with httpx.AsyncClient(timeout=30) as c:
            return await c.post(server + "/v1/classify", content=chunks(),
                                headers={"content-type": "multipart/form-data; boundary=xBOUNDARYx"})

    r = asyncio.run(main())
    assert r.status_code == 413


def test_a_raw_socket_still_sending_reads_the_413(server):
    host, port = server.removeprefix("http://").split(":")
    body, ctype = multipart(b"\xff" * BIG)
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(head + body)  # all of it, as a naive client does, before reading anything
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = s.recv(65536)
            assert chunk, f"connection closed before the answer: {answer!r}"
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def phone_photo(clothing_small_dir: Path) -> Image.Image:
    with Image.open(sorted(clothing_small_dir.rglob("*.jpg"))[0]) as im:
        return im.convert("RGB").resize((4032, 3024))


def test_bad_large_images_get_a_4xx_and_the_server_stays_ready(make_app, phone_photo, png_claiming):
    from fastapi.testclient import TestClient

    jpeg = _jpeg(phone_photo)
    png = io.BytesIO()
    phone_photo.save(png, "PNG", compress_level=1)
    app = make_app(max_upload_bytes=64 * 1024 * 1024, max_request_bytes=64 * 1024 * 1024, max_pixels=10_000_000,
                   warmup=0)
    with TestClient(app) as c:
        post = lambda data, ct: c.post("/v1/classify", files={"file": ("x", data, ct)})  # noqa: E731
        r = post(png_claiming(100_000, 100_000), "image/png")
        assert r.status_code == 413 and "too large" in r.json()["detail"]
        r = post(png.getvalue(), "image/png")  # 12 MP over the 10 MP limit: refused on the header, no DCT scaling
        assert r.status_code == 413 and "12192768 pixels" in r.json()["detail"]
        r = post(jpeg, "image/jpeg")
        assert r.status_code == 413  # the same limit holds for a JPEG whatever its decode scale
        assert c.get("/health/ready").status_code == 200
    app = make_app(max_upload_bytes=64 * 1024 * 1024, max_request_bytes=64 * 1024 * 1024, warmup=0)
    with TestClient(app) as c:
        r = c.post("/v1/classify", files={"file": ("x.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")})
        assert r.status_code == 400 and "decode" in r.json()["detail"]
        r = c.post("/v1/classify", files={"file": ("x.jpg", jpeg, "image/jpeg")})
        assert r.status_code == 200 and r.json()["timing"]["preprocess_ms"] > 0
        assert c.get("/health/ready").status_code == 200
