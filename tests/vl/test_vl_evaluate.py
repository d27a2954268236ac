"""Open-vocabulary metrics on synthetic embeddings with known answers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.vl.evaluate import kshot_accuracy, mean_per_class_accuracy, open_vocab_metrics, zero_shot_accuracy


def _clustered(n_per: int, centers: torch.Tensor, noise: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ys = torch.arange(len(centers)).repeat_interleave(n_per)
    return F.normalize(centers[ys] + noise * torch.randn(len(ys), centers.shape[1], generator=g), dim=-1), ys


def test_mean_per_class_is_not_plain_accuracy() -> None:
    scores = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])
    y = torch.tensor([0, 0, 0, 0])
    assert mean_per_class_accuracy(scores, y, 2) == pytest.approx(0.75)
    y2 = torch.tensor([0, 0, 1, 1])
    assert mean_per_class_accuracy(scores, y2, 2) == pytest.approx((1.0 + 0.5) / 2)


def test_open_vocab_metrics_perfect_and_among_unseen_only() -> None:
    centers = torch.eye(6, 8)
    emb, y = _clustered(20, centers, 0.05)
    m = open_vocab_metrics(emb, y, centers, [0, 1, 2], [3, 4, 5], emb, y, k=5, trials=3)
    assert m["seen_acc"] == 1.0 and m["unseen_zeroshot"] == 1.0 and m["unseen_5shot"] == 1.0 and m["all_acc"] == 1.0
    # class embeddings of the unseen classes useless (all equal): zero-shot at chance, k-shot unaffected
    bad = centers.clone()
    bad[3:] = F.normalize(torch.ones(3, 8), dim=-1)
    m2 = open_vocab_metrics(emb, y, bad, [0, 1, 2], [3, 4, 5], emb, y, k=5, trials=3)
    assert m2["seen_acc"] == 1.0 and m2["unseen_zeroshot"] == pytest.approx(1 / 3, abs=0.01)
    assert m2["unseen_5shot"] == 1.0
    # seen rows never compete with unseen labels: a seen class embedding close to an unseen image is ignored
    lure = centers.clone()
    lure[0] = centers[3]
    assert zero_shot_accuracy(emb, y, lure, [3, 4, 5]) == 1.0


def test_kshot_needs_k_support_images() -> None:
    centers = torch.eye(2, 4)
    emb, y = _clustered(3, centers, 0.0)
    with pytest.raises(ValueError, match="fewer than k=5"):
        kshot_accuracy(emb, y, emb, y, [0, 1], k=5)
    mean, std = kshot_accuracy(emb, y, emb, y, [0, 1], k=2, trials=4)
    assert mean == 1.0 and std == 0.0
