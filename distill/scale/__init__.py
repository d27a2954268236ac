"""Scaling out: teacher outputs for a whole image set in a memory-mapped store (``distill cache-teacher``),
WebDataset-style shards (:mod:`distill.data.shards`), distributed (torchrun) helpers and benchmarks.

    store = open_teacher_store("runs/stores/clip-l14-logits")   # numpy memmaps, shared by workers and ranks
    t = store.lookup(batch_digests)                               # (B, C) float32, no teacher in the loop

Importing the package does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .teacher_store import TeacherStore, as_digest_array, open_teacher_store

_LAZY = {
    "cache_teacher": ".cache_teacher", "folder_image_set": ".cache_teacher", "shard_image_set": ".cache_teacher",
    "samples_image_set": ".cache_teacher",
    "CacheReport": ".cache_teacher", "default_store_path": ".cache_teacher",
}

__all__ = ["TeacherStore", "as_digest_array", "open_teacher_store", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
