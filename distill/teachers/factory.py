"""``create_teacher``: one entry point for every teacher kind; ``kind="auto"`` infers it from the name."""

from __future__ import annotations

import re
from typing import Sequence

from ..errors import ModelError
from .base import Teacher
from .config import TeacherConfig


def resolve_kind(cfg: TeacherConfig) -> str:
    """``auto``: cifar_resnet<N> -> cifar_resnet; open_clip names/configs -> open_clip; timm names -> timm."""
    if cfg.kind != "auto":
        return cfg.kind
    if re.match(r"^cifar_resnet\d+$", cfg.name):
        return "cifar_resnet"
    from .open_clip_teacher import is_open_clip_name

    if is_open_clip_name(cfg.name):
        return "open_clip"
    import timm

    if timm.is_model(cfg.name.removeprefix("timm/")):
        return "timm"
    raise ModelError(f"unknown teacher model {cfg.name!r}: not a CIFAR ResNet (cifar_resnet56), "
                     "an open_clip model (ViT-B-32) nor a timm model (resnet50)")


def create_teacher(cfg: TeacherConfig, dataset_class_names: Sequence[str]) -> Teacher:
    """Build the teacher (CPU, eval mode, no grads) with outputs in the dataset's class order.

    Classifiers must know the same class names as the dataset (reordered when only the order differs,
    otherwise a DataError); zero-shot teachers take the dataset's names as their classes.
    """
    kind = resolve_kind(cfg)
    teacher: Teacher
    if kind == "cifar_resnet":
        from .classifiers import CifarResNetTeacher

        teacher = CifarResNetTeacher(cfg, dataset_class_names)
    elif kind == "timm":
        from .classifiers import TimmTeacher

        teacher = TimmTeacher(cfg, dataset_class_names)
    elif kind == "open_clip":
        from .open_clip_teacher import OpenClipTeacher

        teacher = OpenClipTeacher(cfg, dataset_class_names)
    else:  # pragma: no cover - pydantic restricts kind
        raise ModelError(f"unknown teacher kind {kind!r}")
    teacher.align_to(dataset_class_names)
    teacher.requires_grad_(False)
    return teacher.eval()
