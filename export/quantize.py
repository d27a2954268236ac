"""Reduced-precision variants of a verified fp32 ONNX model.

* ``fp16``: onnxconverter-common's float16 conversion with ``keep_io_types=True`` (inputs and outputs stay
  float32 / uint8, so the runtime and every consumer feed the same arrays).
* ``int8``: onnxruntime static quantisation in QDQ format, calibrated (MinMax) on real images; the QDQ tools need
  opset <= 20. Default configuration ``cpu`` (see :data:`INT8_CONFIGS`): uint8 asymmetric activations, int8
  symmetric per-channel 7-bit (reduce_range) weights, zero-channel Pads kept in uint8; measured 1.3-1.7x faster
  than fp32 on a 2-core AVX2 EPYC (`distill bench int8`), where the previous S8S8 graph was 0.8x. TensorRT's
  explicit quantisation needs int8 activations with zero point 0: the ``tensorrt`` configuration.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ExportError

PRECISIONS = ("fp16", "int8", "int8-trt")
#: int8 variants -> their configuration: ``int8`` runs fastest on onnxruntime CPUs (uint8 activations);
#: ``int8-trt`` is what TensorRT's explicit quantisation accepts (int8 activations, zero point 0).
INT8_VARIANTS = {"int8": "cpu", "int8-trt": "tensorrt"}
MAX_QDQ_OPSET = 20
CALIB_BATCH = 16


def check_quantize(quantize: tuple[str, ...] | list[str], opset: int) -> tuple[str, ...]:
    out: list[str] = []
    for q in quantize:
        if q not in PRECISIONS:
            raise ExportError(f"unknown --quantize {q!r}; choose from {', '.join(PRECISIONS)}")
        if q not in out:
            out.append(q)
    for q in out:
        if q in INT8_VARIANTS and opset > MAX_QDQ_OPSET:
            raise ExportError(f"--quantize {q} needs --opset <= {MAX_QDQ_OPSET} (the QDQ tools' limit); got {opset}")
    return tuple(out)


def needs_calibration(precisions: tuple[str, ...] | list[str]) -> bool:
    """Whether any requested variant is int8 (and so needs calibration images)."""
    return any(q in INT8_VARIANTS for q in precisions)


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


@dataclass(frozen=True)
class Int8Config:
    """How :func:`to_int8` quantises (onnxruntime ``quantize_static`` arguments, named so a sweep can vary them).

    ``fmt``: ``qdq`` (QuantizeLinear/DequantizeLinear pairs; onnxruntime fuses them into QLinear kernels at session
    creation, TensorRT reads them) or ``qoperator`` (QLinearConv/QLinearAdd... written into the file).
    ``activation`` / ``weight``: ``s8`` or ``u8``. ``reduce_range``: 7-bit weights (avoids the int16 saturation of
    the AVX2 ``vpmaddubsw`` u8*s8 kernel on CPUs without VNNI). ``symmetric_activations``: zero point 0 (TensorRT's
    explicit quantisation wants it). ``preprocess``: onnxruntime's ``quant_pre_process`` (shape inference + basic
    graph optimisation) first. ``extra``: more ``extra_options`` for ``quantize_static``.
    """

    fmt: str = "qdq"
    activation: str = "s8"
    weight: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    preprocess: bool = True
    calibrate: str = "minmax"
    op_types: tuple[str, ...] | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    int8_pad: bool = False

    def describe(self) -> str:
        bits = [self.fmt, f"{self.activation.upper()}{self.weight.upper()}",
                "per-channel" if self.per_channel else "per-tensor"]
        if self.reduce_range:
            bits.append("reduce-range")
        if self.symmetric_activations:
            bits.append("symmetric-act")
        if not self.preprocess:
            bits.append("no-preprocess")
        if self.calibrate != "minmax":
            bits.append(self.calibrate)
        if self.op_types:
            bits.append("ops=" + "+".join(self.op_types))
        if self.int8_pad:
            bits.append("int8-pad")
        bits += [f"{k}={v}" for k, v in self.extra]
        return " ".join(bits)


#: Named configurations (`distill bench int8 --configs all` sweeps them); ``DEFAULT_INT8`` is what ``export`` ships.
#: Why u8 activations on x86: onnxruntime fuses DQ -> Conv -> Q into QLinearConv for int8 (s8) activations only on
#: ARM (``QDQIsInt8Allowed()`` is false on x86), so an S8S8 QDQ graph runs most convolutions in fp32 between extra
#: Q/DQ nodes (slower than fp32). U8S8 is fused everywhere (x86 and ARM); reduce_range (7-bit weights) avoids the
#: u8*s8 pair-sum saturation of AVX2 without VNNI (fp32 top-1 agreement 98.7% vs 93.1% without it, ResNet-20).
INT8_CONFIGS: dict[str, Int8Config] = {
    "cpu": Int8Config(activation="u8", reduce_range=True, int8_pad=True),
    # The same graph with full 8-bit weights: VNNI (vpdpbusd) and AMX accumulate u8*s8 in int32 without the int16
    # pair-sum saturation that made 7-bit weights necessary on AVX2, so the extra bit is free accuracy there.
    "vnni": Int8Config(activation="u8", int8_pad=True),
    # TensorRT explicit quantisation: int8 activations and weights with zero point 0, biases left in float (TensorRT
    # folds them into its int8 kernels itself; an int32 DequantizeLinear on a bias is not an input it takes).
    "tensorrt": Int8Config(symmetric_activations=True, extra=(("QuantizeBias", False),)),
    "qdq-s8s8": Int8Config(),  # the previous default
    "qdq-u8s8": Int8Config(activation="u8"),
    "qdq-u8s8-rr": Int8Config(activation="u8", reduce_range=True),
    "qdq-s8s8-pad": Int8Config(int8_pad=True),
    "qdq-u8u8": Int8Config(activation="u8", weight="u8", symmetric_weights=False),
    "qdq-u8s8-tensor": Int8Config(activation="u8", per_channel=False),
    "qdq-u8s8-nopre": Int8Config(activation="u8", preprocess=False),
    "qop-s8s8": Int8Config(fmt="qoperator"),
    "qop-u8s8": Int8Config(fmt="qoperator", activation="u8"),
    "qop-u8s8-rr": Int8Config(fmt="qoperator", activation="u8", reduce_range=True),
    "qop-u8u8": Int8Config(fmt="qoperator", activation="u8", weight="u8", symmetric_weights=False),
    "qdq-u8s8-convonly": Int8Config(activation="u8", op_types=("Conv",)),
    "qdq-u8s8-conv-gemm": Int8Config(activation="u8", op_types=("Conv", "Gemm")),
}
DEFAULT_INT8 = "cpu"
assert set(INT8_VARIANTS.values()) <= set(INT8_CONFIGS)
#: ISA class (:func:`distill.isa.isa_class`) -> the ``int8`` variant's configuration, where measured otherwise than
#: :data:`DEFAULT_INT8` (the AVX2-without-VNNI tuning). Each entry is the faster of the candidates within 1 point of
#: fp32 top-1 in one side-by-side run of ``scripts/bench_int8.py`` on that ISA (docs/results.md, issue 16).
#: x86-amx (Xeon with AMX int8/bf16 + AVX-512 VNNI): ``vnni`` (full 8-bit weights) against the AVX2-tuned ``cpu``
#: (7-bit weights) on the ResNet-56 teacher, 1 thread, 5 interleaved rounds: paired speed ratio cpu/vnni 1.07 at
#: batch 1 and 0.99 at batch 32, top-1 agreement with fp32 98.8% vs 98.2%; the folded ResNet-8 student: 1.03 and
#: 0.99, agreement 98.0% vs 94.8%; all within 1 point of fp32. Speed is a tie within the shared machine's noise,
#: so the configuration closer to fp32 wins.
ISA_INT8_DEFAULTS: dict[str, str] = {"x86-amx": "vnni"}
assert set(ISA_INT8_DEFAULTS.values()) <= set(INT8_CONFIGS)


def default_int8_config(isa: str | None = None) -> str:
    """The ``int8`` configuration for ``isa`` (default: this CPU's class); :data:`DEFAULT_INT8` where unmeasured."""
    if isa is None:
        from distill.isa import isa_class

        isa = isa_class()
    return ISA_INT8_DEFAULTS.get(isa, DEFAULT_INT8)


def variant_config(variant: str, isa: str | None = None) -> str:
    """The configuration an int8 ``--quantize`` variant is built with: ``int8`` follows the ISA, ``int8-trt`` not."""
    return default_int8_config(isa) if variant == "int8" else INT8_VARIANTS[variant]


def to_int8(model: Any, calib: np.ndarray, input_name: str = "input", config: Int8Config | str | None = None) -> Any:
    """fp32 ModelProto -> int8 ModelProto calibrated on ``calib`` (the model's own input format).

    ``config``: an :class:`Int8Config` or a key of :data:`INT8_CONFIGS` (default :data:`DEFAULT_INT8`).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cfg = _config(config)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset > MAX_QDQ_OPSET:
        raise ExportError(f"int8 quantisation needs opset <= {MAX_QDQ_OPSET}; the model has {opset}")
    if len(calib) == 0:
        raise ExportError("int8 calibration needs at least one real image")

    class Reader(_Reader, CalibrationDataReader):
        pass

    qtype = {"s8": QuantType.QInt8, "u8": QuantType.QUInt8}
    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[cfg.calibrate]
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
            if cfg.preprocess:
                try:  # shape inference + graph optimisation the quantiser recommends
                    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
                except Exception:  # noqa: BLE001 - best effort; quantising the plain graph still works
                    pre = src
            else:
                pre = src
            extra = {"ActivationSymmetric": cfg.symmetric_activations, "WeightSymmetric": cfg.symmetric_weights}
            extra.update(dict(cfg.extra))
            quantize_static(
                str(pre), str(dst), Reader(input_name, calib),
                quant_format=QuantFormat.QDQ if cfg.fmt == "qdq" else QuantFormat.QOperator,
                per_channel=cfg.per_channel, reduce_range=cfg.reduce_range,
                activation_type=qtype[cfg.activation], weight_type=qtype[cfg.weight],
                calibrate_method=method, op_types_to_quantize=list(cfg.op_types) if cfg.op_types else None,
                extra_options=extra,
            )
            out = onnx.load(str(dst))
        finally:
            logging.getLogger().setLevel(level)
    _tidy_opsets(out)
    if cfg.int8_pad and cfg.fmt == "qdq":
        pad_in_int8(out)
    return out


def _config(config: Int8Config | str | None) -> Int8Config:
    if config is None:
        return INT8_CONFIGS[DEFAULT_INT8]
    if isinstance(config, Int8Config):
        return config
    if config not in INT8_CONFIGS:
        raise ExportError(f"unknown int8 configuration {config!r}; choose from {', '.join(INT8_CONFIGS)}")
    return INT8_CONFIGS[config]


def _tidy_opsets(model: Any) -> None:
    """quant_pre_process declares every domain onnxruntime knows (training, nchwc, aten...); keep the used ones."""
    used = {n.domain for n in model.graph.node} | {"", "ai.onnx"}
    keep = [o for o in model.opset_import if o.domain in used]
    if len(keep) != len(model.opset_import):
        del model.opset_import[:]
        model.opset_import.extend(keep)


def pad_in_int8(model: Any) -> int:
    """Rewrite ``DequantizeLinear -> Pad(constant 0) -> QuantizeLinear`` (same scale / zero point) as one int8 Pad.

    onnxruntime has no QDQ fusion for Pad, so a quantised Pad (the CIFAR ResNets' option-A shortcut: strided Slice +
    zero channel Pad) runs as dequantise, float Pad, quantise. Padding the quantised tensor with its zero point is
    exact: Q(0) == zero_point. Returns the number of Pads rewritten (the model is changed in place).
    """
    from onnx import numpy_helper

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def qparams(node: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if len(node.input) < 3 or node.input[1] not in inits or node.input[2] not in inits:
            return None
        if any(a.name == "axis" for a in node.attribute):
            return None
        scale, zp = numpy_helper.to_array(inits[node.input[1]]), numpy_helper.to_array(inits[node.input[2]])
        return (scale, zp) if scale.size == 1 and zp.size == 1 else None

    done = 0
    removed: set[int] = set()
    for pad in list(g.node):
        if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        if mode != b"constant" or len(pad.input) > 3 and pad.input[3]:
            continue
        if len(pad.input) > 2 and pad.input[2]:
            if pad.input[2] not in inits or np.any(numpy_helper.to_array(inits[pad.input[2]]) != 0):
                continue
        dq = producer.get(pad.input[0])
        outs = consumers.get(pad.output[0], [])
        if dq is None or dq.op_type != "DequantizeLinear" or len(outs) != 1 or outs[0].op_type != "QuantizeLinear":
            continue
        q = outs[0]
        pin, pout = qparams(dq), qparams(q)
        if pin is None or pout is None or pad.output[0] in graph_outputs:
            continue
        if pin[1].dtype != pout[1].dtype or not np.array_equal(pin[0], pout[0]) or not np.array_equal(pin[1], pout[1]):
            continue
        zp_name = f"{pad.name or pad.output[0]}_int8_pad_value"
        zp = numpy_helper.from_array(pin[1].reshape(()).astype(pin[1].dtype), zp_name)
        g.initializer.append(zp)
        inits[zp_name] = zp
        old_out = pad.output[0]
        while len(pad.input) < 3:
            pad.input.append("")
        pad.input[0] = dq.input[0]
        pad.input[2] = zp_name
        pad.output[0] = q.output[0]
        removed.add(id(q))
        if all(id(c) in removed or c is pad for c in consumers.get(dq.output[0], [])) \
                and dq.output[0] not in graph_outputs:
            removed.add(id(dq))
        stale = {old_out} | ({dq.output[0]} if id(dq) in removed else set())
        keep_vi = [vi for vi in g.value_info if vi.name not in stale]
        del g.value_info[:]
        g.value_info.extend(keep_vi)
        done += 1
    if removed:
        keep = [n for n in g.node if id(n) not in removed]
        del g.node[:]
        g.node.extend(keep)
    return done
