"""HTTP serving of exported artifacts (torch-free): FastAPI app, dynamic micro-batching, Prometheus metrics.

``create_app(settings)`` builds the app; ``distill serve --model ARTIFACT`` / ``python -m serve`` runs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import ServeSettings

__all__ = ["create_app", "ServeSettings"]


def __getattr__(name: str) -> Any:  # lazy: `import serve` must not pull FastAPI in for `distill --help`
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServeSettings":
        from .settings import ServeSettings

        return ServeSettings
    raise AttributeError(name)
