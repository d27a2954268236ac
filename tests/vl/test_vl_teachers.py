"""Teachers as vision-language models: the classifier-as-VLM adapter and the open_clip text tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill.errors import ConfigError, DataError
from distill.teachers import TeacherConfig, create_teacher
from distill.vl import ClassifierVLM, OpenClipVLM, as_vlm, classifier_scoring_report

from distill.teachers.classifiers import CIFAR10_CLASSES as CIFAR


def test_classifier_as_vlm_rows_normalised_bias_dropped(tiny_resnet_teacher) -> None:
    vlm = as_vlm(tiny_resnet_teacher)
    assert isinstance(vlm, ClassifierVLM) and vlm.embed_dim == 64
    E = vlm.class_embeddings(["cat", "airplane"])
    W = tiny_resnet_teacher.net.linear.weight.detach()
    assert torch.allclose(E, F.normalize(W[[3, 0]], dim=-1))
    x = torch.randn(4, 3, 32, 32)
    emb = vlm.image_embeddings(x)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.allclose(emb, F.normalize(tiny_resnet_teacher.net.forward_features(x), dim=-1), atol=1e-5)
    with pytest.raises(DataError, match="has no class zebra"):
        vlm.class_embeddings(["cat", "zebra"])
    with pytest.raises(ConfigError, match="no text tower"):
        vlm.class_embeddings(["cat"], {"cat": "a feline"})


def test_classifier_as_vlm_follows_dataset_order(tiny_resnet_weights: Path) -> None:
    order = list(reversed(CIFAR))
    t = create_teacher(TeacherConfig(kind="cifar_resnet", name="cifar_resnet8", weights=str(tiny_resnet_weights)), order)
    E = as_vlm(t).class_embeddings(order)
    W = t.net.linear.weight.detach()
    assert torch.allclose(E[0], F.normalize(W[9], dim=-1))  # "truck" is row 9 of the weights
    feats = t.net.forward_features(torch.randn(6, 3, 32, 32)).detach()
    assert t.logits(torch.zeros(0, 3, 32, 32)).shape == (0, 10)  # an empty batch gives an empty (0, C) result
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    rep = classifier_scoring_report(t, feats, labels, list(range(10)))
    native = float((t.net.linear(feats).flip(-1).argmax(-1) == labels).float().mean())
    assert rep["native_logits"] == pytest.approx(native)
    assert set(rep) == {"native_logits", "dot_no_bias", "cosine"}


def test_open_clip_vlm_text_embeddings_match_zero_shot_head(tiny_clip_config: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    classes = ["cat", "dog", "t_shirt"]
    t = create_teacher(TeacherConfig(kind="open_clip", name=str(tiny_clip_config), templates="simple"), classes)
    vlm = as_vlm(t)
    assert isinstance(vlm, OpenClipVLM) and vlm.embed_dim == 32
    E = vlm.class_embeddings(classes)
    assert E.shape == (3, 32)
    assert torch.allclose(E, t.text_weights.T, atol=1e-5)  # same prompts, same averaging as the teacher's head
    # new classes, with descriptions: "a photo of a {name}. {description}"
    single = as_vlm(create_teacher(TeacherConfig(kind="open_clip", name=str(tiny_clip_config), templates="single"),
                                   classes))
    E2 = single.class_embeddings(["red panda"], {"red panda": "a small reddish mammal."})
    want = single.teacher.text_embeddings(["a photo of a red panda. a small reddish mammal."])
    assert torch.allclose(E2, want, atol=1e-5)
    with pytest.raises(ConfigError, match="no entry for class"):
        single.class_embeddings(["red panda", "okapi"], {"red panda": "a small reddish mammal."})
