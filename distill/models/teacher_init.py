"""A student backbone started from its teacher's weights: the teacher's stem and evenly spaced residual blocks.

DistilBERT (Sanh et al., 2019) initialises its student from one teacher layer in two; the same works for the CIFAR
ResNets, whose stages keep their widths at every depth. A ResNet-20 (3 blocks a stage) taken from a ResNet-56 (9 a
stage) gets blocks 0, 4 and 8 of each stage: block 0 always (it changes the width and the stride), the rest spread
evenly so the student keeps the teacher's early and late processing. The heads start fresh, as with any backbone
weights (:func:`distill.models.load_backbone_state`); BatchNorm statistics are re-estimated by training anyway.
"""

from __future__ import annotations

import torch

from ..errors import ModelError
from .cifar_resnet import CifarResNet

STAGES = ("layer1", "layer2", "layer3")


def teacher_blocks(n_teacher: int, n_student: int) -> list[int]:
    """Which of a stage's ``n_teacher`` blocks fill the student's ``n_student``: evenly spaced, first and last kept."""
    if not 1 <= n_student <= n_teacher:
        raise ModelError(f"a stage of {n_student} block(s) cannot be taken from one of {n_teacher}")
    if n_student == 1:
        return [0]
    return [round(i * (n_teacher - 1) / (n_student - 1)) for i in range(n_student)]


def backbone_state_from_teacher(teacher: CifarResNet,
                                student: CifarResNet) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The student backbone's state dict filled from ``teacher`` (stem + :func:`teacher_blocks` of each stage) and
    the block indices taken. Refuses networks of different widths (their tensors would not fit)."""
    if teacher.conv1.weight.shape != student.conv1.weight.shape or teacher.num_features != student.num_features:
        raise ModelError(f"cannot start a student of width {student.conv1.out_channels} from a teacher of width "
                         f"{teacher.conv1.out_channels}: student.init=teacher needs CIFAR ResNets of the same width")
    picks = teacher_blocks(len(teacher.layer1), len(student.layer1))
    state = {f"{name}.{k}": v.clone() for name in ("conv1", "bn1")
             for k, v in getattr(teacher, name).state_dict().items()}
    for stage in STAGES:
        for j, i in enumerate(picks):
            for k, v in getattr(teacher, stage)[i].state_dict().items():
                state[f"{stage}.{j}.{k}"] = v.clone()
    return state, picks
