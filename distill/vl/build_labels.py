"""Compute a label set with a teacher: open_clip's text tower (new class names, optional descriptions), or a
classifier-as-VLM teacher's rows (only the classes it was trained on). Used by ``distill export labels``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ConfigError
from ..teachers.config import TeacherConfig
from .labelset import LabelSet


def teacher_for_labels(cfg: TeacherConfig, names: Sequence[str]):
    """The teacher as a VLM; classifiers keep their own class list (the label names are looked up in it)."""
    from ..teachers import create_teacher, resolve_kind
    from ..teachers.base import read_class_names
    from ..teachers.classifiers import CIFAR10_CLASSES
    from .vlm import as_vlm

    kind = resolve_kind(cfg)
    if kind == "open_clip":
        teacher = create_teacher(cfg, list(names))
    elif kind == "cifar_resnet":
        own = read_class_names(cfg.class_names_file) if cfg.class_names_file else CIFAR10_CLASSES
        teacher = create_teacher(cfg, own)
    else:
        if not cfg.class_names_file:
            raise ConfigError("a timm teacher needs --class-names-file (the names of its outputs, in order)")
        teacher = create_teacher(cfg, read_class_names(cfg.class_names_file))
    return as_vlm(teacher)


def build_labelset(cfg: TeacherConfig, names: Sequence[str], descriptions: Path | None = None,
                   tau: float = 0.07, embed_dim: int | None = None) -> LabelSet:
    """Class embeddings for ``names``; ``embed_dim`` (the model's) is checked before anything is written."""
    from ..teachers.prompts import load_descriptions

    vlm = teacher_for_labels(cfg, names)
    desc = load_descriptions(descriptions) if descriptions else {}
    emb = vlm.class_embeddings(list(names), desc)
    ls = LabelSet(list(names), emb.numpy(), tau, vlm.describe(),
                  {"from": "teacher", "templates": getattr(vlm, "templates", None),
                   "descriptions": str(descriptions) if descriptions else None})
    if embed_dim is not None:
        ls.check_fits(embed_dim)
    return ls
