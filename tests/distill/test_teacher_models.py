"""Teachers: the real CIFAR ResNet-56, a tiny timm model and a tiny random open_clip model (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distill.data import list_image_folder
from distill.errors import CheckpointError, ConfigError, DataError, ModelError
from distill.teachers import TeacherConfig, create_teacher, resolve_kind, teacher_logits_for

CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

def _clip(config: Path, classes: list[str], **kw: object) -> "torch.nn.Module":
    torch.manual_seed(0)
    return create_teacher(TeacherConfig(kind="open_clip", name=str(config), **kw), classes)  # type: ignore[arg-type]


def test_cifar_resnet56_teacher_is_accurate_on_real_images(cifar_small_dir: Path, resnet56_weights: Path,
                                                           tmp_path: Path) -> None:
    names, samples = list_image_folder(cifar_small_dir)
    teacher = create_teacher(TeacherConfig(name="cifar_resnet56", weights=str(resnet56_weights)), names)
    assert teacher.kind == "cifar_resnet" and teacher.preprocess.size == 32 and teacher.class_names == CIFAR
    logits, info = teacher_logits_for(teacher, samples, tmp_path, batch_size=100, device="cpu", progress=False)
    labels = torch.tensor([s.label for s in samples])
    acc = float((logits.argmax(1) == labels).float().mean())
    assert logits.shape == (300, 10) and logits.dtype == torch.float32
    assert acc >= 0.80, acc
    assert info.computed == 300 and info.hits == 0
    d = teacher.describe()
    assert d["kind"] == "cifar_resnet" and d["name"] == "cifar_resnet56" and len(d["identity"]) == 64
    emb = teacher.image_embeddings(torch.zeros(2, 3, 32, 32))
    assert emb.shape == (2, 64)


def test_classifier_class_names_are_checked_and_reordered(resnet20_weights: Path, real_jpegs: list[Path]) -> None:
    cfg = TeacherConfig(name="cifar_resnet20", weights=str(resnet20_weights))
    with pytest.raises(DataError, match=r"class names do not match the teacher's: dataset has cat, dog \(2 classes\), "
                                        r"teacher has airplane, automobile"):
        create_teacher(cfg, ["cat", "dog"])
    canonical = create_teacher(cfg, CIFAR)
    shuffled_names = CIFAR[::-1]
    shuffled = create_teacher(cfg, shuffled_names)
    assert shuffled.class_names == shuffled_names and shuffled.identity != canonical.identity
    from distill.data import create_eval_transform

    x = torch.stack([create_eval_transform(canonical.preprocess)(p) for p in real_jpegs[:4]])
    assert torch.equal(shuffled.logits(x), canonical.logits(x).flip(1))


def test_bad_teacher_names_and_weights(tmp_path: Path, resnet20_weights: Path) -> None:
    with pytest.raises(ModelError, match="unknown teacher model 'no_such_net'"):
        create_teacher(TeacherConfig(name="no_such_net"), CIFAR)
    with pytest.raises(CheckpointError, match="teacher weights file not found"):
        create_teacher(TeacherConfig(name="cifar_resnet56", weights=str(tmp_path / "missing.th")), CIFAR)
    with pytest.raises(ModelError, match="needs a weights file"):
        create_teacher(TeacherConfig(name="cifar_resnet56"), CIFAR)
    with pytest.raises(ModelError, match="does not fit cifar_resnet56"):
        create_teacher(TeacherConfig(name="cifar_resnet56", weights=str(resnet20_weights)), CIFAR)
    junk = tmp_path / "junk.th"
    junk.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read teacher weights"):
        create_teacher(TeacherConfig(name="cifar_resnet20", weights=str(junk)), CIFAR)
    with pytest.raises(ModelError, match="unknown CIFAR ResNet"):
        create_teacher(TeacherConfig(kind="cifar_resnet", name="cifar_resnet21", weights=str(resnet20_weights)), CIFAR)
    assert resolve_kind(TeacherConfig(name="ViT-B-32")) == "open_clip"
    assert resolve_kind(TeacherConfig(name="resnet50")) == "timm"


def test_timm_teacher_with_weights_file(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=3)
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, weights)
    names_file = tmp_path / "names.txt"
    names_file.write_text("c\nb\na\n")
    t = create_teacher(TeacherConfig(name="test_resnet", weights=str(weights), class_names_file=names_file),
                       ["a", "b", "c"])
    assert t.kind == "timm" and t.class_names == ["a", "b", "c"]
    assert t.preprocess.size == 160 and t.preprocess.resize_size == 168 and t.preprocess.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 160, 160)
    net.eval()
    with torch.no_grad():
        assert torch.allclose(t.logits(x), net(x).flip(1), atol=1e-5)
    assert t.image_embeddings(x).shape[0] == 2
    with pytest.raises(ModelError, match="does not fit timm model"):
        create_teacher(TeacherConfig(name="test_resnet", weights=str(weights)), ["a", "b"])


def test_open_clip_tiny_random_teacher(tiny_clip_config: Path, tmp_path: Path) -> None:
    classes = ["cat", "dog", "t_shirt"]
    t = _clip(tiny_clip_config, classes, templates="single")
    assert t.kind == "open_clip" and t.class_names == classes and t.preprocess.size == 32
    assert t.preprocess.interpolation == "bicubic" and t.preprocess.mean[0] == pytest.approx(0.48145466)
    assert t.prompts == [["a photo of a cat."], ["a photo of a dog."], ["a photo of a t shirt."]]
    x = torch.randn(5, 3, 32, 32)
    logits = t.logits(x)
    assert logits.shape == (5, 3) and logits.dtype == torch.float32
    assert float(logits.abs().max()) <= 100.0 + 1e-4
    emb = t.image_embeddings(x)
    assert emb.shape == (5, 32) and torch.allclose(emb.norm(dim=1), torch.ones(5), atol=1e-5)
    assert torch.allclose(logits, 100 * emb @ t.text_weights, atol=1e-4)
    # the head is the normalised mean of the class's prompt embeddings (one template: its embedding)
    assert torch.allclose(t.text_embeddings(["a photo of a dog."])[0], t.text_weights[:, 1], atol=1e-5)

    simple = _clip(tiny_clip_config, classes, templates="simple")
    assert len(simple.prompts[0]) == 7 and simple.identity != t.identity
    openai = _clip(tiny_clip_config, classes, templates="openai")
    assert len(openai.prompts[0]) == 80
    desc = tmp_path / "desc.yaml"
    desc.write_text("cat: a small feline.\ndog: a loyal canine.\nt_shirt: a short-sleeved top.\n")
    described = _clip(tiny_clip_config, classes, templates="single", descriptions=desc)
    assert described.prompts[0] == ["a photo of a cat. a small feline."] and described.identity != t.identity
    tfile = tmp_path / "templates.txt"
    tfile.write_text("# comment\nitap of a {c}.\na {c} in the wild.\n")
    custom = _clip(tiny_clip_config, classes, templates=str(tfile))
    assert custom.prompts[2] == ["itap of a t shirt.", "a t shirt in the wild."]
    assert _clip(tiny_clip_config, classes, templates="single").identity == t.identity  # same seed, same identity


def test_open_clip_local_checkpoint_and_errors(tiny_clip_config: Path, tmp_path: Path) -> None:
    classes = ["cat", "dog"]
    t = _clip(tiny_clip_config, classes, templates="single")
    ckpt = tmp_path / "tiny.pt"
    torch.save({"state_dict": t.model.state_dict()}, ckpt)
    torch.manual_seed(123)  # a different random init must be overwritten by the checkpoint
    loaded = create_teacher(TeacherConfig(kind="open_clip", name=str(tiny_clip_config), weights=str(ckpt),
                                          templates="single"), classes)
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(loaded.logits(x), t.logits(x), atol=1e-4)
    assert loaded.describe()["weights"] != t.describe()["weights"]
    with pytest.raises(CheckpointError, match="open_clip weights file not found"):
        _clip(tiny_clip_config, classes, weights=str(tmp_path / "nope.pt"))
    with pytest.raises(ModelError, match="unknown pretrained tag 'nosuchtag'"):
        create_teacher(TeacherConfig(kind="open_clip", name="ViT-B-32", weights="nosuchtag"), classes)
    with pytest.raises(ModelError, match="unknown open_clip model"):
        create_teacher(TeacherConfig(kind="open_clip", name="ViT-Q-99"), classes)
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo without placeholder\n")
    with pytest.raises(ConfigError, match="has no {c} placeholder"):
        _clip(tiny_clip_config, classes, templates=str(bad))
    with pytest.raises(ConfigError, match="templates must be"):
        _clip(tiny_clip_config, classes, templates="fancy")
    partial = tmp_path / "d.json"
    partial.write_text(json.dumps({"cat": "feline"}))
    with pytest.raises(ConfigError, match="no entry for class.*dog"):
        _clip(tiny_clip_config, classes, descriptions=partial)
