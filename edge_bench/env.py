"""The environment record stored with every result: hardware, library versions, thread settings, emulation."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from distill.isa import cpu_features, cpu_model, isa_record


def _pkg(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _nvidia_smi() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run([exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip().splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if not out:
        return {}
    name, driver, mem = [s.strip() for s in (out[0].split(",") + ["", "", ""])[:3]]
    return {"gpu": name, "driver": driver, "gpu_memory": mem, "gpu_count": len(out)}


def _torch_info() -> dict[str, Any]:
    """Full torch facts when torch is already loaded (a checkpoint is benchmarked); otherwise only its version,
    so an onnxruntime-only run does not import torch (which would add ~300 MB to the RSS it reports)."""
    if "torch" not in sys.modules:
        return {"torch": _pkg("torch"), "torch_loaded": False}
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "torch_threads": torch.get_num_threads(),
                            "torch_interop_threads": torch.get_num_interop_threads(),
                            "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _tensorrt_version() -> str | None:
    try:
        import tensorrt  # type: ignore[import-not-found]

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - a broken TensorRT install must not break the environment record
        return _pkg("tensorrt")


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def capture_environment(*, threads: int | None = None, emulation: dict[str, Any] | None = None,
                        jetson: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to judge whether two results are comparable."""
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, ort.get_available_providers()
    except ImportError:  # pragma: no cover
        ort_version, providers = None, []
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        physical, mem_gb = None, None
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    env: dict[str, Any] = {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        "cpu_arch": platform.machine(),
        "cpu_flags": list(cpu_features()),
        # the ISA features that decide which int8/bf16 kernels run (AVX2, AVX-512, VNNI, AMX; NEON, dotprod, i8mm, SVE)
        "cpu_isa": isa_record(),
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": physical,
        "cpu_affinity": affinity,
        "memory_gb": mem_gb,
        "load_average": load_average(),
        "gpu": None,
        "driver": None,
        "cuda": None,
        "onnxruntime": ort_version,
        "onnxruntime_providers": providers,
        "tensorrt": _tensorrt_version(),
        "openvino": _pkg("openvino"),
        "numpy": _pkg("numpy"),
        "distill_toolchain": _pkg("distill-toolchain"),
        "threads": {
            "requested_intra_op": threads,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        },
        "emulation": emulation,
        "jetson": jetson,
    }
    t = _torch_info()
    env["torch"] = t.pop("torch")
    env["cuda"] = t.pop("torch_cuda", None)
    env["threads"]["torch_intra_op"] = t.pop("torch_threads", None)
    env["threads"]["torch_inter_op"] = t.pop("torch_interop_threads", None)
    env["cuda_available"] = t.pop("cuda_available", None)
    env["torch_loaded"] = t.pop("torch_loaded", True)
    env["gpu"] = t.pop("gpu", None)
    env["cudnn"] = t.pop("cudnn", None)
    smi = _nvidia_smi()
    if smi:
        env["gpu"] = env["gpu"] or smi.get("gpu")
        env["driver"] = smi.get("driver")
        env["gpu_memory"] = smi.get("gpu_memory")
    return env
