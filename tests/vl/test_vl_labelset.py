"""Label-set files: round trip, classification, fit checks and bad files; built from both teacher kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distill.errors import ConfigError, DataError, DistillError
from distill.teachers import TeacherConfig
from distill.vl.build_labels import build_labelset
from distill.vl.labelset import LabelSet, LabelSetError, labels_path_for


def _ls(n: int = 3, d: int = 8, **kw) -> LabelSet:
    rng = np.random.default_rng(0)
    return LabelSet([f"c{i}" for i in range(n)], rng.normal(size=(n, d)), **kw)


def test_round_trip_and_probs(tmp_path: Path) -> None:
    ls = _ls(teacher={"identity": "abc", "name": "t"}, tau=0.05)
    assert np.allclose(np.linalg.norm(ls.embeddings, axis=1), 1.0, atol=1e-6)
    path = ls.save(tmp_path / "m.labels.npz")
    back = LabelSet.load(path)
    assert back.names == ls.names and back.tau == 0.05 and back.teacher["identity"] == "abc"
    assert np.allclose(back.embeddings, ls.embeddings)
    p = back.probs(ls.embeddings * 3.0)  # unnormalised input: normalised first
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1.0, atol=1e-5) and (p.argmax(1) == [0, 1, 2]).all()
    assert np.allclose(back.logits(ls.embeddings)[0, 0], 1 / 0.05, atol=1e-4)
    assert labels_path_for(tmp_path / "model.onnx") == tmp_path / "model.labels.npz"
    assert back.subset(["c2", "c0"]).names == ["c2", "c0"]


def test_fit_checks_and_bad_sets(tmp_path: Path) -> None:
    ls = _ls(teacher={"identity": "abc", "name": "t"})
    ls.check_fits(8, "abc")
    ls.check_fits(8, None)
    with pytest.raises(LabelSetError, match="embedding size 8 does not match the model's embedding size 64"):
        ls.check_fits(64)
    with pytest.raises(LabelSetError, match="another teacher"):
        ls.check_fits(8, "xyz")
    assert issubclass(LabelSetError, DistillError)
    with pytest.raises(ConfigError, match="repeats"):
        LabelSet(["a", "a"], np.eye(2))
    with pytest.raises(LabelSetError, match="shape"):
        LabelSet(["a", "b"], np.eye(3))
    with pytest.raises(LabelSetError, match="all-zero"):
        LabelSet(["a", "b"], np.array([[1.0, 0], [0, 0]]))
    with pytest.raises(LabelSetError, match="NaN"):
        LabelSet(["a"], np.array([[np.nan, 1.0]]))
    with pytest.raises(LabelSetError, match="at least one class"):
        LabelSet([], np.zeros((0, 4)))
    junk = tmp_path / "junk.labels.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(LabelSetError, match="not a label set"):
        LabelSet.load(junk)
    with pytest.raises(LabelSetError, match="not found"):
        LabelSet.load(tmp_path / "none.npz")
    future = tmp_path / "future.labels.npz"
    np.savez(future, names=np.array(["a"]), embeddings=np.ones((1, 2), np.float32),
             meta=np.array(json.dumps({"format": 99})))
    with pytest.raises(LabelSetError, match="format 99"):
        LabelSet.load(future)


def test_build_from_classifier_rows(tiny_resnet_weights: Path) -> None:
    cfg = TeacherConfig(kind="cifar_resnet", name="cifar_resnet8", weights=str(tiny_resnet_weights))
    ls = build_labelset(cfg, ["ship", "cat"])
    assert ls.names == ["ship", "cat"] and ls.embed_dim == 64 and ls.teacher["adapter"] == "classifier"
    with pytest.raises(DataError, match="no class zebra"):
        build_labelset(cfg, ["zebra"])
    with pytest.raises(LabelSetError, match="does not match"):
        build_labelset(cfg, ["cat"], embed_dim=512)


def test_build_from_open_clip_text_tower(tiny_clip_config: Path, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    cfg = TeacherConfig(kind="open_clip", name=str(tiny_clip_config), templates="single")
    desc = tmp_path / "desc.yaml"
    desc.write_text("red panda: a small reddish mammal.\nokapi: a forest giraffe with striped legs.\n")
    ls = build_labelset(cfg, ["red panda", "okapi"], desc)
    assert ls.embed_dim == 32 and ls.teacher["adapter"] == "open_clip" and ls.source["descriptions"] == str(desc)
    torch.manual_seed(0)
    plain = build_labelset(cfg, ["red panda", "okapi"])
    assert plain.teacher["identity"] == ls.teacher["identity"]  # same towers: same embedding space
    assert not np.allclose(plain.embeddings, ls.embeddings)  # descriptions change the class embeddings
