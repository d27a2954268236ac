"""Export of an embedding student: the graph outputs the unit embedding, the classifier is a replaceable
label-set file next to the artifact, applied by export.runtime; `distill export labels` makes new ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from distill.cli import app
from distill.teachers.classifiers import CIFAR10_CLASSES as CIFAR
from distill.vl.labelset import LabelSet
from export import export_onnx
from export.errors import ArtifactError
from export.runtime import load_artifact


def test_artifact_outputs_embedding_and_classifies_with_label_set(vl_artifact: Path, vl_checkpoint: Path,
                                                                   real_jpegs: list[Path]) -> None:
    from distill.checkpoint import student_from_checkpoint
    from distill.preprocess import preprocess_images
    from distill.vl import embed

    art = load_artifact(vl_artifact)
    assert art.meta.kind == "embedding" and art.meta.output_kind == "embedding" and art.meta.embed_dim == 64
    assert art.meta.labels_file == "vl.labels.npz" and art.class_names == CIFAR
    x = art.prepare(real_jpegs[:6])
    e = art.embed(x)
    assert e.shape == (6, 64) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    student, ckpt = student_from_checkpoint(vl_checkpoint)
    with torch.no_grad():
        e_t = embed(student, torch.from_numpy(preprocess_images(real_jpegs[:6], art.meta.preprocess)))
    assert np.abs(e - e_t.numpy()).max() < 1e-4
    probs = art.run(x)
    E = ckpt["embedding"]["class_embeddings"].numpy()
    want = torch.softmax(torch.from_numpy(e @ E.T / 0.07), -1).numpy()
    assert probs.shape == (6, 10) and np.allclose(probs, want, atol=1e-5)
    assert art.top_k(probs, 1)[0][0].label in CIFAR
    assert art.run(x[:0]).shape == (0, 10) or art.run_raw(x[:0])["embedding"].shape == (0, 64)


def test_new_label_set_without_reexport(vl_artifact: Path, tiny_resnet_weights: Path, tmp_path: Path,
                                        real_jpegs: list[Path]) -> None:
    work = tmp_path / "deploy"
    work.mkdir()
    onnx_path = Path(shutil.copy(vl_artifact, work / "vl.onnx"))
    shutil.copy(vl_artifact.with_name("vl.labels.npz"), work / "vl.labels.npz")
    before = onnx_path.read_bytes()
    names = tmp_path / "names.txt"
    names.write_text("ship\ncat\ndog\n")
    r = CliRunner().invoke(app, ["export", "labels", "--labels", str(names), "--teacher", "cifar_resnet8",
                                 "--teacher-weights", str(tiny_resnet_weights), "--artifact", str(onnx_path),
                                 "-o", str(work / "vl.labels.npz")])
    assert r.exit_code == 0, r.output
    art = load_artifact(onnx_path)
    assert art.class_names == ["ship", "cat", "dog"] and onnx_path.read_bytes() == before
    p = art.classify(real_jpegs[:3])
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    # an explicit label set, and swapping at run time
    full = LabelSet.load(vl_artifact.with_name("vl.labels.npz"))
    art.set_labels(full.subset(["truck", "frog"]))
    assert art.class_names == ["truck", "frog"] and art.classify(real_jpegs[:2]).shape == (2, 2)
    art2 = load_artifact(onnx_path, labels=vl_artifact.with_name("vl.labels.npz"))
    assert art2.class_names == CIFAR


def test_label_set_errors(vl_artifact: Path, tiny_clip_config: Path, tiny_resnet_weights: Path, tmp_path: Path,
                          tiny_checkpoint: Path) -> None:
    art = load_artifact(vl_artifact)
    wrong_dim = LabelSet(["a", "b"], np.eye(2, 32), teacher={"identity": "x"})
    with pytest.raises(ArtifactError, match="embedding size 32 does not match model vl.onnx's embedding size 64"):
        art.set_labels(wrong_dim)
    other_teacher = LabelSet(["a", "b"], np.eye(2, 64), teacher={"identity": "not-the-same", "name": "other"})
    with pytest.raises(ArtifactError, match="another teacher"):
        art.set_labels(other_teacher)
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(vl_artifact, lonely)
    (tmp_path / "vl.labels.npz").unlink(missing_ok=True)
    with pytest.raises(ArtifactError, match="label set not found"):
        load_artifact(lonely)

    runner = CliRunner()
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n")
    # an open_clip text tower (32-d) for a 64-d model: one clear line, exit 2, nothing written
    out = tmp_path / "bad.labels.npz"
    r = runner.invoke(app, ["export", "labels", "--labels", str(names), "--teacher", str(tiny_clip_config),
                            "--teacher-kind", "open_clip", "--artifact", str(vl_artifact), "-o", str(out)])
    assert r.exit_code == 2 and "embedding size 32 does not match" in r.output and not out.exists()
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ncat\n")
    r = runner.invoke(app, ["export", "labels", "--labels", str(dup), "--teacher", "cifar_resnet8",
                            "--teacher-weights", str(tiny_resnet_weights), "-o", str(out)])
    assert r.exit_code == 2 and "repeats class name" in r.output
    blank = tmp_path / "blank.txt"
    blank.write_text("cat\n\ndog\n")
    r = runner.invoke(app, ["export", "labels", "--labels", str(blank), "--teacher", "cifar_resnet8",
                            "--teacher-weights", str(tiny_resnet_weights), "-o", str(out)])
    assert r.exit_code == 2 and "empty line" in r.output
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("cat\nzebra\n")
    r = runner.invoke(app, ["export", "labels", "--labels", str(unknown), "--teacher", "cifar_resnet8",
                            "--teacher-weights", str(tiny_resnet_weights), "-o", str(out)])
    assert r.exit_code == 2 and "no class zebra" in r.output
    # a classifier artifact has fixed classes
    r = runner.invoke(app, ["export", "labels", "--labels", str(names), "--teacher", "cifar_resnet8",
                            "--teacher-weights", str(tiny_resnet_weights), "--artifact",
                            str(_classifier_artifact(tiny_checkpoint, tmp_path)), "-o", str(out)])
    assert r.exit_code == 2 and "fixed classes" in r.output


def _classifier_artifact(ckpt: Path, tmp: Path) -> Path:
    out = tmp / "dho.onnx"
    export_onnx(ckpt, out, fold_heads=True, verbose=False, max_verify_images=20)
    return out


def test_open_clip_label_set_fits_open_clip_embedding_space(tiny_clip_config: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("red panda\nokapi\n")
    desc = tmp_path / "d.yaml"
    desc.write_text("red panda: a small reddish mammal.\nokapi: a forest giraffe.\n")
    out = tmp_path / "clip.labels.npz"
    r = CliRunner().invoke(app, ["export", "labels", "--labels", str(names), "--teacher", str(tiny_clip_config),
                                 "--teacher-kind", "open_clip", "--descriptions", str(desc), "-o", str(out)])
    assert r.exit_code == 0, r.output
    ls = LabelSet.load(out)
    assert ls.names == ["red panda", "okapi"] and ls.embed_dim == 32 and ls.teacher["adapter"] == "open_clip"
