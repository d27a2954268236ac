"""Teachers: CIFAR ResNets, timm classifiers and open_clip zero-shot models behind one interface, plus a
disk cache of their outputs on un-augmented images.

    teacher = create_teacher(TeacherConfig(name="cifar_resnet56", weights=path), splits.class_names)
    logits, info = teacher_logits_for(teacher, splits.unlabeled, cache_dir)   # row i = splits.unlabeled[i]

Importing the package does not import torch (so CLI modules can use :class:`TeacherConfig`); the rest loads
on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import TeacherConfig, TeacherKind

_LAZY = {
    "Teacher": ".base", "file_digest": ".base", "read_class_names": ".base",
    "CifarResNetTeacher": ".classifiers", "TimmTeacher": ".classifiers", "DistillTeacher": ".classifiers", "CIFAR10_CLASSES": ".classifiers",
    "OpenClipTeacher": ".open_clip_teacher",
    "create_teacher": ".factory", "resolve_kind": ".factory",
    "CacheInfo": ".cache", "teacher_logits_for": ".cache", "teacher_embeddings_for": ".cache", "store_path": ".cache",
    "resolve_device": "._device",
    "load_templates": ".prompts", "load_descriptions": ".prompts", "build_prompts": ".prompts",
}

__all__ = ["TeacherConfig", "TeacherKind", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
