"""The four vl-distill losses against hand-computed values and their skipping rules."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.vl.losses import cls_loss, im_cst_loss, mse_loss, vl_loss, vlprox_loss

W_ALL = {"cls": 1.0, "mse": 1.0, "imcst": 1.0, "vlprox": 1.0}


def _unit(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_cls_is_cross_entropy_over_cosine_over_tau() -> None:
    E = torch.eye(3, 4)
    s = F.normalize(torch.tensor([[1.0, 0.2, 0.0, 0.0], [0.0, 0.0, 1.0, 0.5]]), dim=-1)
    y = torch.tensor([0, 2])
    want = F.cross_entropy(s @ E.T / 0.07, y)
    assert float(cls_loss(s, E, y, 0.07)) == pytest.approx(float(want))
    assert float(cls_loss(E[:2], E, torch.tensor([0, 1]), 0.07)) < 1e-5  # perfectly aligned: ~0


def test_mse_is_two_minus_two_cos_for_unit_vectors() -> None:
    s, t = _unit(6, 16, seed=1), _unit(6, 16, seed=2)
    cos = (s * t).sum(-1)
    assert float(mse_loss(s, t)) == pytest.approx(float((2 - 2 * cos).mean()), rel=1e-5)
    assert float(mse_loss(s, s)) == 0.0


def test_im_cst_is_symmetric_and_small_when_matched() -> None:
    s, t = _unit(8, 16, seed=3), _unit(8, 16, seed=4)
    logits = s @ t.T / 0.07
    target = torch.arange(8)
    want = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    assert float(im_cst_loss(s, t, 0.07)) == pytest.approx(float(want), rel=1e-5)
    assert float(im_cst_loss(s, t, 0.07)) == pytest.approx(float(im_cst_loss(t, s, 0.07)), rel=1e-5)
    assert float(im_cst_loss(s, s, 0.07)) < float(im_cst_loss(s, t, 0.07))


def test_vlprox_skips_images_the_teacher_gets_wrong_and_uses_top_k() -> None:
    E = torch.eye(4, 4)
    t = F.normalize(torch.tensor([[1.0, 0.5, 0.1, 0.0], [0.0, 1.0, 0.3, 0.0], [0.0, 0.0, 0.0, 1.0]]), dim=-1)
    y = torch.tensor([0, 1, 2])  # the teacher's argmax on row 2 is class 3: wrong, skipped
    s = _unit(3, 4, seed=5)
    loss, kept = vlprox_loss(s, t, E, y, 0.07, k=2)
    assert kept == 2
    want = 0.0
    for i in (0, 1):
        tl = t[i] @ E.T / 0.07
        top = tl.topk(2).indices
        p_t = (tl[top]).softmax(-1)
        p_s = (s[i] @ E.T / 0.07)[top].softmax(-1)
        want += float((p_t * (p_t.log() - p_s.log())).sum())
    assert float(loss) == pytest.approx(want / 2, rel=1e-4)
    # the student matching the teacher exactly: zero; nobody kept: zero with a gradient path
    assert float(vlprox_loss(t, t, E, y, 0.07, 2)[0]) == pytest.approx(0.0, abs=1e-6)
    s_req = s.clone().requires_grad_()
    zero, n = vlprox_loss(s_req, t, E, torch.tensor([3, 3, 0]), 0.07, 2)
    assert n == 0 and float(zero.detach()) == 0.0
    zero.backward()


def test_vl_loss_weights_unlabeled_rows_and_errors() -> None:
    E = _unit(3, 8, seed=6)
    s, t = _unit(6, 8, seed=7).requires_grad_(), _unit(6, 8, seed=8)
    y = torch.tensor([0, 1, 2, -1, -1, -1])
    terms = vl_loss(s, t, y, E, W_ALL, 0.07, 5)
    assert set(terms.parts) == {"cls", "mse", "imcst", "vlprox"}
    assert float(terms.total) == pytest.approx(sum(float(v) for v in terms.parts.values()), rel=1e-5)
    assert float(terms.parts["cls"]) == pytest.approx(float(cls_loss(s[:3], E, y[:3], 0.07)), rel=1e-5)
    assert float(terms.parts["mse"]) == pytest.approx(float(mse_loss(s, t)), rel=1e-5)  # all rows
    terms.total.backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()

    only_cls = vl_loss(s, t, y, E, {"cls": 1.0, "mse": 0.0, "imcst": 0.0, "vlprox": 0.0})
    assert set(only_cls.parts) == {"cls"}
    weighted = vl_loss(s, t, y, E, {"cls": 0.5, "mse": 2.0, "imcst": 0.0, "vlprox": 0.0})
    assert float(weighted.total) == pytest.approx(0.5 * float(weighted.parts["cls"]) + 2 * float(weighted.parts["mse"]),
                                                  rel=1e-5)
    with pytest.raises(ValueError, match="every loss weight is 0"):
        vl_loss(s, t, y, E, {"cls": 0.0})
    with pytest.raises(ValueError, match="embedding sizes differ"):
        vl_loss(s, t, y, _unit(3, 4), W_ALL)
    assert not math.isnan(float(vl_loss(s, t, torch.full((6,), -1), E, W_ALL).total))  # unlabeled-only batch
