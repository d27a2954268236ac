"""The student: one backbone, a pooled feature z, and named linear heads on z.

DHO uses heads ``ce`` (supervised) and ``kd`` (distillation); the single-head baselines use one head
(``ce`` for CE-only, ``kd`` for KD-only, ``shared`` for CE+KD). Export folds ``ce`` and ``kd`` into one layer.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

HEADS_BY_METHOD: dict[str, tuple[str, ...]] = {
    "dho": ("ce", "kd"),
    "ce": ("ce",),
    "kd": ("kd",),
    "ce+kd": ("shared",),
}


class StudentSpec(BaseModel):
    """Everything needed to rebuild the student's module tree from a checkpoint (no code, just data)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: str
    num_classes: int
    heads: tuple[str, ...] = ("ce", "kd")
    feature_dim: int | None = None
    arch_kwargs: dict[str, Any] = {}


class Student(nn.Module):
    """Backbone + named linear heads on the same pooled feature."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, heads: Sequence[str]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a student needs at least one head")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.heads = nn.ModuleDict({name: nn.Linear(feature_dim, num_classes) for name in heads})

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward_heads(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(z) for name, head in self.heads.items()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.forward_heads(self.features(x))
