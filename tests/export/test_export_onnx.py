"""ONNX export through the Python API: parity on real images, dynamic batch, metadata, blends, input kinds, variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from distill.io import sha256_file
from export import export_onnx
from export.metadata import ArtifactMetadata, read_metadata, write_metadata
from export.quantize import default_int8_config
from export.runtime import load_artifact


def _dims(vi) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_tiny_artifact_is_verified_and_self_describing(tiny_artifact: Path, tiny_checkpoint: Path):
    model = onnx.load(str(tiny_artifact))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"] and _dims(model.graph.input[0]) == ["batch", 3, 32, 32]
    assert [o.name for o in model.graph.output] == ["logits"] and _dims(model.graph.output[0]) == ["batch", 10]
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18
    # the folded logit blend is one Gemm/MatMul: no softmax in the graph
    assert not any(n.op_type == "Softmax" for n in model.graph.node)
    meta = read_metadata(tiny_artifact)
    assert meta.kind == "student" and meta.blend == "logit" and meta.output_kind == "logits"
    assert (meta.alpha, meta.beta, meta.precision, meta.input_kind, meta.opset) == (0.5, 1.0, "fp32", "float", 18)
    assert meta.class_names[0] == "airplane" and meta.preprocess.size == 32
    assert meta.checkpoint_sha256 == sha256_file(tiny_checkpoint)
    assert meta.teacher == {"kind": "cifar_resnet", "name": "cifar_resnet56", "identity": "test"}
    assert meta.tool_version and meta.model_name == "cifar_resnet8"
    rep = meta.verification
    assert rep["passed"] and rep["labelled"] and rep["images"] == 100
    assert rep["fp32"]["max_abs_diff"] <= 1e-4 and rep["fp32"]["top1_agreement_torch"] == 1.0
    assert rep["fp32"]["batch1_rows"] == 1 and rep["fp32"]["batch7_rows"] == 7
    assert "two-head" in rep["reference"]["model"] and 0 <= rep["reference"]["top1_agreement"] <= 1
    assert set(rep["two_head_blends"]) == {"prob", "logit"}


def test_dynamic_batch_1_and_7(tiny_artifact: Path):
    art = load_artifact(tiny_artifact)
    x = np.random.default_rng(0).normal(size=(7, 3, 32, 32)).astype(np.float32)
    p7 = art.run(x)
    p1 = art.run(x[:1])
    assert p7.shape == (7, 10) and p1.shape == (1, 10) and p7.dtype == np.float32
    np.testing.assert_allclose(p1[0], p7[0], atol=1e-6)
    np.testing.assert_allclose(p7.sum(1), 1.0, atol=1e-5)


def test_metadata_round_trip(tiny_artifact: Path):
    model = onnx.load(str(tiny_artifact))
    meta = read_metadata(model)
    again = ArtifactMetadata.from_props(meta.to_props())
    assert again == meta
    changed = meta.model_copy(update={"precision": "int8", "alpha": 0.25})
    write_metadata(model, changed)
    assert read_metadata(model) == changed
    assert sum(p.key == "precision" for p in model.metadata_props) == 1


def test_prob_blend_outputs_probabilities(make_checkpoint, tmp_path: Path):
    # the prob blend is the best recorded one here, so it is also the two-head reference
    ck = make_checkpoint("prob_best", blend={"prob": {"alpha": 0.5, "beta": 1.0, "val_acc": 0.2},
                                             "logit": {"alpha": 0.5, "beta": 1.0, "val_acc": 0.1}})
    res = export_onnx(ck, tmp_path / "prob.onnx", blend="prob", max_verify_images=40, verbose=False)
    assert res.blend == "prob" and "requested" in res.blend_reason
    assert res.report["reference"]["model"].startswith("two-head prob blend")
    art = load_artifact(res.output)
    assert art.meta.output_kind == "probs" and art.meta.output_names == ["probs"]
    assert res.report["fp32"]["max_abs_diff"] <= 1e-4
    # the exact probability blend: agrees 100% with the two-head prob blend it replaces
    assert res.report["reference"]["top1_agreement"] == 1.0
    x = np.random.default_rng(1).normal(size=(3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(art.run(x).sum(1), 1.0, atol=1e-5)


def test_equal_recorded_accuracy_exports_and_references_the_logit_blend(tiny_artifact: Path):
    """The tiny checkpoint records equal val acc for both blends: one tie rule (logit) for the export and its reference."""
    meta = read_metadata(tiny_artifact)
    assert meta.blend == "logit"
    assert meta.verification["reference"]["model"].startswith("two-head logit blend")
    assert meta.verification["reference"]["top1_agreement"] == 1.0


def test_unfolded_two_head_graph(tiny_checkpoint: Path, tmp_path: Path):
    res = export_onnx(tiny_checkpoint, tmp_path / "two.onnx", fold_heads=False, max_verify_images=40, verbose=False)
    model = onnx.load(str(res.output))
    assert [o.name for o in model.graph.output] == ["logits_ce", "logits_kd"]
    art = load_artifact(res.output)
    assert art.meta.kind == "two_head"
    raw = art.run_raw(np.zeros((2, 3, 32, 32), np.float32))
    assert set(raw) == {"logits_ce", "logits_kd"}
    assert art.run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)


def test_single_head_checkpoint_exports_its_head(make_checkpoint, tmp_path: Path):
    ck = make_checkpoint("ce_only", method="ce", blend=None)
    res = export_onnx(ck, tmp_path / "ce.onnx", fold_heads=False, max_verify_images=20, verbose=False)
    meta = load_artifact(res.output).meta
    assert meta.kind == "student" and meta.blend is None and meta.output_names == ["logits"]
    assert res.report["passed"] and "reference" not in res.report


def test_uint8_artifact_matches_float_artifact(tiny_checkpoint: Path, tiny_artifact: Path, tmp_path: Path, real_jpegs):
    res = export_onnx(tiny_checkpoint, tmp_path / "u8.onnx", input_kind="uint8", max_verify_images=40, verbose=False)
    u8 = load_artifact(res.output)
    fl = load_artifact(tiny_artifact)
    assert u8.meta.input_kind == "uint8"
    model = onnx.load(str(res.output))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert _dims(model.graph.input[0]) == ["batch", 32, 32, 3]
    xb = u8.prepare(real_jpegs)
    assert xb.dtype == np.uint8 and xb.shape == (16, 32, 32, 3)
    np.testing.assert_allclose(u8.classify(real_jpegs), fl.classify(real_jpegs), atol=1e-5)


def test_opset_17_uses_the_torchscript_path(tiny_checkpoint: Path, tmp_path: Path):
    res = export_onnx(tiny_checkpoint, tmp_path / "o17.onnx", opset=17, max_verify_images=20, verbose=False)
    model = onnx.load(str(res.output))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert res.metadata.opset == 17 and res.report["passed"]


def test_fp16_and_int8_variants_with_report(tiny_checkpoint: Path, tmp_path: Path, cifar_small_dir: Path):
    out = tmp_path / "m.onnx"
    res = export_onnx(tiny_checkpoint, out, quantize=("fp16", "int8", "int8-trt"), calib_dir=cifar_small_dir,
                      max_verify_images=60, verbose=False)
    assert res.paths == {"fp32": out, "fp16": tmp_path / "m.fp16.onnx", "int8": tmp_path / "m.int8.onnx",
                         "int8-trt": tmp_path / "m.int8-trt.onnx"}
    variants = res.report["variants"]
    for q in ("fp16", "int8", "int8-trt"):
        art = load_artifact(res.paths[q])
        assert art.meta.precision == q.split("-")[0]
        # int8 follows this CPU's ISA (export.quantize.ISA_INT8_DEFAULTS), int8-trt never does
        assert art.meta.quantization == {"fp16": None, "int8": default_int8_config(), "int8-trt": "tensorrt"}[q]
        assert art.meta.verification["variants"][q]["top1_agreement_fp32"] == variants[q]["top1_agreement_fp32"]
        assert art.meta.input_kind == "float"
        assert variants[q]["accuracy"] is not None and variants[q]["dynamic_batch_ok"]
        assert 0.0 <= variants[q]["top1_agreement_fp32"] <= 1.0
        probs = art.classify(sorted(cifar_small_dir.rglob("*.jpg"))[:7])
        assert probs.shape == (7, 10) and probs.dtype == np.float32
    assert variants["fp16"]["top1_agreement_fp32"] >= 0.95
    fp16 = onnx.load(str(res.paths["fp16"]))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    int8 = onnx.load(str(res.paths["int8"]))
    ops = {n.op_type for n in int8.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # default "cpu" config: uint8 activations (fused into QLinearConv by onnxruntime on x86 and ARM), int8 weights
    inits = {i.name: i for i in int8.graph.initializer}
    act_zp = {inits[n.input[2]].data_type for n in int8.graph.node if n.op_type == "QuantizeLinear"}
    assert act_zp == {onnx.TensorProto.UINT8}
    assert {d.domain for d in int8.opset_import} <= {"", "ai.onnx", "com.microsoft"}
    # "int8-trt": what TensorRT's explicit quantisation takes, int8 everywhere with zero point 0
    trt = onnx.load(str(res.paths["int8-trt"]))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in trt.graph.initializer}
    zps = [inits[n.input[2]] for n in trt.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps)
    assert load_artifact(out).meta.verification["variants"].keys() == {"fp16", "int8", "int8-trt"}
    assert not list(tmp_path.glob(".*.tmp"))
