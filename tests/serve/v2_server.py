"""The v2 tests' real server on a real loopback port (see :mod:`serve.loopback`)."""

from serve.loopback import serve_in_thread

__all__ = ["serve_in_thread"]
