"""User-facing errors: the CLI prints them as one line and exits non-zero (no traceback wall)."""

from __future__ import annotations


class DistillError(Exception):
    """Base class for errors caused by the user's input, not by a bug. ``exit_code`` is the CLI's exit status."""

    exit_code: int = 2


class ConfigError(DistillError):
    """Invalid configuration or command-line option."""


class DataError(DistillError):
    """Unusable dataset: missing directory, empty class, too few labels, class names not matching the teacher."""


class CheckpointError(DistillError):
    """Missing, corrupt or incompatible checkpoint."""


class ModelError(DistillError):
    """Unknown model name or weights that do not fit the model."""


class DependencyError(DistillError):
    """An optional dependency (TensorRT, a GPU) is not available; the message says how to get it."""
