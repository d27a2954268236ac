"""The vl-distill losses (Li et al., ICCV 2023; docs/method.md section 2). All embeddings are L2-normalised rows.

=============  ============================================================================================
term           definition (s: student embeddings, t: teacher image embeddings, E: seen-class embeddings)
=============  ============================================================================================
``cls``        CE(s E^T / tau, y)                        labeled images
``mse``        mean_i |s_i - t_i|^2  (= 2 - 2 cos for unit vectors; summed over dimensions, so its scale
               does not shrink with the embedding size)   all images
``imcst``      [CE(s t^T / tau, i) + CE(t s^T / tau, i)] / 2, in-batch positives on the diagonal   all images
               (under DDP the batch is the global one: rows are gathered from every rank)
``vlprox``     KL(softmax(t E_k^T / tau) || softmax(s E_k^T / tau)) over the teacher's top-k seen labels E_k,
               only on labeled images the teacher classifies correctly (argmax over the seen labels)
=============  ============================================================================================

The total is the weighted sum; weights of 0 skip a term entirely (no compute).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F


def cls_loss(s: torch.Tensor, class_emb: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    return F.cross_entropy(s.float() @ class_emb.T / tau, y)


def mse_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (s.float() - t.float()).pow(2).sum(-1).mean()


def _all_rows(x: torch.Tensor, with_grad: bool) -> tuple[torch.Tensor, int]:
    """Every rank's rows in rank order and where this rank's start; ``(x, 0)`` outside torch.distributed.

    Ranks hold equal batches (``RankSliceSampler``). ``with_grad``: the gather is differentiable, so each rank's
    loss also reaches the rows of the others (DDP's gradient average then equals the full-batch gradient)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    if with_grad:
        from torch.distributed.nn.functional import all_gather

        parts = list(all_gather(x.contiguous()))
    else:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
    return torch.cat(parts), dist.get_rank() * len(x)


def im_cst_loss(s: torch.Tensor, t: torch.Tensor, tau: float) -> torch.Tensor:
    """In-batch contrastive loss over the *global* batch: under DDP each rank's rows are contrasted with every
    rank's rows (as one process with the whole batch would), not only with its own share of negatives."""
    s, t = s.float(), t.float()
    s_all, offset = _all_rows(s, with_grad=True)
    t_all, _ = _all_rows(t.detach(), with_grad=False)  # the teacher is fixed
    target = torch.arange(len(s), device=s.device) + offset
    return 0.5 * (F.cross_entropy(s @ t_all.T / tau, target) + F.cross_entropy(t @ s_all.T / tau, target))


def vlprox_loss(s: torch.Tensor, t: torch.Tensor, class_emb: torch.Tensor, y: torch.Tensor, tau: float,
                k: int) -> tuple[torch.Tensor, int]:
    """KL(teacher || student) over the teacher's top-k labels; returns (loss, number of images kept)."""
    t_logits = t.float() @ class_emb.T / tau
    keep = t_logits.argmax(-1) == y
    n = int(keep.sum())
    if n == 0:
        return s.sum() * 0.0, 0
    k = min(k, class_emb.shape[0])
    top = t_logits[keep].topk(k, dim=-1).indices
    t_k = t_logits[keep].gather(1, top)
    s_k = (s.float()[keep] @ class_emb.T / tau).gather(1, top)
    loss = F.kl_div(F.log_softmax(s_k, -1), F.log_softmax(t_k, -1), reduction="batchmean", log_target=True)
    return loss, n


class VLLossTerms(NamedTuple):
    """``total`` is backpropagated; ``parts`` holds each unweighted term; ``vlprox_kept`` the images L_vlprox used."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    vlprox_kept: int


def vl_loss(
    s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, class_emb: torch.Tensor, weights: dict[str, float],
    tau: float = 0.07, k: int = 5,
) -> VLLossTerms:
    """The weighted vl-distill loss for one batch.

    ``s``, ``t``: (N, D) unit rows (student on the augmented image, teacher on the un-augmented one);
    ``y``: (N,) index into the rows of ``class_emb`` (the seen classes), ``-1`` for unlabeled images;
    ``class_emb``: (C_seen, D) unit rows.
    """
    if s.shape[-1] != class_emb.shape[-1] or s.shape != t.shape:
        raise ValueError(f"embedding sizes differ: student {tuple(s.shape)}, teacher {tuple(t.shape)}, "
                         f"classes {tuple(class_emb.shape)}")
    lab = y >= 0
    parts: dict[str, torch.Tensor] = {}
    kept = 0
    if weights.get("cls", 0) and bool(lab.any()):
        parts["cls"] = cls_loss(s[lab], class_emb, y[lab], tau)
    if weights.get("mse", 0):
        parts["mse"] = mse_loss(s, t)
    if weights.get("imcst", 0) and len(s) > 1:
        parts["imcst"] = im_cst_loss(s, t, tau)
    if weights.get("vlprox", 0) and bool(lab.any()):
        parts["vlprox"], kept = vlprox_loss(s[lab], t[lab], class_emb, y[lab], tau, k)
    if not parts:
        raise ValueError("vl_loss: every loss weight is 0 (or nothing in the batch to apply them to)")
    total = sum(weights[name] * v for name, v in parts.items())
    return VLLossTerms(total, parts, kept)  # type: ignore[arg-type]
