"""Backends and the models they run, behind one small interface (:class:`Loaded`).

=============  ==================================  ===========================================================
backend        runs                                needs
=============  ==================================  ===========================================================
torch-cpu      a training checkpoint (two heads,   torch
               best recorded blend applied)
torch-cuda     the same on a GPU                   torch with CUDA and a GPU
ort-cpu        any ``.onnx`` artifact              onnxruntime (CPUExecutionProvider)
ort-cuda       any ``.onnx`` artifact              onnxruntime-gpu (CUDAExecutionProvider) and a GPU
ort-tensorrt   any ``.onnx`` artifact              onnxruntime-gpu built with TensorrtExecutionProvider
tensorrt       a TensorRT ``.engine`` artifact     tensorrt and a GPU (loaded by ``export.runtime``)
ov-cpu         an OpenVINO IR ``.xml`` artifact    openvino (``edge_bench/backend_openvino.py``)
=============  ==================================  ===========================================================

A backend that is not available here is not an error: it is reported as ``skipped`` with the reason.
Artifacts are always loaded through ``export.runtime.load_artifact`` (the one loader of artifacts).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from distill.blend import BlendChoice, blend_probs, choose_blend, default_blend, softmax
from distill.errors import ConfigError
from export.runtime import ENGINE_SUFFIXES

from .backend_openvino import IR_SUFFIXES, OPENVINO_BACKENDS, OV_DEVICE, openvino_unavailable_reason

BACKENDS = ("torch-cpu", "torch-cuda", "ort-cpu", "ort-cuda", "ort-tensorrt", "tensorrt", *OPENVINO_BACKENDS)
ORT_PROVIDER = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                "ort-tensorrt": "TensorrtExecutionProvider"}
FORMAT_BACKENDS = {"checkpoint": ("torch-cpu", "torch-cuda"), "onnx": ("ort-cpu", "ort-cuda", "ort-tensorrt"),
                   "engine": ("tensorrt",), "openvino": OPENVINO_BACKENDS}
TORCH_MODES = ("eager", "compile")
TORCH_DTYPES = ("fp32", "bf16", "fp16")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".th")


def parse_list(value: str | Sequence[str] | None, allowed: Sequence[str], what: str) -> list[str]:
    """Comma-separated (or repeated) names, each checked against ``allowed``; ``all`` means all of them."""
    if value is None:
        return list(allowed)
    items = [value] if isinstance(value, str) else list(value)
    names = [s.strip() for item in items for s in item.split(",") if s.strip()]
    if not names:
        raise ConfigError(f"no {what} given; choose from {', '.join(allowed)}")
    if names == ["all"]:
        return list(allowed)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise ConfigError(f"unknown {what} {', '.join(map(repr, bad))}; choose from {', '.join(allowed)}")
    return list(dict.fromkeys(names))


def model_format(path: Path) -> str:
    if path.suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix in ENGINE_SUFFIXES:
        return "engine"
    if path.suffix in IR_SUFFIXES:
        return "openvino"
    return "onnx"


def backend_unavailable_reason(backend: str) -> str | None:
    """None when ``backend`` can run here, else why not (one line)."""
    if backend in OPENVINO_BACKENDS:
        return openvino_unavailable_reason(backend)
    if backend.startswith("ort-"):
        import onnxruntime as ort

        prov = ORT_PROVIDER[backend]
        if prov not in ort.get_available_providers():
            build = "CPU build" if "CUDAExecutionProvider" not in ort.get_available_providers() else "this build"
            return f"{prov} not available in onnxruntime {ort.__version__} ({build})"
        return None
    try:
        import torch
    except ImportError:
        return "torch is not installed (pip install 'distill-toolchain[train]')"
    if backend == "torch-cpu":
        return None
    if not torch.cuda.is_available():
        cuda = torch.version.cuda
        why = "no CUDA device visible" if cuda else "CPU-only build"
        if backend == "torch-cuda":
            return f"torch {torch.__version__}: CUDA not available ({why})"
    if backend == "tensorrt":
        try:
            import tensorrt  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            return "TensorRT is not installed (pip install 'distill-toolchain[tensorrt]' on a CUDA machine)"
        if not torch.cuda.is_available():
            return "TensorRT needs a CUDA device; none is visible"
    return None


@dataclass
class Loaded:
    """A model ready to time: ``run`` is the timed call, ``prepare`` makes its input from image files."""

    label: str
    path: Path
    format: str
    backend: str
    variant: str
    precision: str
    class_names: list[str]
    prepare: Callable[[Sequence[Any]], Any]
    run: Callable[[Any], Any]
    to_probs: Callable[[Any], np.ndarray]
    synthetic: Callable[[int], Any]
    concat: Callable[[Sequence[Any]], Any]
    take: Callable[[Any, int, int], Any]
    info: dict[str, Any] = field(default_factory=dict)
    cleanup: Callable[[], None] = lambda: None

    def make_batch(self, pool: Any, b: int) -> Any:
        """A batch of ``b`` inputs cycled from ``pool`` (a prepared batch)."""
        n = _length(pool)
        reps = -(-b // n)
        full = self.concat([pool] * reps) if reps > 1 else pool
        return self.take(full, 0, b)


def _length(x: Any) -> int:
    return int(x.shape[0])


def file_size(path: Path) -> int:
    """Bytes on disk, external-data and sidecar files included."""
    total = path.stat().st_size
    for extra in (path.with_name(path.name + ".data"), path.with_suffix(".onnx.data"), path.with_name(path.name + ".json"),
                  *((path.with_suffix(".bin"),) if path.suffix in IR_SUFFIXES else ())):
        if extra.exists() and extra != path:
            total += extra.stat().st_size
    return total


def onnx_parameter_count(path: Path) -> int | None:
    """Elements in the graph's initializers (weights); None where onnx cannot read it."""
    try:
        import onnx
        from onnx import numpy_helper  # noqa: F401

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001
        return None
    total = 0
    for init in model.graph.initializer:
        n = 1
        for d in init.dims:
            n *= int(d)
        # QDQ graphs carry scales/zero points as scalars: count only tensors with more than one element.
        if n > 1:
            total += n
    return total


# -- artifacts ---------------------------------------------------------------------------------------------
def load_artifact_backend(label: str, path: Path, backend: str, threads: int | None) -> Loaded:
    from export.runtime import load_artifact

    fmt = model_format(path)
    providers = [ORT_PROVIDER[backend]] if backend in ORT_PROVIDER else None
    if backend in OV_DEVICE:
        providers = [OV_DEVICE[backend]]
    if backend == "ort-tensorrt":  # the TensorRT EP falls back to CUDA for unsupported nodes
        providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    t0 = time.perf_counter()
    art = load_artifact(path, providers=providers, intra_op_threads=threads)
    load_s = time.perf_counter() - t0
    if providers and art.providers and not art.providers[0].startswith(providers[0]):
        raise BackendFellBack(f"asked for {providers[0]} but onnxruntime runs {', '.join(art.providers)}")
    meta = art.meta
    info = {
        "kind": meta.kind,
        "model_name": meta.model_name,
        "input_kind": meta.input_kind,
        "input_size": meta.preprocess.size,
        "blend": meta.blend,
        "providers": art.providers,
        "size_bytes": file_size(path),
        "params": onnx_parameter_count(path) if fmt == "onnx" else None,
        "load_s": load_s,
        "teacher": meta.teacher,
    }
    dtype = art.input_dtype
    shape = art.input_shape

    def synthetic(n: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        if dtype == np.uint8:
            return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        return rng.standard_normal((n, *shape)).astype(np.float32)

    return Loaded(
        label=label, path=path, format=fmt, backend=backend, variant=meta.precision, precision=meta.precision,
        class_names=list(meta.class_names), prepare=art.prepare, run=art.run, to_probs=np.asarray,
        synthetic=synthetic, concat=np.concatenate, take=lambda x, a, b: np.ascontiguousarray(x[a:b]), info=info,
    )


class BackendFellBack(RuntimeError):
    """onnxruntime silently used another provider than the one asked for: report the row as skipped."""


# -- checkpoints through PyTorch ---------------------------------------------------------------------------
def checkpoint_blend(ckpt: dict[str, Any]) -> BlendChoice:
    """The checkpoint's best recorded blend (:func:`distill.blend.choose_blend`, the rule export folds with),
    else DHO's neutral default."""
    return choose_blend(ckpt.get("blend")) or default_blend("no blend recorded in the checkpoint: default "
                                                            "alpha=0.5, beta=1 (prob)")


def _heads_module(student: Any) -> Any:
    import torch
    from torch import nn

    class Heads(nn.Module):
        """The student's head logits in float32: (ce, kd) for a two-head student, else its one head."""

        def __init__(self) -> None:
            super().__init__()
            self.student = student

        def forward(self, x: torch.Tensor) -> Any:
            out = self.student(x)
            if "ce" in out and "kd" in out:
                return out["ce"].float(), out["kd"].float()
            return next(iter(out.values())).float()

    return Heads().eval()


def _to_probs(blend: BlendChoice) -> Callable[[Any], np.ndarray]:
    """Head logits (torch, any device) -> probabilities with the checkpoint's blend (what a user deploys)."""

    def to_probs(y: Any) -> np.ndarray:
        if isinstance(y, tuple):
            h_ce, h_kd = (t.cpu().numpy() for t in y)
            return blend_probs(h_ce, h_kd, blend.blend, blend.alpha, blend.beta)
        return softmax(y.cpu().numpy())

    return to_probs


def load_checkpoint_backend(label: str, path: Path, backend: str, mode: str, dtype_name: str,
                            threads: int | None) -> Loaded:
    import torch

    from distill.checkpoint import preprocess_from_checkpoint, student_from_checkpoint
    from distill.preprocess import preprocess_images

    device = torch.device("cuda" if backend == "torch-cuda" else "cpu")
    if threads:
        torch.set_num_threads(int(threads))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    student, ckpt = student_from_checkpoint(path)
    blend = checkpoint_blend(ckpt)
    module = _heads_module(student).to(device=device, dtype=dtype)
    params = sum(p.numel() for p in student.parameters())
    if mode == "compile":
        module = torch.compile(module)
    load_s = time.perf_counter() - t0
    spec = preprocess_from_checkpoint(ckpt)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def prepare(images: Sequence[Any]) -> torch.Tensor:
        x = preprocess_images(list(images), spec)
        return torch.from_numpy(x).to(device=device, dtype=dtype)

    @torch.inference_mode()
    def run(x: torch.Tensor) -> torch.Tensor:
        y = module(x)
        sync()
        return y

    def synthetic(n: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randn((n, 3, spec.size, spec.size), generator=g).to(device=device, dtype=dtype)

    info = {
        "kind": "two_head" if len(student.head_names) > 1 else "student",
        "model_name": ckpt["student"].get("arch") if isinstance(ckpt.get("student"), dict) else None,
        "input_kind": "float",
        "input_size": spec.size,
        "blend": blend.blend, "alpha": blend.alpha, "beta": blend.beta, "blend_reason": blend.why,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "size_bytes": path.stat().st_size,
        "params": params,
        "load_s": load_s,
        "note": "torch.compile: first inference includes compilation" if mode == "compile" else None,
    }
    return Loaded(
        label=label, path=path, format="checkpoint", backend=backend, variant=f"{mode}-{dtype_name}",
        precision=dtype_name, class_names=list(ckpt["class_names"]), prepare=prepare, run=run,
        to_probs=_to_probs(blend), synthetic=synthetic, concat=lambda xs: torch.cat(list(xs)),
        take=lambda x, a, b: x[a:b].contiguous(), info=info,
    )


def gpu_peak_memory_mb(backend: str) -> float | None:
    if backend != "torch-cuda":
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20
