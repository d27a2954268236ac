"""Build TensorRT engines from an exported ONNX artifact and write their sidecar (running them: :mod:`export.engine`).

Torch-free; ``tensorrt`` is imported only when used.

TensorRT 10 vs 11 (say which path ran, in the command output and in the sidecar's ``build_path``):

* 11.x builds strongly typed networks only (the weak-typing flags ``BuilderFlag.FP16/INT8`` are gone): the
  precision comes from the ONNX graph, so ``--precision fp16`` needs the fp16 ONNX (``model.fp16.onnx``) and
  ``--precision int8`` the TensorRT Q/DQ ONNX (``model.int8-trt.onnx``, from ``--quantize int8-trt``; the default
  ``model.int8.onnx`` has uint8 activations for onnxruntime CPUs and is refused).
* 10.x: an fp32 ONNX with ``--precision fp16`` uses the ``FP16`` builder flag (weakly typed, TensorRT may pick
  fp16 kernels); an fp16 ONNX is built strongly typed; int8 always uses the Q/DQ ONNX (explicit quantisation,
  with the ``INT8`` flag on a weakly typed network: implicit calibration is deprecated in 10 and gone in 11).

Engines are tied to the GPU model and the exact TensorRT version: the sidecar (``model.engine.json``) records
both, and :func:`export.engine.load_engine_session` refuses a mismatch with a clear message.
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

from distill.io import atomic_path, atomic_write_json, check_writable, sha256_file

from .engine import (check_engine_compat, gpu_info, import_tensorrt, is_jetson, load_engine_session, make_logger,
                     read_sidecar, sidecar_path, tensorrt_available)
from .errors import ExportError
from .metadata import read_metadata

SIDECAR_FORMAT = 1
PRECISIONS = ("fp32", "fp16", "int8")


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return 0


# -- build ---------------------------------------------------------------------------------------------
def plan_build(trt_version: str, requested: str, onnx_precision: str, flag_names: set[str]) -> tuple[bool, list[str], str]:
    """(strongly_typed, builder flags, description) for a precision request, per TensorRT major version.

    Raises :class:`ExportError` when the request cannot be met with this ONNX (e.g. TensorRT 11 + fp32 ONNX +
    ``--precision fp16``: pick the fp16 ONNX instead).
    """
    major = trt_major(trt_version)
    if requested not in PRECISIONS:
        raise ExportError(f"unknown --precision {requested!r}; choose {', '.join(PRECISIONS)}")
    variant = {"fp16": "the fp16 ONNX (model.fp16.onnx, from --quantize fp16)",
               "int8": "the TensorRT Q/DQ int8 ONNX (model.int8-trt.onnx, from --quantize int8-trt)", "fp32": "the fp32 ONNX"}
    if major >= 11:
        if onnx_precision != requested:
            raise ExportError(
                f"TensorRT {trt_version} builds strongly typed networks only: the precision comes from the ONNX, which "
                f"is {onnx_precision}; for --precision {requested} pass {variant[requested]}"
            )
        return True, [], f"TensorRT {trt_version}: strongly typed network, {requested} from the ONNX graph"
    # TensorRT 10.x (and older): builder flags for weakly typed networks.
    if requested == "int8":
        if onnx_precision != "int8":
            raise ExportError(f"--precision int8 needs {variant['int8']} (explicit quantisation; implicit "
                              f"calibration is deprecated in TensorRT 10); got a {onnx_precision} ONNX")
        return False, ["INT8"] + (["FP16"] if "FP16" in flag_names else []), \
            f"TensorRT {trt_version}: weakly typed network, Q/DQ int8 ONNX with the INT8 builder flag"
    if onnx_precision == "int8":
        raise ExportError(f"the ONNX is int8 (Q/DQ); build it with --precision int8")
    if requested == "fp16":
        if onnx_precision == "fp16":
            return True, [], f"TensorRT {trt_version}: strongly typed network, fp16 from the ONNX graph"
        return False, ["FP16"], f"TensorRT {trt_version}: weakly typed network with the FP16 builder flag"
    if onnx_precision == "fp16":
        raise ExportError("the ONNX is fp16; build it with --precision fp16 (or pass the fp32 ONNX)")
    return False, [], f"TensorRT {trt_version}: fp32 network"


def check_trt_int8(meta: Any, onnx_path: Path) -> None:
    """TensorRT's explicit quantisation takes int8 activations with zero point 0 only; the default ``int8``
    variant has uint8 activations (what onnxruntime fuses fastest on CPUs), so TensorRT gets ``int8-trt``."""
    if meta.precision == "int8" and meta.quantization != "tensorrt":
        raise ExportError(
            f"{onnx_path.name} is quantised for onnxruntime on CPUs (configuration {meta.quantization or 'cpu'}: uint8 "
            "activations); TensorRT needs int8 activations with zero point 0: export with --quantize int8-trt and "
            "build from model.int8-trt.onnx")


def build_engine(onnx_path: str | Path, output: str | Path, *, precision: str = "fp32", min_batch: int = 1,
                 opt_batch: int = 8, max_batch: int = 32, workspace_gb: float = 2.0) -> dict[str, Any]:
    """Build a TensorRT engine with a dynamic-batch optimisation profile; write it and its sidecar atomically."""
    onnx_path, output = Path(onnx_path), Path(output)
    if not (1 <= min_batch <= opt_batch <= max_batch):
        raise ExportError(f"need 1 <= --min-batch <= --opt-batch <= --max-batch, got {min_batch}, {opt_batch}, {max_batch}")
    if precision not in PRECISIONS:
        raise ExportError(f"unknown --precision {precision!r}; choose {', '.join(PRECISIONS)}")
    check_writable(output)
    check_writable(sidecar_path(output))
    meta = read_metadata(onnx_path)  # ArtifactError when it is not one of ours
    check_trt_int8(meta, onnx_path)
    trt = import_tensorrt()
    gpu = gpu_info()
    flag_names = set(getattr(trt.BuilderFlag, "__members__", {}) or [n for n in dir(trt.BuilderFlag) if n.isupper()])
    strongly_typed, flags, build_path = plan_build(trt.__version__, precision, meta.precision, flag_names)

    logger = make_logger(trt)
    builder = trt.Builder(logger)
    creation = 0
    st_flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed and st_flag is not None:  # required on 10.x, accepted (no-op) on 11.x
        creation |= 1 << int(st_flag)
    network = builder.create_network(creation)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}: {'; '.join(errs)[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    for f in flags:
        config.set_flag(getattr(trt.BuilderFlag, f))
    profile = builder.create_optimization_profile()
    inp = network.get_input(0)
    rest = tuple(int(d) for d in inp.shape[1:])
    if any(d < 0 for d in rest):
        raise ExportError(f"input {inp.name} has dynamic non-batch dimensions {tuple(inp.shape)}; only the batch may be dynamic")
    profile.set_shape(inp.name, (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT engine build failed: {'; '.join(logger.errors)[:300] or 'see TensorRT log'}")

    artifact = meta.model_copy(update={"precision": precision}).to_json_dict()
    sidecar = {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": str(trt.__version__),
        "gpu_name": gpu["name"],
        "compute_capability": gpu["compute_capability"],
        "precision": precision,
        "build_path": build_path,
        "strongly_typed": strongly_typed,
        "builder_flags": flags,
        "profile": {"input": inp.name, "min": min_batch, "opt": opt_batch, "max": max_batch, "shape": list(rest)},
        "onnx": {"path": str(onnx_path), "sha256": sha256_file(onnx_path), "precision": meta.precision},
        "artifact": artifact,
        "platform": {"machine": platform.machine(), "jetson": is_jetson()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(output) as tmp:  # (atomic_path leaves the file readable by a serving user)
        tmp.write_bytes(bytes(serialized))
    atomic_write_json(sidecar_path(output), sidecar)
    return {"engine": str(output), "sidecar": str(sidecar_path(output)), "build_path": build_path, **gpu}


__all__ = ["build_engine", "check_engine_compat", "gpu_info", "import_tensorrt", "is_jetson", "load_engine_session",
           "plan_build", "read_sidecar", "sidecar_path", "tensorrt_available"]
