"""End-to-end HTTP scenario against a running classification server (``serve`` or any compatible one).

Sends real photos (as they are, or upscaled to 12 MP at run time: :func:`edge_bench.loadtest.photo_sets`) as
``multipart/form-data`` POSTs (field ``file`` for one image, ``files`` for several per
request) from ``concurrency`` client threads, after a warm-up, for a fixed ``count`` of requests or
``duration`` seconds, never past ``max_seconds``. Latency is measured client-side (decode, network,
server-side preprocessing, batching and inference all included), so it is what a caller sees; where the server
reports its own ``timing`` (``distill serve`` does), the medians of its decode+preprocess and inference times are
reported apart.
"""

from __future__ import annotations

import json
import mimetypes
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from distill.errors import ConfigError, DistillError

from .stats import latency_summary


def classify_url(url: str, endpoint: str = "/classify") -> str:
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {url!r}")
    url = url.rstrip("/")
    return url if url.endswith(endpoint.rstrip("/")) else url + endpoint


Payload = tuple[str, bytes, str]  # filename, bytes, content type


def payloads_from(images: list[Path] | list[tuple[str, bytes]]) -> list[Payload]:
    """(filename, bytes, content type) for image files or (name, bytes) pairs."""
    out: list[Payload] = []
    for item in images:
        name, data = (item.name, item.read_bytes()) if isinstance(item, Path) else item
        out.append((name, data, mimetypes.guess_type(name)[0] or "application/octet-stream"))
    return out


def run_http(url: str, images: list[Path] | list[tuple[str, bytes]], *, concurrency: int = 4, images_per_request: int = 1,
             warmup: int = 5, count: int | None = None, duration: float | None = 10.0, max_seconds: float = 120.0,
             timeout: float = 30.0, endpoint: str = "/classify") -> dict[str, Any]:
    import httpx

    target = classify_url(url, endpoint)
    payloads = payloads_from(images)
    t_begin = time.perf_counter()
    deadline = t_begin + max_seconds

    server_timing: list[dict[str, Any]] = []

    def request(client: httpx.Client, i: int) -> tuple[float, int]:
        field = "file" if images_per_request == 1 else "files"
        files = [(field, payloads[(i + k) % len(payloads)]) for k in range(images_per_request)]
        left = max(0.1, deadline - time.perf_counter())
        t0 = time.perf_counter()
        resp = client.post(target, files=files, timeout=min(timeout, left))
        dt = time.perf_counter() - t0
        if resp.status_code == 200:
            try:
                t = json.loads(resp.content).get("timing")
            except (ValueError, AttributeError):
                t = None
            if isinstance(t, dict):
                server_timing.append(t)
        return dt, resp.status_code

    with httpx.Client() as client:
        try:
            for i in range(warmup):
                _, code = request(client, i)
        except httpx.HTTPError as e:
            raise DistillError(f"cannot reach {target}: {type(e).__name__}: {e}") from None
        if warmup and code >= 400:
            raise DistillError(f"{target} answered HTTP {code} during warm-up (wrong URL or field name?)")
    server_timing.clear()

    lock = threading.Lock()
    latencies: list[float] = []
    codes: dict[int, int] = {}
    errors: dict[str, int] = {}
    issued = [0]
    start = time.perf_counter()
    stop = min(deadline, start + duration) if (duration and not count) else deadline

    def worker() -> None:
        with httpx.Client() as client:
            while True:
                with lock:
                    if (count and issued[0] >= count) or time.perf_counter() >= stop:
                        return
                    i = issued[0]
                    issued[0] += 1
                try:
                    dt, code = request(client, i)
                except httpx.HTTPError as e:
                    with lock:
                        errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
                    continue
                with lock:
                    codes[code] = codes.get(code, 0) + 1
                    if code < 400:
                        latencies.append(dt)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.perf_counter()) + timeout)
    wall = time.perf_counter() - start
    out = latency_summary(latencies)
    ok = len(latencies)
    out.update(
        url=target, concurrency=concurrency, images_per_request=images_per_request, batch_size=images_per_request,
        requests=issued[0], ok=ok, status_codes={str(k): v for k, v in sorted(codes.items())}, errors=errors,
        duration_s=wall, requests_per_s=ok / wall if wall > 0 else None,
        throughput_ips=ok * images_per_request / wall if wall > 0 else None,
        truncated=bool(count and issued[0] < count) or any(t.is_alive() for t in threads),
        server_preprocess_ms=_median(server_timing, "preprocess_ms"),
        server_inference_ms=_median(server_timing, "inference_ms"),
    )
    return out


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return float(statistics.median(vals)) if vals else None
