"""Loss values against hand computations and against timm's LogitDistillationTask weighting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill.losses import ce_loss, kd_loss, method_loss


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation():
    s, t, T = [1.0, 2.0, 0.5], [3.0, -1.0, 0.0], 2.0
    p_t, p_s = _softmax([x / T for x in t]), _softmax([x / T for x in s])
    expected = T * T * sum(a * math.log(a / b) for a, b in zip(p_t, p_s))
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), T)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_is_batchmean_and_zero_for_equal_logits():
    s = torch.randn(5, 7)
    assert kd_loss(s, s.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(5, 7)
    per_row = [kd_loss(s[i:i + 1], t[i:i + 1], 2.0).item() for i in range(5)]
    assert kd_loss(s, t, 2.0).item() == pytest.approx(sum(per_row) / 5, rel=1e-5)


def test_ce_loss_hand_value():
    logits = torch.tensor([[2.0, 0.0, 1.0]])
    expected = -math.log(_softmax([2.0, 0.0, 1.0])[2])
    assert ce_loss(logits, torch.tensor([2])).item() == pytest.approx(expected, rel=1e-6)


def _outs(g, n, c, heads):
    return {h: torch.randn(n, c, generator=g) for h in heads}


def test_method_losses_follow_method_md():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 1])
    tl, tu = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ol, ou = _outs(g, 4, 3, ("ce", "kd", "shared")), _outs(g, 4, 3, ("ce", "kd", "shared"))
    lam, T = 0.3, 2.0

    dho = method_loss("dho", ol, y, tl, ou, tu, lam, T)
    want = lam * ce_loss(ol["ce"], y) + (1 - lam) * (kd_loss(ol["kd"], tl, T) + kd_loss(ou["kd"], tu, T))
    assert dho.total.item() == pytest.approx(want.item(), rel=1e-6)
    assert (dho.ce + dho.kd).item() == pytest.approx(want.item(), rel=1e-6)

    shared = method_loss("ce+kd", ol, y, tl, ou, tu, lam, T)
    want = lam * ce_loss(ol["shared"], y) + (1 - lam) * (kd_loss(ol["shared"], tl, T) + kd_loss(ou["shared"], tu, T))
    assert shared.total.item() == pytest.approx(want.item(), rel=1e-6)

    ce = method_loss("ce", ol, y, None, None, None, lam, T)
    assert ce.total.item() == pytest.approx(ce_loss(ol["ce"], y).item()) and ce.kd is None

    kd = method_loss("kd", ol, y, tl, ou, tu, lam, T)
    assert kd.total.item() == pytest.approx((kd_loss(ol["kd"], tl, T) + kd_loss(ou["kd"], tu, T)).item(), rel=1e-6)
    assert kd.ce is None

    with pytest.raises(ValueError):
        method_loss("nope", ol, y, tl)


def test_ce_plus_kd_matches_timm_logit_distillation_task():
    """On a labeled-only batch our single-head ce+kd equals timm's complementary w*task + (1-w)*distill."""
    distillation = pytest.importorskip("timm.task.distillation")
    torch.manual_seed(0)

    class Net(nn.Module):
        pretrained_cfg = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        num_classes, in_chans = 5, 3

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 4 * 4, 5)

        def forward(self, x):
            return self.fc(x.flatten(1))

    student, teacher = Net(), Net()
    task = distillation.LogitDistillationTask(student, teacher, criterion=nn.CrossEntropyLoss(),
                                              task_loss_weight=0.5, temperature=2.0, verbose=False)
    x, y = torch.randn(6, 3, 4, 4), torch.randint(0, 5, (6,))
    ref = task(x, y)["loss"]
    with torch.no_grad():
        t = teacher(task.teacher.normalize_input(x, task.student_mean, task.student_std))
    ours = method_loss("ce+kd", {"shared": student(x)}, y, t, None, None, lambda_=0.5, T=2.0)
    assert ours.total.item() == pytest.approx(ref.item(), rel=1e-5)
