"""Export: fold the DHO heads and ship verified ONNX (fp32/fp16/int8) and TensorRT artifacts.

``export`` owns the artifact format (:mod:`export.metadata`) and the only loader of artifacts
(:mod:`export.runtime`). This package imports without torch; ``export_onnx`` imports it when called.
"""

from .errors import ArtifactError, ExportError, VerificationError
from .pipeline import ExportResult, export_onnx

__all__ = ["ArtifactError", "ExportError", "ExportResult", "VerificationError", "export_onnx"]
