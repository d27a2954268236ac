"""Device selection shared by teacher passes: ``auto`` = CUDA, then Apple MPS, then CPU."""

from __future__ import annotations

import torch

from ..errors import DependencyError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise DependencyError(f"unknown device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DependencyError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    return dev
