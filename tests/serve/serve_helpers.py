"""Helpers shared by the serving tests (imported as a plain module: tests/serve is on sys.path)."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np


def jpeg_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def png_bytes(img: Any, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def wait_ready(client: Any, timeout: float = 10.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError("server not ready in time")


class GatedArtifact:
    """Wraps an artifact; ``run`` blocks until ``gate`` is set (to hold a batch in flight or delay warm-up)."""

    def __init__(self, art: Any) -> None:
        self._art = art
        self.gate = threading.Event()
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._art, name)

    def run(self, batch: np.ndarray) -> np.ndarray:
        assert self.gate.wait(timeout=20), "gate never opened"
        self.calls.append(int(batch.shape[0]))
        return self._art.run(batch)


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """Run the app's lifespan around an httpx.AsyncClient on the ASGI transport (real concurrency on one loop)."""
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
            for _ in range(500):
                if (await c.get("/health/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            yield c
