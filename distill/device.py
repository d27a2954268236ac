"""Device selection, shared by teachers, training, evaluation and benchmarks: ``auto`` = CUDA, then MPS, then CPU."""

from __future__ import annotations

import torch

from .errors import ConfigError, DependencyError


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


#: CPU flags that matter for training speed, as /proc/cpuinfo names them (x86) or its Features line (arm64).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "bf16")


def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags (Linux /proc/cpuinfo; empty where it cannot be read)."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_model() -> str:
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith(("model name", "cpu model")):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_support(flags: frozenset[str] | None = None) -> str | None:
    """How this CPU runs bf16 natively: ``amx_bf16``, ``avx512_bf16``, ``arm_bf16``, or None (torch would
    emulate it, slower than fp32)."""
    flags = cpu_flags() if flags is None else flags
    for flag, name in (("amx_bf16", "amx_bf16"), ("avx512_bf16", "avx512_bf16"), ("bf16", "arm_bf16")):
        if flag in flags:
            return name
    return None


def cpu_isa(flags: frozenset[str] | None = None) -> list[str]:
    """The speed-relevant ISA flags present (recorded beside every throughput number)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in ISA_FLAGS if f in flags]
