"""The DHO inference blends and their alpha/beta grid search (method.md, section 1).

* probability blend: ``p = alpha * softmax(h_ce) + (1 - alpha) * softmax(h_kd / beta)``
* logit blend:       ``h = alpha * h_ce + (1 - alpha) / beta * h_kd``  (exactly one linear layer when folded)

Both are searched separately on the VALIDATION split over alpha in {0, 0.05, ..., 1} and beta in
{0.5, 0.75, 1, 1.25, 1.5, 2, 4}; the chosen pair is then reported on the separate TEST split, because picking
the best of 2 x 21 x 7 blends inflates accuracy on the split it was picked on. Head logits are computed once
by the caller; the search itself is vectorised over alpha (and chunked over rows to bound memory).

Ties on validation accuracy go to the pair closest to the neutral blend (alpha = 0.5, beta = 1).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

ALPHAS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
BETAS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0)
KINDS = ("prob", "logit")


def prob_blend(h_ce: torch.Tensor, h_kd: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Blended class probabilities (N, C)."""
    return alpha * h_ce.float().softmax(-1) + (1 - alpha) * (h_kd.float() / beta).softmax(-1)


def logit_blend(h_ce: torch.Tensor, h_kd: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Blended logits (N, C): the folded single linear layer's output."""
    return alpha * h_ce.float() + (1 - alpha) / beta * h_kd.float()


def blend_scores(kind: str, h_ce: torch.Tensor, h_kd: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    if kind == "prob":
        return prob_blend(h_ce, h_kd, alpha, beta)
    if kind == "logit":
        return logit_blend(h_ce, h_kd, alpha, beta)
    raise ValueError(f"unknown blend {kind!r}; choose from {', '.join(KINDS)}")


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    if labels.numel() == 0:
        return float("nan")
    return float((scores.argmax(-1) == labels).float().mean())


def grid_correct(
    kind: str,
    h_ce: torch.Tensor,
    h_kd: torch.Tensor,
    labels: torch.Tensor,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
    chunk: int = 4096,
) -> torch.Tensor:
    """Number of correct predictions for every (alpha, beta): a (len(alphas), len(betas)) int tensor."""
    h_ce, h_kd, labels = h_ce.float().cpu(), h_kd.float().cpu(), labels.long().cpu()
    a = torch.tensor(alphas, dtype=torch.float32).view(-1, 1, 1)
    out = torch.zeros(len(alphas), len(betas), dtype=torch.long)
    for start in range(0, labels.numel(), chunk):
        ce, kd, y = h_ce[start:start + chunk], h_kd[start:start + chunk], labels[start:start + chunk]
        base = ce.softmax(-1) if kind == "prob" else ce
        for j, beta in enumerate(betas):
            other = (kd / beta).softmax(-1) if kind == "prob" else kd / beta
            mixed = a * base + (1 - a) * other          # (A, n, C)
            out[:, j] += (mixed.argmax(-1) == y).sum(-1)
    return out


def _pick(correct: torch.Tensor, alphas: Sequence[float], betas: Sequence[float]) -> tuple[int, int]:
    best = correct.max()
    ties = (correct == best).nonzero().tolist()
    return min(ties, key=lambda ij: (abs(alphas[ij[0]] - 0.5) + abs(betas[ij[1]] - 1.0), ij[0], ij[1]))


def search_blends(
    val_ce: torch.Tensor,
    val_kd: torch.Tensor,
    val_labels: torch.Tensor,
    test_ce: torch.Tensor | None = None,
    test_kd: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
) -> dict[str, Any]:
    """Grid-search both blends on validation, report them on test; returns the checkpoint's ``blend`` dict."""
    n_val = val_labels.numel()
    if n_val == 0:
        raise ValueError("the blend search needs a non-empty validation split")
    has_test = test_labels is not None and test_labels.numel() > 0
    result: dict[str, Any] = {}
    for kind in KINDS:
        i, j = _pick(grid_correct(kind, val_ce, val_kd, val_labels, alphas, betas), alphas, betas)
        alpha, beta = float(alphas[i]), float(betas[j])
        entry: dict[str, Any] = {
            "alpha": alpha,
            "beta": beta,
            "val_acc": accuracy(blend_scores(kind, val_ce, val_kd, alpha, beta), val_labels),
            "test_acc": None,
        }
        if has_test:
            entry["test_acc"] = accuracy(blend_scores(kind, test_ce, test_kd, alpha, beta), test_labels)  # type: ignore[arg-type]
        result[kind] = entry
    result["heads_val_acc"] = {"ce": accuracy(val_ce, val_labels), "kd": accuracy(val_kd, val_labels)}
    result["heads_test_acc"] = (
        {"ce": accuracy(test_ce, test_labels), "kd": accuracy(test_kd, test_labels)}  # type: ignore[arg-type]
        if has_test else None
    )
    # Top-1 agreement of the two chosen blends (what folding the heads into one layer changes), on val and test.
    result["agreement_prob_logit"] = _agreement(result, val_ce, val_kd)
    result["agreement_prob_logit_test"] = _agreement(result, test_ce, test_kd) if has_test else None
    result["grid"] = {"alphas": list(map(float, alphas)), "betas": list(map(float, betas)),
                      "selected_on": "val", "n_val": int(n_val), "n_test": int(test_labels.numel()) if has_test else 0}
    return result


def _agreement(result: dict[str, Any], h_ce: torch.Tensor, h_kd: torch.Tensor) -> float:
    p = blend_scores("prob", h_ce, h_kd, result["prob"]["alpha"], result["prob"]["beta"]).argmax(-1)
    q = blend_scores("logit", h_ce, h_kd, result["logit"]["alpha"], result["logit"]["beta"]).argmax(-1)
    return float((p == q).float().mean())
