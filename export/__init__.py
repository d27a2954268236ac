"""Export: fold the DHO heads and ship verified ONNX (fp32/fp16/int8) and TensorRT artifacts.

``export`` owns the artifact format (:mod:`export.metadata`) and the only loader of artifacts
(:mod:`export.runtime`). Importing the package loads neither torch nor an exporter: ``export_onnx`` and
``ExportResult`` are resolved on first use (module ``__getattr__``), so ``import export.runtime`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ArtifactError, ExportError, VerificationError

if TYPE_CHECKING:
    from .pipeline import ExportResult, export_onnx

_LAZY = {"export_onnx": "pipeline", "ExportResult": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ArtifactError", "ExportError", "ExportResult", "VerificationError", "export_onnx"]
