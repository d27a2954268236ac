"""edge_bench: which model, backend and precision meets my latency budget on my device, and at what accuracy?

``distill bench`` / ``python -m edge_bench``; see :mod:`edge_bench.cli` for the commands.
"""

from __future__ import annotations

from ._version import SCHEMA_VERSION, __version__

__all__ = ["SCHEMA_VERSION", "__version__"]
