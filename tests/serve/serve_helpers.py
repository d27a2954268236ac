"""Helpers shared by the serving tests (imported as a plain module: tests/serve is on sys.path)."""

from __future__ import annotations

import asyncio
import io
import queue
import re
import subprocess
import threading
import time
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def jpeg_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()


def png_bytes(img: Any, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def multipart(data: bytes, name: str = "a.jpg", ctype: str = "image/jpeg",
              boundary: str = "xBOUNDARYx") -> tuple[bytes, str]:
    """A hand-built one-file multipart body (field ``file``) and its Content-Type header, for raw-socket tests."""
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def wait_ready(client: Any, timeout: float = 10.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError("server not ready in time")


class GatedArtifact:
    """Wraps an artifact; its inference call ``method`` (``run``: the classify batcher and warm-up; ``run_raw``:
    a v2 batch) sets ``entered`` and blocks until ``gate`` is set, to hold a batch in flight or delay warm-up.

    ``once=True``: only the first call after each :meth:`arm` is held, the rest of the traffic flows (``released``
    says the held call went on). ``calls`` lists the batch size of every gated-method call."""

    def __init__(self, art: Any, method: str = "run", once: bool = False, timeout: float = 30.0) -> None:
        assert method in ("run", "run_raw"), method
        self._art, self._method, self._once, self._timeout = art, method, once, timeout
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []
        self.armed = False
        self.released = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._art, name)

    def arm(self) -> None:
        """Hold the next call (``once`` mode)."""
        self.entered.clear()
        self.gate.clear()
        self.armed = True

    def _hold(self, batch: np.ndarray, method: str) -> None:
        if method != self._method:
            return
        self.calls.append(int(batch.shape[0]))
        if self._once and not self.armed:
            return
        self.armed = False
        self.entered.set()
        assert self.gate.wait(timeout=self._timeout), "gate never opened"
        self.released = True

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._hold(batch, "run")
        return self._art.run(batch)

    def run_raw(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self._hold(batch, "run_raw")
        return self._art.run_raw(batch)


class Gate:
    """A run function for a bare :class:`MicroBatcher` that blocks until ``gate`` is set (see GatedArtifact)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.fn = fn
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(timeout=20), "gate never opened"
        self.calls.append(int(x.shape[0]))
        return self.fn(x)


async def until(cond: Callable[[], bool], what: str = "condition", timeout: float = 20.0) -> None:
    """Poll ``cond`` on the event loop until it holds (a state to reach, not a time to wait); fail after ``timeout``."""
    t_end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t_end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


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


def start_on_port_zero(cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int, list[str]]:
    """Start the server on port 0 (the kernel picks a free port: no pick-then-bind race with other processes) and
    read the port it really bound from uvicorn's start-up line. Output is collected by a thread (``lines``)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines: list[str] = []
    found: "queue.Queue[int | None]" = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                found.put(int(m.group(1)))
        found.put(None)  # the process ended

    threading.Thread(target=pump, daemon=True).start()
    try:
        port = found.get(timeout=120)
    except queue.Empty:
        proc.kill()
        pytest.fail("server did not start within 120 s: " + "".join(lines))
    if port is None:
        pytest.fail("server exited: " + "".join(lines))
    return proc, port, lines


def wait_process_ready(base: str, proc: subprocess.Popen, lines: list[str], tries: int) -> None:
    """Poll /health/ready (every 0.1 s, ``tries`` times) until 200; fail at once if the server exits."""
    for _ in range(tries):
        try:
            with urllib.request.urlopen(base + "/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if proc.poll() is not None:
                pytest.fail("server exited: " + "".join(lines))
            time.sleep(0.1)


def metric_value(text: str, name: str) -> float:
    """The value of one sample (``name`` is a regex for its name and labels) in a Prometheus text scrape."""
    m = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def worker_that_exits(config_kwargs: dict, channel: Any) -> None:
    """A `serve.workers.Supervisor` target that fails to boot (spawned: it must live in an importable module)."""
    raise SystemExit(3)
