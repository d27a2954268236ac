"""Open-vocabulary evaluation of an embedding model (student or teacher), on pre-computed unit embeddings.

* ``seen_acc``: top-1 among the seen classes on seen-class test images (the classes trained on).
* ``unseen_zeroshot``: top-1 among the UNSEEN labels only, on unseen-class test images, through the class
  (text) embeddings; mean per-class accuracy (the paper's protocol).
* ``unseen_kshot``: k labeled images per unseen class (drawn from the unseen classes' non-test images) build a
  nearest-prototype classifier: prototype = re-normalised mean of the k unit embeddings, score = cosine. No
  training and no hyper-parameters, so teacher and students are compared on the representation alone. Mean
  per-class accuracy on the same unseen test images, averaged over ``trials`` seeded support draws.
* ``all_acc``: top-1 among all classes on all test images (generalised zero-shot, for reference).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _restrict(emb: torch.Tensor, labels: torch.Tensor, class_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose label is in ``class_ids`` and their labels re-indexed to positions in ``class_ids``."""
    size = max(max(class_ids), int(labels.max()) if len(labels) else 0) + 1
    lookup = torch.full((size,), -1, dtype=torch.long)
    lookup[torch.as_tensor(list(class_ids))] = torch.arange(len(class_ids))
    pos = lookup[labels.clamp(min=0)]
    keep = (labels >= 0) & (pos >= 0)
    return emb[keep], pos[keep]


def accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return float((scores.argmax(-1) == y).float().mean()) if len(y) else float("nan")


def mean_per_class_accuracy(scores: torch.Tensor, y: torch.Tensor, num_classes: int) -> float:
    pred = scores.argmax(-1)
    accs = [float((pred[y == c] == c).float().mean()) for c in range(num_classes) if bool((y == c).any())]
    return float(np.mean(accs)) if accs else float("nan")


def classify(emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Cosine scores (N, C) of unit embeddings against unit class embeddings."""
    return F.normalize(emb.float(), dim=-1) @ F.normalize(class_emb.float(), dim=-1).T


def seen_accuracy(emb: torch.Tensor, labels: torch.Tensor, class_emb: torch.Tensor, seen_ids: Sequence[int]) -> float:
    e, y = _restrict(emb, labels, seen_ids)
    return accuracy(classify(e, class_emb[list(seen_ids)]), y)


def zero_shot_accuracy(emb: torch.Tensor, labels: torch.Tensor, class_emb: torch.Tensor, ids: Sequence[int]) -> float:
    e, y = _restrict(emb, labels, ids)
    return mean_per_class_accuracy(classify(e, class_emb[list(ids)]), y, len(ids))


def kshot_accuracy(
    support_emb: torch.Tensor, support_labels: torch.Tensor, query_emb: torch.Tensor, query_labels: torch.Tensor,
    ids: Sequence[int], k: int, trials: int = 10, seed: int = 0,
) -> tuple[float, float]:
    """(mean, std over trials) of nearest-prototype mean per-class accuracy with k support images per class."""
    se, sy = _restrict(support_emb, support_labels, ids)
    qe, qy = _restrict(query_emb, query_labels, ids)
    se = F.normalize(se.float(), dim=-1)
    rng = np.random.default_rng(seed)
    accs = []
    for _ in range(trials):
        protos = []
        for c in range(len(ids)):
            rows = torch.nonzero(sy == c).flatten().numpy()
            if len(rows) < k:
                raise ValueError(f"k-shot: class {ids[c]} has {len(rows)} support images, fewer than k={k}")
            pick = rng.choice(rows, size=k, replace=False)
            protos.append(F.normalize(se[pick].mean(0), dim=-1))
        accs.append(mean_per_class_accuracy(classify(qe, torch.stack(protos)), qy, len(ids)))
    return float(np.mean(accs)), float(np.std(accs))


def open_vocab_metrics(
    test_emb: torch.Tensor, test_labels: torch.Tensor, class_emb: torch.Tensor, seen_ids: Sequence[int],
    unseen_ids: Sequence[int], support_emb: torch.Tensor | None = None, support_labels: torch.Tensor | None = None,
    k: int = 5, trials: int = 10, seed: int = 0,
) -> dict[str, Any]:
    """All metrics of the module docstring for one model; ``support_*`` may be None to skip k-shot."""
    out: dict[str, Any] = {
        "seen_acc": seen_accuracy(test_emb, test_labels, class_emb, seen_ids),
        "unseen_zeroshot": zero_shot_accuracy(test_emb, test_labels, class_emb, unseen_ids),
        "all_acc": accuracy(classify(test_emb, class_emb), test_labels),
    }
    if k and support_emb is not None and support_labels is not None:
        mean, std = kshot_accuracy(support_emb, support_labels, test_emb, test_labels, unseen_ids, k, trials, seed)
        out[f"unseen_{k}shot"], out[f"unseen_{k}shot_std"] = mean, std
    return out
