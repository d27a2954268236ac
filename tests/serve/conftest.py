"""Fixtures for the serving tests: an app on the tiny artifact, real JPEG bytes, image variants."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
# tests/ is put on sys.path by pytest (rootdir conftest, no __init__.py) and tests/serve, tests/export would
# then shadow the real packages as namespace packages; the repo root makes the regular packages win.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
# serve_helpers.py (shared by the test modules) lives next to this file
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

fastapi = pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from serve_helpers import wait_ready  # noqa: E402


@pytest.fixture(scope="session")
def artifact(tiny_artifact: Path):
    from export.runtime import load_artifact

    return load_artifact(tiny_artifact)


@pytest.fixture(scope="session")
def make_app(tiny_artifact: Path, artifact) -> Callable[..., Any]:
    """``make_app(**settings)`` -> a FastAPI app serving the tiny artifact (loaded once per session)."""
    from serve.app import create_app
    from serve.settings import ServeSettings

    def _make(art: Any = None, **overrides: Any):
        overrides.setdefault("model", tiny_artifact)
        overrides.setdefault("warmup", 1)
        overrides.setdefault("batch_sizing", "fixed")  # deterministic batch limits; auto sizing has its own tests
        return create_app(ServeSettings(**overrides), artifact=art if art is not None else artifact)

    return _make


@pytest.fixture(scope="module")
def client(make_app) -> Iterator[TestClient]:
    """A ready client with small limits so every 4xx path is cheap to reach."""
    app = make_app(max_upload_bytes=200_000, max_request_bytes=1_000_000, max_pixels=1_000_000,
                   max_images_per_request=4, max_wait_ms=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        wait_ready(c)
        yield c


@pytest.fixture(scope="session")
def jpeg(real_jpegs: list[Path]) -> bytes:
    return real_jpegs[0].read_bytes()


