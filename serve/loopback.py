"""Run an app on a real loopback port in a thread (the v2 tests and ``scripts/v2_parity.py``): uvicorn on a
socket bound to port 0 (the kernel picks a free port and we keep the bound socket: no pick-then-bind race)."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator



@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Run ``app`` (lifespan included) until the block ends; yields ``host:port``. Waits for startup on an event
    uvicorn sets (``server.started``) and for readiness through /v2/health/ready, never by sleeping and hoping."""
    import httpx  # the [bench]/[dev] extras; not needed to serve
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    host, port = sock.getsockname()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", loop="asyncio", http="h11")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # not the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"{host}:{port}"
    try:
        with httpx.Client(base_url=f"http://{url}", timeout=30) as c:
            # started is set after the lifespan startup completed and the socket listens
            for _ in range(3000):
                if server.started:
                    break
                thread.join(0.01)  # blocks on the thread, wakes at once if it died
                if not thread.is_alive():
                    raise RuntimeError("server thread died during startup")
            assert server.started, "uvicorn did not start"
            for _ in range(3000):  # warm-up runs in the background after startup
                if c.get("/v2/health/ready").status_code == 200:
                    break
                thread.join(0.01)
            else:
                raise AssertionError("server never became ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
