"""The embedding student: backbone -> Linear(d -> D_teacher) -> L2-normalise.

It is an ordinary :class:`~distill.models.Student` with a single head named ``embed`` of width D (so the
checkpoint format, ``student_from_checkpoint`` and the export's head handling all apply unchanged);
:func:`embed` adds the normalisation and :class:`EmbeddingModel` wraps it as a module whose output is the unit
embedding (what the exported graph computes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import Student, create_student

EMBED_HEAD = "embed"


def create_embedding_student(arch: str, embed_dim: int, weights: str | Path | None = None, **arch_kwargs: Any) -> Student:
    return create_student(arch, embed_dim, heads=(EMBED_HEAD,), weights=weights, **arch_kwargs)


def is_embedding_student(student: Student) -> bool:
    return student.head_names == (EMBED_HEAD,)


def embed(student: Student, x: torch.Tensor) -> torch.Tensor:
    """(N, D) L2-normalised student embeddings."""
    return F.normalize(student(x)[EMBED_HEAD].float(), dim=-1)


class EmbeddingModel(nn.Module):
    """``x -> normalize(W z + b)``: the embedding student as a single-output module (for export)."""

    def __init__(self, student: Student) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.student.heads[EMBED_HEAD]
        return F.normalize(head(self.student.features(x)), dim=-1)
