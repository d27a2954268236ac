"""Device selection, shared by teachers, training, evaluation and benchmarks: ``auto`` = CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from .errors import ConfigError, DependencyError
from .isa import cpu_features, cpu_model  # noqa: F401 - cpu_model re-exported for the run record


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda > mps > cpu. An explicit device that is not there is a one-line error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DependencyError("device 'cuda' requested but no CUDA GPU is available (use --device auto or cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DependencyError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DependencyError("device 'mps' requested but MPS is not available")
    return dev




def cpu_bf16_support(flags: frozenset[str] | None = None) -> str | None:
    """How this CPU runs bf16 natively: ``amx_bf16``, ``avx512_bf16``, ``arm_bf16``, or None (torch would
    emulate it, slower than fp32)."""
    flags = frozenset(cpu_features()) if flags is None else flags
    for flag, name in (("amx_bf16", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("bf16", "arm_bf16")):
        if flag in flags:
            return name
    return None


def cpu_isa(flags: frozenset[str] | None = None) -> list[str]:
    """The ISA features present (:mod:`distill.isa`; recorded beside every throughput number)."""
    return list(cpu_features()) if flags is None else sorted(flags)
