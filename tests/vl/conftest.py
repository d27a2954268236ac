"""Tiny teachers for the open-vocabulary tests: a random CIFAR ResNet-8 classifier (the random open_clip model is
tests/conftest.py's tiny_clip_config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.teachers.classifiers import CIFAR10_CLASSES as CIFAR


@pytest.fixture(scope="session")
def tiny_resnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random cifar_resnet8 classifier saved like the shared weights (``state_dict`` with ``module.`` keys)."""
    import torch

    from distill.models import create_cifar_resnet_classifier

    torch.manual_seed(0)
    net = create_cifar_resnet_classifier(8, num_classes=10)
    path = tmp_path_factory.mktemp("vl_w") / "resnet8.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "best_prec1": 0.0}, path)
    return path


@pytest.fixture()
def tiny_resnet_teacher(tiny_resnet_weights: Path):
    from distill.teachers import TeacherConfig, create_teacher

    return create_teacher(TeacherConfig(kind="cifar_resnet", name="cifar_resnet8", weights=str(tiny_resnet_weights)),
                          CIFAR)


@pytest.fixture(scope="session")
def vl_checkpoint(tmp_path_factory: pytest.TempPathFactory, cifar_small_dir: Path, tiny_resnet_weights: Path) -> Path:
    """A random-weight embedding student (cifar_resnet8 -> 64-d) in the checkpoint format ``distill train
    --method vl-distill`` writes, with the tiny ResNet-8 teacher's rows as class embeddings."""
    import torch

    from distill.checkpoint import save_checkpoint
    from distill.preprocess import PreprocessSpec
    from distill.teachers import TeacherConfig, create_teacher
    from distill.vl import as_vlm, create_embedding_student

    teacher = create_teacher(TeacherConfig(kind="cifar_resnet", name="cifar_resnet8", weights=str(tiny_resnet_weights)),
                             CIFAR)
    vlm = as_vlm(teacher)
    torch.manual_seed(0)
    student = create_embedding_student("cifar_resnet8", vlm.embed_dim)
    val = sorted(cifar_small_dir.rglob("*.jpg"))[::5]
    path = tmp_path_factory.mktemp("vl_ckpt") / "vl.pt"
    save_checkpoint(path, {
        "student": student.spec.model_dump(), "model": student.state_dict(), "class_names": list(CIFAR),
        "preprocess": PreprocessSpec().model_dump(), "method": "vl-distill", "blend": None,
        "teacher": teacher.describe(),
        "embedding": {"format": 1, "embed_dim": vlm.embed_dim, "tau": 0.07, "class_names": list(CIFAR),
                      "class_embeddings": vlm.class_embeddings(CIFAR), "seen": CIFAR[:5], "unseen": CIFAR[5:],
                      "teacher": vlm.describe()},
        "data": {"root": str(cifar_small_dir),
                 "val": [[str(p.relative_to(cifar_small_dir)), CIFAR.index(p.parent.name)] for p in val], "test": []},
        "config": {}, "epoch": 0, "step": 0,
    })
    return path


@pytest.fixture(scope="session")
def vl_artifact(tmp_path_factory: pytest.TempPathFactory, vl_checkpoint: Path) -> Path:
    """The tiny embedding student exported: vl.onnx + vl.labels.npz (10 CIFAR classes)."""
    from export import export_onnx

    out = tmp_path_factory.mktemp("vl_art") / "vl.onnx"
    res = export_onnx(vl_checkpoint, out, verbose=False, max_verify_images=40)
    assert res.report["passed"] and res.paths["labels"] == out.with_name("vl.labels.npz")
    return out
