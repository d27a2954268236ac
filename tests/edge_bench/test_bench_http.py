"""HTTP end-to-end scenario against a tiny local multipart server (no serve import: nothing imports serve)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge_bench.httpbench import classify_url, run_http



class _Handler(BaseHTTPRequestHandler):
    seen: list[bytes] = []
    parts: list[int] = []  # file parts per request

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.path in ("/classify", "/v1/classify") and (b'name="file"' in body or b'name="files"' in body)
        _Handler.seen.append(body[:200])
        _Handler.parts.append(body.count(b'name="file"') + body.count(b'name="files"'))
        payload = json.dumps({"predictions": [{"label": "cat", "score": 0.9}],
                              "timing": {"preprocess_ms": 2.5, "inference_ms": 0.5}}).encode()
        self.send_response(200 if ok else 422)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *a):
        pass


@pytest.fixture()
def server_url():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_classify_url():
    assert classify_url("http://h:1") == "http://h:1/classify"
    assert classify_url("http://h:1/classify/") == "http://h:1/classify"


def test_http_scenario(server_url: str, real_jpegs: list[Path]):
    r = run_http(server_url, real_jpegs[:4], concurrency=2, warmup=2, count=12, max_seconds=20)
    assert r["ok"] == 12 and r["status_codes"] == {"200": 12} and r["p50_ms"] > 0 and r["requests_per_s"] > 0
    assert any(b'name="file"' in s for s in _Handler.seen)
    assert r["server_preprocess_ms"] == 2.5 and r["server_inference_ms"] == 0.5  # the server's own timing
    _Handler.parts.clear()
    rb = run_http(server_url, real_jpegs[:4], concurrency=1, images_per_request=3, warmup=1, count=3, max_seconds=20)
    assert rb["ok"] == 3 and _Handler.parts == [3] * 4  # warm-up + 3 requests, each with 3 file parts


def test_a_wrong_path_is_refused_by_the_fake_server(server_url: str, real_jpegs: list[Path]):
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="HTTP 422"):
        run_http(server_url + "/other", real_jpegs[:1], warmup=1, count=1, max_seconds=5, endpoint="/other")


def test_http_command_writes_report(server_url: str, cifar_small_dir: Path, tmp_path: Path, bench_cli):
    res = bench_cli.invoke("http", "--url", server_url, "--images", str(cifar_small_dir / "cat"), "--count", "6",
                 "--concurrency", "2", "--warmup", "1", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "results.json").read_text())
    assert rep["results"][0]["scenario"] == "HTTP" and rep["results"][0]["ok"] == 6


def test_http_unreachable_is_a_clean_error(tmp_path: Path, real_jpegs: list[Path]):
    from distill.errors import DistillError

    with pytest.raises(DistillError, match="cannot reach"):
        run_http("http://127.0.0.1:9", real_jpegs[:1], warmup=1, count=1, max_seconds=5, timeout=2)
