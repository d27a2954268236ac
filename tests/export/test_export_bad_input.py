"""Every bad input: one clear error (a DistillError -> one line, exit 2) and no half-written file.

Tests of control flow export with opset 17 (the fast TorchScript path); the dynamo path is covered elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from distill.errors import CheckpointError, ConfigError, DistillError
from export import export_onnx
from export.errors import ExportError, VerificationError


def _no_outputs(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.suffix in (".onnx", ".tmp")]


def test_missing_checkpoint(tmp_path: Path):
    with pytest.raises(CheckpointError, match="not found"):
        export_onnx(tmp_path / "nope.pt", tmp_path / "m.onnx")
    assert _no_outputs(tmp_path)


@pytest.mark.parametrize("how", ["random", "truncated", "not_a_dict"])
def test_corrupt_checkpoint(tmp_path: Path, tiny_checkpoint: Path, how: str):
    bad = tmp_path / "bad.pt"
    if how == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "truncated":
        data = tiny_checkpoint.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        import torch

        torch.save([1, 2, 3], bad)
    with pytest.raises(CheckpointError, match="corrupt|not a distill"):
        export_onnx(bad, tmp_path / "m.onnx")
    assert _no_outputs(tmp_path)


def test_fold_heads_on_single_head_checkpoint(make_checkpoint, tmp_path: Path):
    ck = make_checkpoint("kd_only", method="kd", blend=None)
    with pytest.raises(ExportError, match="two heads"):
        export_onnx(ck, tmp_path / "m.onnx", fold_heads=True)
    assert _no_outputs(tmp_path)


@pytest.mark.parametrize("opset", [9, 16, 22, 99])
def test_unsupported_opset(tiny_checkpoint: Path, tmp_path: Path, opset: int):
    with pytest.raises(ExportError, match=f"unsupported opset {opset}"):
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", opset=opset)


@pytest.mark.parametrize("variant", ["int8", "int8-trt"])
def test_int8_needs_qdq_opset(tiny_checkpoint: Path, tmp_path: Path, variant: str):
    with pytest.raises(ExportError, match=f"--quantize {variant} needs --opset <= 20"):
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", opset=21, quantize=(variant,))


@pytest.mark.parametrize("kw,match", [({"input_kind": "rgb"}, "--input"), ({"blend": "avg"}, "--blend"),
                                      ({"quantize": ("int4",)}, "--quantize")])
def test_bad_options(tiny_checkpoint: Path, tmp_path: Path, kw, match):
    with pytest.raises(ExportError, match=match):
        export_onnx(tiny_checkpoint, tmp_path / "m.onnx", **kw)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir(tiny_checkpoint: Path, tmp_path: Path):  # pragma: no cover - CI runs as root here
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="not writable"):
            export_onnx(tiny_checkpoint, ro / "m.onnx")
    finally:
        ro.chmod(0o700)


def test_unwritable_output_paths(tiny_checkpoint: Path, tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create output directory"):
        export_onnx(tiny_checkpoint, tmp_path / "file" / "m.onnx")  # parent is a file
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        export_onnx(tiny_checkpoint, tmp_path / "dir.onnx")


def test_failed_parity_leaves_no_file(tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    """A verification failure raises (exit 1) and leaves neither the output nor a temp file behind."""
    import export.verify as verify

    monkeypatch.setattr(verify, "MAX_ABS_DIFF", -1.0)
    out = tmp_path / "m.onnx"
    with pytest.raises(VerificationError, match="parity broken"):
        export_onnx(tiny_checkpoint, out, max_verify_images=10, quantize=("fp16",), opset=17, verbose=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_export(tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    import export.verify as verify

    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous artifact")
    monkeypatch.setattr(verify, "MAX_ABS_DIFF", -1.0)
    with pytest.raises(VerificationError):
        export_onnx(tiny_checkpoint, out, max_verify_images=10, opset=17, verbose=False)
    assert out.read_bytes() == b"previous artifact"


def test_no_images_to_verify(make_checkpoint, tmp_path: Path):
    ck = make_checkpoint("no_data", data={"root": str(tmp_path / "gone"), "val": [["a/b.jpg", 0]], "test": []})
    with pytest.raises(ExportError, match="--calib-dir"):
        export_onnx(ck, tmp_path / "m.onnx")
    assert _no_outputs(tmp_path)


def test_calib_dir_is_used_when_val_images_are_missing(make_checkpoint, tmp_path: Path, cifar_small_dir: Path):
    ck = make_checkpoint("moved", data={"root": str(tmp_path / "gone"), "val": [["a/b.jpg", 0]], "test": []})
    res = export_onnx(ck, tmp_path / "m.onnx", calib_dir=cifar_small_dir, max_verify_images=20, opset=17,
                      verbose=False)
    assert res.report["source"] == str(cifar_small_dir) and res.report["labelled"]


def test_no_blend_recorded_searches_on_labelled_images(make_checkpoint, tmp_path: Path):
    ck = make_checkpoint("noblend", blend=None)
    res = export_onnx(ck, tmp_path / "m.onnx", max_verify_images=30, opset=17, verbose=False)
    assert res.blend in ("logit", "prob") and "searched" in res.blend_reason


def test_errors_are_distill_errors():
    for cls in (ExportError, VerificationError):
        assert issubclass(cls, DistillError)
    assert VerificationError.exit_code == 1 and ExportError.exit_code == 2


def test_unwritable_output_dir_is_checked_before_any_work(tiny_checkpoint: Path, tmp_path: Path, monkeypatch):
    """Runs as root too: the writability check (os.access) is faked to say no; nothing is loaded or written."""
    import distill.io

    calls = []
    monkeypatch.setattr(distill.io.os, "access", lambda p, mode: False)
    monkeypatch.setattr("distill.checkpoint.load_checkpoint", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError, match="not writable"):
        export_onnx(tiny_checkpoint, tmp_path / "out" / "m.onnx")
    assert calls == [] and not (tmp_path / "out" / "m.onnx").exists()
