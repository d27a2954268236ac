"""End-to-end HTTP scenario against a running classification server (``serve`` or any compatible one).

Sends real image files as ``multipart/form-data`` POSTs (field ``file`` for one image, ``files`` for several per
request) from ``concurrency`` client threads, after a warm-up, for a fixed ``count`` of requests or
``duration`` seconds, never past ``max_seconds``. Latency is measured client-side (decode, network,
server-side preprocessing, batching and inference all included), so it is what a caller sees.
"""

from __future__ import annotations

import mimetypes
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


def run_http(url: str, images: list[Path], *, concurrency: int = 4, images_per_request: int = 1,
             warmup: int = 5, count: int | None = None, duration: float | None = 10.0, max_seconds: float = 120.0,
             timeout: float = 30.0, endpoint: str = "/classify") -> dict[str, Any]:
    import httpx

    target = classify_url(url, endpoint)
    payloads = [(p.name, p.read_bytes(), mimetypes.guess_type(p.name)[0] or "application/octet-stream")
                for p in images]
    t_begin = time.perf_counter()
    deadline = t_begin + max_seconds

    def request(client: httpx.Client, i: int) -> tuple[float, int]:
        field = "file" if images_per_request == 1 else "files"
        files = [(field, payloads[(i + k) % len(payloads)]) for k in range(images_per_request)]
        left = max(0.1, deadline - time.perf_counter())
        t0 = time.perf_counter()
        resp = client.post(target, files=files, timeout=min(timeout, left))
        return time.perf_counter() - t0, resp.status_code

    with httpx.Client() as client:
        try:
            for i in range(warmup):
                _, code = request(client, i)
        except httpx.HTTPError as e:
            raise DistillError(f"cannot reach {target}: {type(e).__name__}: {e}") from None
        if warmup and code >= 400:
            raise DistillError(f"{target} answered HTTP {code} during warm-up (wrong URL or field name?)")

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
    )
    return out
