"""Teacher export: an open_clip image tower with its zero-shot text head (tiny random config), and a CIFAR ResNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from export.runtime import load_artifact
from export.teacher import export_teacher_onnx, resolve_class_names

def test_open_clip_teacher_export(tmp_path: Path, cifar_small_dir: Path, real_jpegs, tiny_clip_config: Path):
    cfg = tiny_clip_config
    res = export_teacher_onnx(str(cfg), tmp_path / "teacher.onnx", teacher_kind="open_clip", templates="single",
                              calib_dir=cifar_small_dir, max_verify_images=30, verbose=False)
    art = load_artifact(res.output)
    meta = art.meta
    assert meta.kind == "teacher" and meta.teacher["kind"] == "open_clip" and meta.class_names[0] == "airplane"
    assert meta.preprocess.size == 32 and meta.checkpoint_sha256 is None
    assert res.report["passed"] and res.report["labelled"]
    probs = art.classify(real_jpegs[:7])
    assert probs.shape == (7, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the text head is a fixed matrix in the graph: no text tower (no token embedding table)
    model = onnx.load(str(res.output))
    assert all(49408 not in init.dims for init in model.graph.initializer)


def test_cifar_resnet_teacher_export(tmp_path: Path, resnet20_weights: Path, cifar_small_dir: Path):
    res = export_teacher_onnx("cifar_resnet20", tmp_path / "r20.onnx", teacher_weights=str(resnet20_weights),
                              verify_dir=cifar_small_dir, max_verify_images=40, verbose=False)
    assert res.report["passed"] and res.metadata.kind == "teacher"
    # the shared pretrained ResNet-20 is a real CIFAR-10 classifier
    assert res.report["fp32"]["accuracy"] > 0.8


def test_class_names_resolution(tmp_path: Path, cifar_small_dir: Path):
    assert resolve_class_names("cat,dog", [], "open_clip") == ["cat", "dog"]
    f = tmp_path / "names.txt"
    f.write_text("a\nb\nc\n")
    assert resolve_class_names(str(f), [], "open_clip") == ["a", "b", "c"]
    assert resolve_class_names(None, [cifar_small_dir], "open_clip")[:2] == ["airplane", "automobile"]
    assert resolve_class_names(None, [], "cifar_resnet")[-1] == "truck"
    from distill.errors import ConfigError

    with pytest.raises(ConfigError, match="--class-names"):
        resolve_class_names(None, [], "open_clip")
