"""Open-vocabulary students (``--method vl-distill``; Li et al., ICCV 2023, docs/method.md section 2).

The student maps an image to a unit embedding in the teacher's space; classes are rows of a class-embedding
matrix (teacher text embeddings, or a classifier teacher's rows), so classes never trained on can be added
without retraining. Importing this package does not import torch (the CLI needs :class:`VLConfig`).
"""

from __future__ import annotations

import importlib
from typing import Any

from .classes import check_unique, read_labels_file, split_classes
from .config import VLConfig

_LAZY = {
    "VLTask": ".task", "EMBEDDING_FORMAT": ".task",
    "VLData": ".data", "restrict_splits": ".data",
    "EMBED_HEAD": ".model", "EmbeddingModel": ".model", "create_embedding_student": ".model", "embed": ".model",
    "is_embedding_student": ".model",
    "VLLossTerms": ".losses", "vl_loss": ".losses", "cls_loss": ".losses", "mse_loss": ".losses",
    "im_cst_loss": ".losses", "vlprox_loss": ".losses",
    "VisionLanguageTeacher": ".vlm", "OpenClipVLM": ".vlm", "ClassifierVLM": ".vlm", "as_vlm": ".vlm",
    "classifier_scoring_report": ".vlm",
    "open_vocab_metrics": ".evaluate", "kshot_accuracy": ".evaluate", "zero_shot_accuracy": ".evaluate",
    "seen_accuracy": ".evaluate", "mean_per_class_accuracy": ".evaluate",
}

__all__ = ["VLConfig", "check_unique", "read_labels_file", "split_classes", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
