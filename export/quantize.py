"""Reduced-precision variants of a verified fp32 ONNX model.

* ``fp16``: onnxconverter-common's float16 conversion with ``keep_io_types=True`` (inputs and outputs stay
  float32 / uint8, so the runtime and every consumer feed the same arrays).
* ``int8``: onnxruntime static quantisation in QDQ format (what TensorRT and the ORT CPU/GPU kernels consume),
  per-channel int8 weights, int8 activations calibrated (MinMax) on real images. The QDQ tools need opset <= 20.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ExportError

PRECISIONS = ("fp16", "int8")
MAX_QDQ_OPSET = 20
CALIB_BATCH = 16


def check_quantize(quantize: tuple[str, ...] | list[str], opset: int) -> tuple[str, ...]:
    out: list[str] = []
    for q in quantize:
        if q not in PRECISIONS:
            raise ExportError(f"unknown --quantize {q!r}; choose from {', '.join(PRECISIONS)}")
        if q not in out:
            out.append(q)
    if "int8" in out and opset > MAX_QDQ_OPSET:
        raise ExportError(f"--quantize int8 needs --opset <= {MAX_QDQ_OPSET} (the QDQ tools' limit); got {opset}")
    return tuple(out)


def to_fp16(model: Any) -> Any:
    """fp32 ModelProto -> fp16 weights/compute, float32 (or uint8) inputs and outputs."""
    from onnxconverter_common import float16

    import onnx

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        out = float16.convert_float_to_float16(model, keep_io_types=True)
    # A uint8-input graph starts with Cast(uint8 -> float): the converter retypes that Cast's output to float16 in
    # value_info but leaves its ``to`` attribute at float (an invalid graph); make the attribute follow the type.
    types = {vi.name: vi.type.tensor_type.elem_type for vi in out.graph.value_info}
    non_float = {i.name for i in out.graph.input if i.type.tensor_type.elem_type != onnx.TensorProto.FLOAT}
    for node in out.graph.node:
        if node.op_type == "Cast" and node.input[0] in non_float and types.get(node.output[0]) == onnx.TensorProto.FLOAT16:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    return out


class _Reader:
    """onnxruntime CalibrationDataReader over a preprocessed batch of real images."""

    def __init__(self, input_name: str, batch: np.ndarray, chunk: int = CALIB_BATCH) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{input_name: np.ascontiguousarray(batch[s:s + chunk])} for s in range(0, len(batch), chunk)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def to_int8(model: Any, calib: np.ndarray, input_name: str = "input") -> Any:
    """fp32 ModelProto -> QDQ int8 ModelProto calibrated on ``calib`` (the model's own input format)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > MAX_QDQ_OPSET:
        raise ExportError(f"int8 quantisation needs opset <= {MAX_QDQ_OPSET}; the model has {opset}")
    if len(calib) == 0:
        raise ExportError("int8 calibration needs at least one real image")

    class Reader(_Reader, CalibrationDataReader):
        pass

    quiet = logging.getLogger("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="distill-int8-") as tmp, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        quiet.setLevel(logging.ERROR)
        try:
            src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
            onnx.save(model, src)
            try:  # shape inference + graph optimisation the quantiser recommends
                quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            except Exception:  # noqa: BLE001 - best effort; quantising the plain graph still works
                pre = src
            quantize_static(
                str(pre), str(dst), Reader(input_name, calib), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            return onnx.load(str(dst))
        finally:
            logging.getLogger().setLevel(level)
