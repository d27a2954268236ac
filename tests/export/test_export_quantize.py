"""int8 configurations and the exact int8 Pad rewrite (export.quantize)."""

from __future__ import annotations

import numpy as np
import pytest

from export.errors import ExportError
from export.quantize import DEFAULT_INT8, INT8_CONFIGS, Int8Config, _config, pad_in_int8


def _dq_pad_q(zp_value: int = 3, pad_value: float | None = None):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
             numpy_helper.from_array(np.array(zp_value, np.uint8), "zp"),
             numpy_helper.from_array(np.array([0, 2, 0, 0, 0, 2, 0, 0], np.int64), "pads")]
    pad_inputs = ["x_dq", "pads"]
    if pad_value is not None:
        inits.append(numpy_helper.from_array(np.array(pad_value, np.float32), "cval"))
        pad_inputs.append("cval")
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["x_dq"]),
             helper.make_node("Pad", pad_inputs, ["p"], name="pad0", mode="constant"),
             helper.make_node("QuantizeLinear", ["p", "s", "zp"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 7, 4, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _run(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_pad_in_int8_is_exact_and_drops_the_qdq_pair():
    import onnx

    model = _dq_pad_q()
    x = np.random.default_rng(0).integers(0, 256, (1, 3, 4, 4), dtype=np.uint8)
    before = _run(model, x)
    assert pad_in_int8(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Pad"]
    after = _run(model, x)
    np.testing.assert_array_equal(before, after)
    assert (after[:, :2] == 3).all() and (after[:, 5:] == 3).all()  # padded with the zero point


def test_pad_in_int8_leaves_a_nonzero_pad_value_alone():
    model = _dq_pad_q(pad_value=1.0)
    assert pad_in_int8(model) == 0
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Pad", "QuantizeLinear"]


def test_int8_configs():
    assert DEFAULT_INT8 == "cpu" and _config(None) == INT8_CONFIGS["cpu"]
    cpu = INT8_CONFIGS["cpu"]
    assert (cpu.fmt, cpu.activation, cpu.weight, cpu.reduce_range, cpu.per_channel) == ("qdq", "u8", "s8", True, True)
    trt = INT8_CONFIGS["tensorrt"]
    assert trt.activation == "s8" and trt.symmetric_activations and trt.fmt == "qdq"
    assert "U8S8" in cpu.describe() and "reduce-range" in cpu.describe()
    assert _config(Int8Config(activation="u8")).activation == "u8"
    with pytest.raises(ExportError, match="unknown int8 configuration"):
        _config("int3")
