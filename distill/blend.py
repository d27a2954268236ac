"""The DHO inference blends, their alpha/beta grid search and the choice between them (docs/method.md, section 1).

* probability blend: ``p = alpha * softmax(h_ce) + (1 - alpha) * softmax(h_kd / beta)``
* logit blend:       ``h = alpha * h_ce + (1 - alpha) / beta * h_kd``  (exactly one linear layer when folded)

This is the one home of the blend: training (the search at the end of a run, the quick alpha = beta = 0.5 check),
``distill eval``, export (folding, the fallback search, the verification reference), ``export.runtime`` (two-head
artifacts) and ``edge_bench`` (PyTorch checkpoints) all call it. It is numpy only, so the torch-free runtime can
use it; torch callers pass CPU tensors (``np.asarray`` converts them without a copy).

Both blends are searched separately on the VALIDATION split over alpha in {0, 0.05, ..., 1} and beta in
{0.5, 0.75, 1, 1.25, 1.5, 2, 4}; the chosen pair is then reported on the separate TEST split, because picking
the best of 2 x 21 x 7 blends inflates accuracy on the split it was picked on. The search is vectorised over
alpha (and chunked over rows to bound memory).

Tie rules (one each, used everywhere):

* within one blend's grid, ties on validation accuracy go to the pair closest to the neutral blend
  (alpha = 0.5, beta = 1), then to the smaller alpha, then the smaller beta;
* between the two blends (:func:`choose_blend`, "the best recorded blend"), the higher recorded validation
  accuracy wins; on equal accuracy (or when neither records one) the **logit** blend wins, because it folds into
  exactly one Linear layer. This is the rule export has always applied, so no exported artifact changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

ALPHAS: tuple[float, ...] = tuple(round(i * 0.05, 2) for i in range(21))
BETAS: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0)
KINDS = ("prob", "logit")
BlendName = Literal["logit", "prob"]
#: The blend used when nothing is recorded and nothing can be searched (DHO's neutral default).
DEFAULT_KIND, DEFAULT_ALPHA, DEFAULT_BETA = "prob", 0.5, 1.0
#: Working-set bound for the grid search: rows per chunk are chosen so alpha x rows x classes stays below this.
_GRID_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class BlendChoice:
    """One blend with its parameters and the reason it was chosen (printed by export, stored by edge_bench)."""

    blend: BlendName
    alpha: float
    beta: float
    why: str
    val_acc: float | None = None


def _np(x: Any) -> np.ndarray:
    """An array from a numpy array, a list or a torch tensor (any device, with or without grad; torch not imported)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu()
        x = x.float() if getattr(x, "is_floating_point", lambda: False)() else x
        return x.numpy()
    return np.asarray(x)


def _f32(x: Any) -> np.ndarray:
    return np.asarray(_np(x), dtype=np.float32)


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown blend {kind!r}; choose from {', '.join(KINDS)}")


# -- the formulas ------------------------------------------------------------------------------------------
def softmax(x: Any, axis: int = -1) -> np.ndarray:
    """Numerically stable float32 softmax."""
    x = _f32(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def prob_blend(h_ce: Any, h_kd: Any, alpha: float, beta: float) -> np.ndarray:
    """Blended class probabilities (N, C)."""
    return alpha * softmax(h_ce) + (1 - alpha) * softmax(_f32(h_kd) / beta)


def logit_blend(h_ce: Any, h_kd: Any, alpha: float, beta: float) -> np.ndarray:
    """Blended logits (N, C): the folded single linear layer's output."""
    return alpha * _f32(h_ce) + (1 - alpha) / beta * _f32(h_kd)


def blend_scores(kind: str, h_ce: Any, h_kd: Any, alpha: float, beta: float) -> np.ndarray:
    """Scores to rank classes by: probabilities for ``prob``, logits for ``logit`` (same argmax as probabilities)."""
    check_kind(kind)
    return prob_blend(h_ce, h_kd, alpha, beta) if kind == "prob" else logit_blend(h_ce, h_kd, alpha, beta)


def blend_probs(h_ce: Any, h_kd: Any, kind: str, alpha: float, beta: float) -> np.ndarray:
    """Class probabilities (N, C) float32 of either blend (the logit blend softmaxed): what a deployed model outputs."""
    check_kind(kind)
    if kind == "prob":
        return prob_blend(h_ce, h_kd, alpha, beta).astype(np.float32, copy=False)
    return softmax(logit_blend(h_ce, h_kd, alpha, beta))


def _rate(hits: np.ndarray) -> float:
    """Mean of a boolean vector as a float32 ratio (what the torch implementation recorded, bit for bit)."""
    return float(np.float32(np.count_nonzero(hits)) / np.float32(hits.size))


def accuracy(scores: Any, labels: Any) -> float:
    """Top-1 accuracy of (N, C) scores; NaN for an empty split."""
    y = _np(labels).reshape(-1)
    if y.size == 0:
        return float("nan")
    return _rate(_np(scores).argmax(-1) == y)


# -- the grid search ---------------------------------------------------------------------------------------
def grid_correct(
    kind: str,
    h_ce: Any,
    h_kd: Any,
    labels: Any,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
    chunk: int = 4096,
) -> np.ndarray:
    """Number of correct predictions for every (alpha, beta): a (len(alphas), len(betas)) int64 array."""
    check_kind(kind)
    h_ce, h_kd, y = _f32(h_ce), _f32(h_kd), _np(labels).astype(np.int64).reshape(-1)
    a = np.asarray(alphas, dtype=np.float32).reshape(-1, 1, 1)
    out = np.zeros((len(alphas), len(betas)), dtype=np.int64)
    step = max(1, min(int(chunk), _GRID_ELEMENTS // max(1, len(alphas) * h_ce.shape[-1])))
    for start in range(0, y.size, step):
        ce, kd, yy = h_ce[start:start + step], h_kd[start:start + step], y[start:start + step]
        base = softmax(ce) if kind == "prob" else ce
        for j, beta in enumerate(betas):
            other = softmax(kd / beta) if kind == "prob" else kd / beta
            mixed = a * base + (1 - a) * other          # (A, n, C)
            out[:, j] += (mixed.argmax(-1) == yy).sum(-1)
    return out


def best_grid_point(correct: np.ndarray, alphas: Sequence[float] = ALPHAS,
                    betas: Sequence[float] = BETAS) -> tuple[int, int]:
    """(i, j) of the most correct grid point; ties go to the pair closest to (alpha 0.5, beta 1), then lower i, j."""
    correct = np.asarray(correct)
    ties = np.argwhere(correct == correct.max()).tolist()
    return min(ties, key=lambda ij: (abs(alphas[ij[0]] - 0.5) + abs(betas[ij[1]] - 1.0), ij[0], ij[1]))


def search_blend(h_ce: Any, h_kd: Any, labels: Any, kind: str, alphas: Sequence[float] = ALPHAS,
                 betas: Sequence[float] = BETAS) -> tuple[float, float, float]:
    """Grid-search one blend on labelled logits; returns (alpha, beta, accuracy at that point)."""
    n = _np(labels).size
    if n == 0:
        raise ValueError("the blend search needs labelled rows")
    i, j = best_grid_point(grid_correct(kind, h_ce, h_kd, labels, alphas, betas), alphas, betas)
    alpha, beta = float(alphas[i]), float(betas[j])
    return alpha, beta, accuracy(blend_scores(kind, h_ce, h_kd, alpha, beta), labels)


def search_blends(
    val_ce: Any,
    val_kd: Any,
    val_labels: Any,
    test_ce: Any = None,
    test_kd: Any = None,
    test_labels: Any = None,
    alphas: Sequence[float] = ALPHAS,
    betas: Sequence[float] = BETAS,
) -> dict[str, Any]:
    """Grid-search both blends on validation, report them on test; returns the checkpoint's ``blend`` dict."""
    n_val = _np(val_labels).size
    if n_val == 0:
        raise ValueError("the blend search needs a non-empty validation split")
    has_test = test_labels is not None and _np(test_labels).size > 0
    result: dict[str, Any] = {}
    for kind in KINDS:
        alpha, beta, val_acc = search_blend(val_ce, val_kd, val_labels, kind, alphas, betas)
        test_acc = accuracy(blend_scores(kind, test_ce, test_kd, alpha, beta), test_labels) if has_test else None
        result[kind] = {"alpha": alpha, "beta": beta, "val_acc": val_acc, "test_acc": test_acc}
    result["heads_val_acc"] = {"ce": accuracy(val_ce, val_labels), "kd": accuracy(val_kd, val_labels)}
    result["heads_test_acc"] = (
        {"ce": accuracy(test_ce, test_labels), "kd": accuracy(test_kd, test_labels)} if has_test else None
    )
    # Top-1 agreement of the two chosen blends (what folding the heads into one layer changes), on val and test.
    result["agreement_prob_logit"] = _agreement(result, val_ce, val_kd)
    result["agreement_prob_logit_test"] = _agreement(result, test_ce, test_kd) if has_test else None
    result["grid"] = {"alphas": list(map(float, alphas)), "betas": list(map(float, betas)), "selected_on": "val",
                      "n_val": int(n_val), "n_test": int(_np(test_labels).size) if has_test else 0}
    return result


def _agreement(result: Mapping[str, Any], h_ce: Any, h_kd: Any) -> float:
    p = blend_scores("prob", h_ce, h_kd, result["prob"]["alpha"], result["prob"]["beta"]).argmax(-1)
    q = blend_scores("logit", h_ce, h_kd, result["logit"]["alpha"], result["logit"]["beta"]).argmax(-1)
    return _rate(p == q)


# -- the choice between the two blends ---------------------------------------------------------------------
def recorded_blend(blend: Any, kind: str) -> dict[str, Any] | None:
    """The ``kind`` entry of a checkpoint's ``blend`` dict when it has alpha and beta, else None."""
    entry = blend.get(kind) if isinstance(blend, Mapping) else None
    if isinstance(entry, Mapping) and "alpha" in entry and "beta" in entry:
        return dict(entry)
    return None


def better_kind(val_acc: Mapping[str, float | None]) -> tuple[str, str]:
    """(kind, why) among the kinds in ``val_acc`` (kind -> accuracy or None): the documented tie rule.

    Higher accuracy wins; a kind with an accuracy beats one without; equal (or no) accuracy: logit.
    """
    have = [k for k in ("logit", "prob") if k in val_acc]
    if not have:
        raise ValueError("no blend to choose from")
    scored = [k for k in have if val_acc[k] is not None]
    if len(have) == 1 or len(scored) < len(have):
        k = scored[0] if scored else have[0]
        return k, f"only the {k} blend has a recorded validation accuracy"
    la, pa = float(val_acc["logit"]), float(val_acc["prob"])  # type: ignore[arg-type]
    if pa > la:
        return "prob", f"prob blend val acc {pa:.4f} > logit blend {la:.4f} (exact, with the softmax mix in the graph)"
    if la > pa:
        return "logit", f"logit blend val acc {la:.4f} > prob blend {pa:.4f} (exactly one Linear layer)"
    return "logit", f"equal val acc ({la:.4f}); the logit blend is exactly one Linear layer, so it is preferred"


def choose_blend(blend: Any, requested: str | None = None) -> BlendChoice | None:
    """The best recorded blend of a checkpoint's ``blend`` dict (or the ``requested`` one); None if none is usable."""
    if requested is not None:
        check_kind(requested)
        e = recorded_blend(blend, requested)
        if e is None:
            return None
        return BlendChoice(requested, float(e["alpha"]), float(e["beta"]),  # type: ignore[arg-type]
                           f"--blend {requested} requested", e.get("val_acc"))
    rec = {k: e for k in ("logit", "prob") if (e := recorded_blend(blend, k)) is not None}
    if not rec:
        return None
    kind, why = better_kind({k: e.get("val_acc") for k, e in rec.items()})
    e = rec[kind]
    return BlendChoice(kind, float(e["alpha"]), float(e["beta"]), why, e.get("val_acc"))  # type: ignore[arg-type]


def default_blend(why: str = "no blend recorded; DHO default alpha=0.5, beta=1") -> BlendChoice:
    return BlendChoice(DEFAULT_KIND, DEFAULT_ALPHA, DEFAULT_BETA, why)  # type: ignore[arg-type]


__all__ = ["ALPHAS", "BETAS", "KINDS", "BlendChoice", "accuracy", "best_grid_point", "better_kind", "blend_probs",
           "blend_scores", "check_kind", "choose_blend", "default_blend", "grid_correct", "logit_blend",
           "prob_blend", "recorded_blend", "search_blend", "search_blends", "softmax"]
