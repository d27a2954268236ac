"""Export's user-facing errors (all :class:`~distill.errors.DistillError`, so the CLI prints one line)."""

from __future__ import annotations

from distill.errors import DistillError


class ArtifactError(DistillError):
    """A missing, corrupt or incompatible artifact (ONNX file, TensorRT engine or its sidecar).

    ``serve`` catches this to say "invalid model" instead of crashing with a traceback.
    """


class ExportError(DistillError):
    """The export request cannot be satisfied (bad option combination, unsupported opset, ...)."""


class VerificationError(DistillError):
    """The exported artifact failed its fp32 parity check against PyTorch; nothing was written."""

    exit_code = 1


class InputError(DistillError):
    """A batch given to :meth:`export.runtime.Artifact.run` does not fit the artifact's input."""
