"""The server's version string, for the OpenAPI page and the v2 server metadata."""
from __future__ import annotations


def server_version() -> str:
    """The project's version (``distill.__version__``); "0" where the package metadata is missing."""
    try:
        from distill import __version__

        return __version__
    except Exception:  # noqa: BLE001 - a version string must never stop the server
        return "0"
