"""``create_teacher``: one entry point for every teacher kind; ``kind="auto"`` infers it from the name."""

from __future__ import annotations

import logging
import re
from typing import Sequence

from pydantic import ValidationError

from ..errors import ConfigError, ModelError
from ..preprocess import PreprocessSpec
from .base import Teacher
from .config import TeacherConfig

log = logging.getLogger(__name__)


def resolve_kind(cfg: TeacherConfig) -> str:
    """``auto``: a distill checkpoint as weights -> distill; cifar_resnet<N> -> cifar_resnet; open_clip
    names/configs -> open_clip; timm names -> timm."""
    if cfg.kind != "auto":
        return cfg.kind
    from .classifiers import is_distill_checkpoint

    if cfg.weights and is_distill_checkpoint(cfg.weights):
        return "distill"
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
    elif kind == "distill":
        from .classifiers import DistillTeacher

        teacher = DistillTeacher(cfg, dataset_class_names)
    elif kind == "open_clip":
        from .open_clip_teacher import OpenClipTeacher

        teacher = OpenClipTeacher(cfg, dataset_class_names)
    else:  # pragma: no cover - pydantic restricts kind
        raise ModelError(f"unknown teacher kind {kind!r}")
    if cfg.preprocess:
        teacher.preprocess = override_preprocess(teacher.preprocess, cfg.preprocess, f"teacher {teacher.name}")
    teacher.align_to(dataset_class_names)
    teacher.requires_grad_(False)
    return teacher.eval()


def override_preprocess(native: PreprocessSpec, override: dict, what: str) -> PreprocessSpec:
    """``native`` with some fields replaced; a new ``size`` alone keeps the resize/crop ratio. A size other than
    the one the weights were trained at is allowed (a warning, not a silent accuracy loss)."""
    fields = dict(override)
    unknown = sorted(set(fields) - set(PreprocessSpec.model_fields))
    if unknown:
        raise ConfigError(f"unknown teacher.preprocess field(s) {', '.join(unknown)}; "
                          f"choose from {', '.join(PreprocessSpec.model_fields)}")
    if "size" in fields and "resize_size" not in fields:
        fields["resize_size"] = max(int(fields["size"]), round(int(fields["size"]) * native.resize_size / native.size))
    try:
        spec = PreprocessSpec.model_validate(native.model_dump() | fields)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "preprocess"
        raise ConfigError(f"invalid teacher.preprocess.{loc}: {first['msg']}") from None
    if spec.size != native.size:
        log.warning("%s runs at %d px but its weights were trained/evaluated at %d px: expect lower accuracy "
                    "(drop teacher.preprocess.size to use its own)", what, spec.size, native.size)
    return spec
