"""Run TensorRT engines (the runtime side; building them is :mod:`export.tensorrt`).

Torch-free; ``tensorrt`` and ``cuda-python`` (device memory) are imported only when an engine is loaded, so
``import export.runtime`` stays light. Engines are tied to the GPU model and the exact TensorRT version: the
sidecar (``model.engine.json``) records both, and :func:`load_engine_session` refuses a mismatch with a clear
message (before touching the engine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import DependencyError

from .errors import ArtifactError
from .metadata import ArtifactMetadata

# (no square brackets: the CLI prints errors through rich markup)
INSTALL_HINT = ("install it on a machine with an NVIDIA GPU: pip install tensorrt cuda-python (the project's "
                "'tensorrt' extra), or use the TensorRT that ships with JetPack on a Jetson")


# -- environment ---------------------------------------------------------------------------------------
def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a :class:`DependencyError` (exit code 2) that says how to get it."""
    try:
        import tensorrt as trt  # type: ignore[import-not-found]
    except ImportError as e:
        raise DependencyError(f"TensorRT is not installed ({e}); {INSTALL_HINT}") from None
    return trt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[import-not-found,no-redef]  # older cuda-python
        except ImportError as e:
            raise DependencyError(f"running a TensorRT engine needs cuda-python for device memory ({e}); "
                                  "pip install cuda-python") from None
    return cudart


def _check(result: Any, what: str) -> Any:
    """cuda-python returns (err, *values); raise on error, return the values (one value unwrapped)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ArtifactError(f"CUDA error in {what}: {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def is_jetson() -> bool:
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text(errors="ignore").lower()
    except OSError:
        return False


def gpu_info(device: int = 0) -> dict[str, str]:
    """``{"name", "compute_capability"}`` of the current GPU (cuda-python, else nvidia-smi, else Jetson model)."""
    try:
        cudart = _cudart()
        prop = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        return {"name": name.strip("\x00 ").strip(), "compute_capability": f"{prop.major}.{prop.minor}"}
    except (DependencyError, ArtifactError):
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20, check=True).stdout.strip().splitlines()
            if len(out) > device:
                name, cc = (s.strip() for s in out[device].rsplit(",", 1))
                return {"name": name, "compute_capability": cc}
        except (subprocess.SubprocessError, OSError, ValueError):
            pass
    raise DependencyError("no NVIDIA GPU found (cuda-python and nvidia-smi cannot see one); TensorRT engines need a GPU")


# -- sidecar -------------------------------------------------------------------------------------------
def sidecar_path(engine: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_sidecar(engine: str | Path) -> dict[str, Any]:
    side = sidecar_path(engine)
    if not side.is_file():
        raise ArtifactError(f"engine sidecar {side} not found: an engine is tied to the GPU and TensorRT version it was "
                            "built with; rebuild it with 'distill export tensorrt --onnx MODEL.onnx -o ENGINE'")
    try:
        data = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"engine sidecar {side} is unreadable: {e}") from None
    missing = [k for k in ("tensorrt_version", "gpu_name", "compute_capability", "artifact") if k not in data]
    if missing:
        raise ArtifactError(f"engine sidecar {side} lacks {', '.join(missing)}")
    return data


def check_engine_compat(sidecar: dict[str, Any], *, tensorrt_version: str, gpu_name: str,
                        compute_capability: str, engine: str | Path = "engine") -> None:
    """Refuse an engine built with another TensorRT version or on another GPU model (one clear line)."""
    problems = []
    if str(sidecar.get("tensorrt_version")) != str(tensorrt_version):
        problems.append(f"TensorRT {sidecar.get('tensorrt_version')} (here {tensorrt_version})")
    if str(sidecar.get("compute_capability")) != str(compute_capability):
        problems.append(f"compute capability {sidecar.get('compute_capability')} (here {compute_capability})")
    if str(sidecar.get("gpu_name")) != str(gpu_name):
        problems.append(f"GPU {sidecar.get('gpu_name')} (here {gpu_name})")
    if problems:
        src = sidecar.get("onnx", {}).get("path") if isinstance(sidecar.get("onnx"), dict) else None
        raise ArtifactError(
            f"engine {Path(engine).name} was built for {', '.join(problems)}; engines only run on the GPU model and "
            f"TensorRT version they were built with: rebuild it here with 'distill export tensorrt --onnx "
            f"{src or 'MODEL.onnx'} -o {Path(engine).name}'"
        )


# -- logger ---------------------------------------------------------------------------------------------
def make_logger(trt: Any) -> Any:
    """A trt.ILogger that keeps error messages for our one-line exceptions."""

    class Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)

    return Logger()


# -- run -----------------------------------------------------------------------------------------------
class _TrtSession:
    """Run a deserialised engine with cuda-python device buffers (no torch, no pycuda)."""

    def __init__(self, trt: Any, engine: Any, sidecar: dict[str, Any], meta: ArtifactMetadata) -> None:
        self.trt = trt
        self.engine = engine
        self.cudart = _cudart()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ArtifactError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1:
            raise ArtifactError(f"engine has {len(inputs)} inputs; distill artifacts have one")
        self.input_name = inputs[0]
        self.output_names = [n for n in meta.output_names if n in outputs] or outputs
        self.providers = ["TensorRT"]
        self.max_batch = int(sidecar.get("profile", {}).get("max", 0)) or None
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run_chunk(self, batch: np.ndarray) -> list[np.ndarray]:
        trt, cudart, ctx = self.trt, self.cudart, self.context
        want = trt.nptype(self.engine.get_tensor_dtype(self.input_name))
        batch = np.ascontiguousarray(batch, dtype=want)
        if not ctx.set_input_shape(self.input_name, tuple(batch.shape)):
            raise ArtifactError(f"engine rejects input shape {tuple(batch.shape)} (profile {self.max_batch=})")
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        ptr = self._buffer(self.input_name, batch.nbytes)
        _check(cudart.cudaMemcpyAsync(ptr, batch.ctypes.data, batch.nbytes, h2d, self.stream), "cudaMemcpyAsync")
        ctx.set_tensor_address(self.input_name, ptr)
        outs = []
        for name in self.output_names:
            arr = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            outs.append(arr)
            ctx.set_tensor_address(name, self._buffer(name, arr.nbytes))
        if not ctx.execute_async_v3(_handle(self.stream)):
            raise ArtifactError("TensorRT execution failed")
        for name, arr in zip(self.output_names, outs):
            _check(cudart.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name][0], arr.nbytes, d2h, self.stream),
                   "cudaMemcpyAsync")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [o.astype(np.float32, copy=False) for o in outs]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        step = self.max_batch or len(batch)
        parts = [self._run_chunk(batch[s:s + step]) for s in range(0, len(batch), step)]
        return [np.concatenate(col) for col in zip(*parts)]

    def __del__(self) -> None:  # pragma: no cover - needs a GPU
        try:
            for ptr, _ in self._buffers.values():
                self.cudart.cudaFree(ptr)
            self.cudart.cudaStreamDestroy(self.stream)
        except Exception:  # noqa: BLE001
            pass


def _handle(stream: Any) -> int:
    try:
        return int(stream)
    except TypeError:  # pragma: no cover - older cuda-python objects
        return int(stream.getPtr())


def load_engine_session(path: str | Path) -> tuple[_TrtSession, ArtifactMetadata]:
    """Sidecar check (GPU model + TensorRT version), then deserialise; used by :func:`export.runtime.load_artifact`."""
    path = Path(path)
    sidecar = read_sidecar(path)
    try:
        meta = ArtifactMetadata.model_validate(sidecar["artifact"])
    except Exception as e:  # noqa: BLE001
        raise ArtifactError(f"engine sidecar {sidecar_path(path)} has invalid artifact metadata: {str(e).splitlines()[0]}") from None
    trt = import_tensorrt()
    gpu = gpu_info()
    check_engine_compat(sidecar, tensorrt_version=trt.__version__, gpu_name=gpu["name"],
                        compute_capability=gpu["compute_capability"], engine=path)
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise ArtifactError(f"{path} is not a valid TensorRT engine for this GPU/TensorRT "
                            f"({'; '.join(logger.errors)[:200] or 'deserialisation failed'})")
    return _TrtSession(trt, engine, sidecar, meta), meta


def tensorrt_available() -> tuple[bool, str]:
    """(available, reason) — used by tests to skip with a reason."""
    try:
        trt = import_tensorrt()
    except DependencyError as e:
        return False, str(e)
    try:
        gpu_info()
    except DependencyError as e:
        return False, str(e)
    return True, f"TensorRT {trt.__version__}"


__all__ = ["check_engine_compat", "gpu_info", "import_tensorrt", "is_jetson", "load_engine_session",
           "read_sidecar", "sidecar_path", "tensorrt_available"]
