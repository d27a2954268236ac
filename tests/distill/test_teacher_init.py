"""``student.init=teacher``: the student backbone starts from the teacher's stem and evenly spaced blocks.

Checked by hand: the student's forward pass is the teacher's with the other blocks removed."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.errors import ModelError
from distill.models import CifarResNet, create_student, load_backbone_state
from distill.models.teacher_init import backbone_state_from_teacher, teacher_blocks


@pytest.mark.parametrize("n_teacher,n_student,picks", [
    (9, 3, [0, 4, 8]),   # ResNet-56 -> ResNet-20
    (9, 1, [0]),         # ResNet-56 -> ResNet-8
    (3, 3, [0, 1, 2]),   # same depth: every block
    (9, 2, [0, 8]),      # ResNet-56 -> ResNet-14
    (18, 9, [0, 2, 4, 6, 8, 11, 13, 15, 17]),  # ResNet-110 -> ResNet-56
])
def test_blocks_are_evenly_spaced_first_and_last_kept(n_teacher: int, n_student: int, picks: list[int]) -> None:
    assert teacher_blocks(n_teacher, n_student) == picks


def test_a_deeper_student_than_teacher_is_refused() -> None:
    with pytest.raises(ModelError, match="cannot be taken"):
        teacher_blocks(3, 9)


def _randomised(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so a wrongly copied buffer changes the output."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


def test_the_student_computes_the_teacher_without_its_other_blocks() -> None:
    torch.manual_seed(0)
    teacher = _randomised(CifarResNet(56, 10))
    student = create_student("cifar_resnet20", 10, "dho").eval()
    state, picks = backbone_state_from_teacher(teacher, student.backbone.net)
    load_backbone_state(student.backbone, state, "the teacher")
    assert picks == [0, 4, 8]

    by_hand = CifarResNet(56, 10).eval()
    by_hand.load_state_dict(teacher.state_dict())
    for stage in ("layer1", "layer2", "layer3"):  # the teacher, its other blocks dropped
        setattr(by_hand, stage, nn.Sequential(*[getattr(teacher, stage)[i] for i in picks]))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(student.features(x), by_hand.forward_features(x))
        assert not torch.allclose(student.features(x), teacher.forward_features(x))  # blocks really were dropped


def test_the_student_owns_its_tensors() -> None:
    teacher, student = CifarResNet(20, 10), CifarResNet(8, 0)
    state, _ = backbone_state_from_teacher(teacher, student)
    student.load_state_dict(state, strict=False)
    with torch.no_grad():
        student.conv1.weight.add_(1.0)
    assert not torch.equal(student.conv1.weight, teacher.conv1.weight)


def test_networks_of_different_widths_are_refused() -> None:
    with pytest.raises(ModelError, match="same width"):
        backbone_state_from_teacher(CifarResNet(20, 10, width=16), CifarResNet(8, 0, width=8))


def test_init_and_weights_together_are_refused() -> None:
    from distill.train.config import StudentConfig

    with pytest.raises(ValueError, match="choose one"):
        StudentConfig(init="teacher", weights="backbone.pt")


def test_a_teacher_without_a_cifar_network_is_one_clear_error() -> None:
    from distill.train.config import TrainConfig
    from distill.train.loop import _teacher_network

    with pytest.raises(ValueError, match="needs a teacher to start from"):
        TrainConfig(data={"root": "x"}, method="ce", student={"init": "teacher"})
    cfg = TrainConfig(data={"root": "x"}, teacher={"name": "ViT-B-32"}, student={"init": "teacher"})
    with pytest.raises(ModelError, match="needs a cifar_resnet teacher built from its weights, got a object"):
        _teacher_network(object(), cfg)
    cfg = cfg.model_copy(update={"teacher_store": "store/"})
    with pytest.raises(ModelError, match="teacher_store: pass the teacher's weights instead"):
        _teacher_network(object(), cfg)


def test_the_headline_config_starts_its_student_from_its_teacher() -> None:
    """configs/cifar10_headline.yaml validates, and its teacher/student pair can be built one from the other."""
    from pathlib import Path

    from distill.config import load_config
    from distill.train import TrainConfig

    cfg = load_config(TrainConfig, Path(__file__).resolve().parents[2] / "configs" / "cifar10_headline.yaml")
    assert cfg.student.init == "teacher" and cfg.teacher.name == "cifar_resnet56"
    student = create_student(cfg.student.arch, 10, cfg.method)
    _, picks = backbone_state_from_teacher(CifarResNet(56, 10), student.backbone.net)
    assert picks == [0, 4, 8]
