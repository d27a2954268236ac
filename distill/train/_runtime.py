"""Device, mixed precision, seeding and RNG state: the plumbing the training loop should not spell out."""

from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..device import cpu_bf16_support, cpu_isa, cpu_model, pick_device  # noqa: F401 - pick_device re-exported
from ..errors import ConfigError


@dataclass
class Precision:
    """Autocast dtype (None = fp32) and whether a GradScaler is needed (fp16 only)."""

    dtype: torch.dtype | None
    device_type: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    @property
    def needs_scaler(self) -> bool:
        return self.dtype is torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def pick_precision(amp: str, device: torch.device, flags: frozenset[str] | None = None) -> Precision:
    """``auto``: bf16 autocast on CUDA GPUs that support it, fp16 (+GradScaler) on older ones, fp32 elsewhere.

    ``bf16`` also works on a CPU with native bf16 (AMX, AVX-512 BF16, ARM BF16: detected from the CPU flags);
    elsewhere it is a one-line error, since emulated bf16 is slower than fp32. ``auto`` stays fp32 on a CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return Precision(None, device.type)
    if device.type == "cpu" and amp == "bf16":
        from ..device import cpu_bf16_support, cpu_isa, cpu_model

        if cpu_bf16_support(flags) is None:
            isa = ", ".join(cpu_isa(flags)) or "flags unknown"
            raise ConfigError(f"amp=bf16 needs a CPU with native bf16 (AMX, AVX-512 BF16 or ARM BF16); this one "
                              f"({cpu_model()}: {isa}) would emulate it, slower than fp32: use --amp off")
        return Precision(torch.bfloat16, "cpu")
    if device.type != "cuda":
        raise ConfigError(f"amp={amp} needs a CUDA device (got {device.type}); on a CPU use amp=bf16 (with native "
                          f"bf16) or off")
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Precision(torch.bfloat16 if amp == "bf16" else torch.float16, device.type)


def seed_everything(seed: int, deterministic: bool = True, threads: int | None = None) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels where that is cheap."""
    if threads:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """All global RNG states as tensors/primitives, so the checkpoint loads with ``weights_only=True``."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def hardware_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "cpu_bf16": cpu_bf16_support(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


#: Dense peak TFLOP/s (bf16/fp16 tensor cores) for MFU; unknown GPUs report achieved TFLOP/s only.
_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in _PEAK_TFLOPS.items() if k in name), None)


def forward_flops(model: torch.nn.Module, example: torch.Tensor) -> float | None:
    """FLOPs of one forward pass on ``example`` (torch's flop counter); None if it cannot count."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        was_training = model.training
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example)
        model.train(was_training)
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - a diagnostic only
        return None
