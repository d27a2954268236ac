"""Losses for DHO and its baselines (docs/method.md, section 1).

``kd_loss``  = T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch ("batchmean").

Per step, with a labeled half ``x_l`` (labels ``y``, teacher logits ``t_l``) and an unlabeled half ``x_u`` (``t_u``):

=========  ========  ===========================================================================
method     heads     loss
=========  ========  ===========================================================================
``dho``    ce, kd    lambda * CE(h_ce(x_l), y) + (1 - lambda) * [KD(h_kd(x_l), t_l) + KD(h_kd(x_u), t_u)]
``ce+kd``  shared    the same weighting, both terms on the one shared head
``ce``     ce        CE(h_ce(x_l), y)                        (labeled images only)
``kd``     kd        KD(h_kd(x_l), t_l) + KD(h_kd(x_u), t_u)  (labels ignored)
=========  ========  ===========================================================================

The single-objective baselines use weight 1 (AdamW is nearly invariant to a constant loss scale).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

METHODS = ("dho", "ce", "kd", "ce+kd")

#: Which head each loss term reads, per method.
CE_HEAD = {"dho": "ce", "ce": "ce", "ce+kd": "shared"}
KD_HEAD = {"dho": "kd", "kd": "kd", "ce+kd": "shared"}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` with batch-mean reduction, computed in float32."""
    log_p_s = F.log_softmax(student_logits.float() / T, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float() / T, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


class LossTerms(NamedTuple):
    """``total`` is what we backpropagate; ``ce`` and ``kd`` are its *weighted* parts (either may be None)."""

    total: torch.Tensor
    ce: torch.Tensor | None
    kd: torch.Tensor | None


def method_loss(
    method: str,
    out_l: dict[str, torch.Tensor],
    labels: torch.Tensor,
    teacher_l: torch.Tensor | None,
    out_u: dict[str, torch.Tensor] | None = None,
    teacher_u: torch.Tensor | None = None,
    lambda_: float = 0.5,
    T: float = 2.0,
) -> LossTerms:
    """The per-step loss of ``method`` given the student's head outputs on the labeled and unlabeled halves."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    ce = kd = None
    if method in CE_HEAD:
        ce = ce_loss(out_l[CE_HEAD[method]], labels)
    if method in KD_HEAD:
        head = KD_HEAD[method]
        if teacher_l is None:
            raise ValueError(f"method {method!r} needs teacher logits")
        kd = kd_loss(out_l[head], teacher_l, T)
        if out_u is not None and teacher_u is not None and teacher_u.numel():
            kd = kd + kd_loss(out_u[head], teacher_u, T)
    if ce is not None and kd is not None:  # dho, ce+kd: complementary weighting
        ce, kd = lambda_ * ce, (1.0 - lambda_) * kd
        return LossTerms(ce + kd, ce, kd)
    total = ce if ce is not None else kd
    assert total is not None
    return LossTerms(total, ce, kd)
