"""Runtime: torch-free loading, providers, classify on real JPEGs, golden preprocessing, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from distill.preprocess import PreprocessSpec
from export.errors import ArtifactError, InputError
from export.runtime import Prediction, choose_providers, load_artifact


def test_runtime_imports_without_torch():
    code = ("import sys, export, export.runtime, export.metadata, export.cli, export.tensorrt; "
            "bad = [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_classify_real_jpegs(tiny_artifact: Path, real_jpegs):
    art = load_artifact(tiny_artifact, intra_op_threads=1)
    assert art.backend == "onnxruntime" and art.providers == ["CPUExecutionProvider"]
    probs = art.classify(real_jpegs)
    assert probs.shape == (len(real_jpegs), 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    top = art.top_k(probs, 3)
    assert len(top) == len(real_jpegs) and all(len(t) == 3 for t in top)
    first = top[0][0]
    assert isinstance(first, Prediction) and first.label == art.class_names[first.index]
    assert first.score == pytest.approx(float(probs[0].max()))
    assert [p.score for p in top[0]] == sorted((p.score for p in top[0]), reverse=True)
    # bytes work as well as paths
    np.testing.assert_allclose(art.classify([real_jpegs[0].read_bytes()]), probs[:1], atol=1e-6)


def _reference_preprocess(path: Path, spec: PreprocessSpec) -> np.ndarray:
    """The spec's meaning written out independently of distill.preprocess: a JPEG decoded at the smallest DCT
    scale (1/2, 1/4, 1/8) whose shorter side is still >= 4 x ``resize_size``, shorter side to ``resize_size``
    (bilinear), centre crop ``size``, RGB, /255, (x - mean) / std, CHW."""
    import math

    from PIL import Image

    img = Image.open(path)
    w, h = img.size
    k = max([1] + [s for s in (2, 4, 8) if min(w, h) / s >= 4 * spec.resize_size])
    if k > 1 and img.format == "JPEG":
        img.draft(img.mode, (w // k, h // k))  # PIL picks the scale s with w // req_w >= s and h // req_h >= s
        assert img.size == (math.ceil(w / k), math.ceil(h / k)), (img.size, k)
    img = img.convert("RGB")
    w, h = img.size
    scale = spec.resize_size / min(w, h)
    nw, nh = max(spec.size, round(w * scale)), max(spec.size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = int(round((nw - spec.size) / 2.0)), int(round((nh - spec.size) / 2.0))
    img = img.crop((left, top, left + spec.size, top + spec.size))
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return x.transpose(2, 0, 1)


def test_runtime_preprocessing_matches_the_spec_and_training_eval(tiny_artifact: Path, real_jpegs):
    """The runtime's prepare() equals the spec applied by hand, and the training-time eval transform equals it."""
    from distill.data.transforms import create_eval_transform

    art = load_artifact(tiny_artifact)
    spec = art.meta.preprocess
    want = np.stack([_reference_preprocess(p, spec) for p in real_jpegs])
    batch = art.prepare(real_jpegs)
    assert batch.shape == (len(real_jpegs), 3, 32, 32)
    np.testing.assert_allclose(batch, want, atol=1e-6, rtol=0)
    tf = create_eval_transform(spec)
    np.testing.assert_array_equal(np.stack([np.asarray(tf(p)) for p in real_jpegs]), batch)


def test_preprocessing_real_photos_with_resize(clothing_small_dir: Path):
    """Larger real photos: resize + centre crop (bilinear, crop 0.875) against the by-hand reference."""
    from distill.data.transforms import create_eval_transform
    from distill.preprocess import preprocess_images

    photos = sorted(clothing_small_dir.rglob("*.jpg"))[:4]
    spec = PreprocessSpec.for_size(64, crop_pct=0.875)
    assert spec.resize_size > spec.size  # the resize path really runs
    got = preprocess_images(photos, spec)
    # in pixel levels: a shrink resamples only the crop's box (distill.preprocess.resize_and_crop), which agrees with
    # resizing the whole photo and then cropping up to the rounding between PIL's two 8-bit passes
    levels = np.abs(got - np.stack([_reference_preprocess(p, spec) for p in photos])) * 255.0 \
        * np.asarray(spec.std, np.float32)[None, :, None, None]
    assert levels.max() < 1.0 + 1e-3 and (levels > 1e-3).mean() < 0.002, (levels.max(), (levels > 1e-3).mean())
    np.testing.assert_array_equal(np.stack([np.asarray(create_eval_transform(spec)(p)) for p in photos]), got)


def test_run_rejects_wrong_shapes_and_dtypes(tiny_artifact: Path):
    art = load_artifact(tiny_artifact)
    with pytest.raises(InputError, match="expects"):
        art.run(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(InputError, match="float32"):
        art.run(np.zeros((2, 3, 32, 32), np.uint8))
    assert art.run(np.zeros((2, 3, 32, 32), np.float64)).shape == (2, 10)
    assert art.run(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 10)


def test_missing_and_corrupt_artifacts(tmp_path: Path, tiny_artifact: Path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        load_artifact(bad)
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(tiny_artifact.read_bytes()[:5000])
    with pytest.raises(ArtifactError):
        load_artifact(trunc)
    with pytest.raises(ArtifactError, match="directory"):
        load_artifact(tmp_path)


def test_onnx_without_distill_metadata_is_refused(tmp_path: Path, tiny_artifact: Path):
    model = onnx.load(str(tiny_artifact))
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, foreign)
    with pytest.raises(ArtifactError, match="no distill metadata"):
        load_artifact(foreign)


def test_provider_choice():
    assert choose_providers() [-1] == "CPUExecutionProvider"
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ArtifactError, match="not available"):
        choose_providers(["NoSuchExecutionProvider"])


def test_import_export_runtime_loads_no_exporter_and_export_onnx_stays_importable():
    code = ("import sys, export.runtime; "
            "bad = [m for m in ('export.pipeline', 'export.fold', 'export.verify', 'export.quantize', 'export.tensorrt', "
            "'export.onnx_export', 'onnx', 'torch') if m in sys.modules]; assert not bad, bad; "
            "from export import export_onnx, ExportResult; assert callable(export_onnx); "
            "assert 'export.pipeline' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_load_artifact_dispatches_on_the_suffix_through_the_registry(tiny_artifact: Path, tmp_path: Path, monkeypatch):
    """A runtime plugs in as suffix -> loader (a callable or "module:function", imported on first use)."""
    import types

    from export import runtime

    calls = []

    def fake_loader(path: Path, options: runtime.LoadOptions) -> runtime.Artifact:
        calls.append((path.name, options.intra_op_threads))
        onnx_art = runtime.load_onnx(tiny_artifact, options)
        return runtime.Artifact(path, onnx_art.meta, onnx_art._session, backend="fake")

    monkeypatch.setitem(sys.modules, "fake_runtime_plugin", types.SimpleNamespace(load=fake_loader))
    monkeypatch.setattr(runtime, "_LOADERS", dict(runtime._LOADERS))
    runtime.register_loader(".fake", "fake_runtime_plugin:load")
    model = tmp_path / "model.FAKE"
    model.write_bytes(b"whatever the runtime reads")
    art = load_artifact(model, intra_op_threads=1)
    assert calls == [("model.FAKE", 1)] and art.backend == "fake" and ".fake" in runtime.registered_suffixes()
    assert art.run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    # a suffix nobody registered is tried as ONNX, whose error says why it is not loadable
    other = tmp_path / "model.bin"
    other.write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="not a loadable ONNX model"):
        load_artifact(other)
    assert runtime.loader_for(tmp_path / "m.engine") is runtime.load_engine
