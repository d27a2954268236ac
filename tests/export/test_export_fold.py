"""Folding math: the logit fold is one exact Linear layer; the prob graph equals the paper's probability blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.models import create_student
from export.errors import ExportError
from export.fold import (BlendChoice, ProbBlendFolded, TwoHead, Uint8Input, build_module, choose_blend,
                         folded_logit_linear, search_blend)
from export.runtime import blend_probs


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    s = create_student("cifar_resnet8", num_classes=10, method="dho").eval()
    with torch.no_grad():  # make the heads differ clearly
        s.heads["kd"].weight.mul_(3.0)
        s.heads["kd"].bias.add_(0.5)
    return s


@pytest.mark.parametrize("alpha,beta", [(0.5, 1.0), (0.3, 2.0), (0.0, 0.5), (1.0, 4.0), (0.85, 0.75)])
def test_logit_fold_is_the_logit_blend(student, alpha, beta):
    z = torch.randn(16, student.feature_dim, dtype=torch.float64)
    ce, kd = student.heads["ce"].double(), student.heads["kd"].double()
    lin = folded_logit_linear(ce, kd, alpha, beta).double()
    want = alpha * ce(z) + (1 - alpha) / beta * kd(z)
    assert torch.allclose(lin(z), want, atol=1e-6, rtol=0)
    student.float()


def test_logit_fold_module_matches_two_head_model(student):
    x = torch.randn(5, 3, 32, 32)
    module, plan = build_module(student, fold_heads=True, blend=BlendChoice("logit", 0.3, 2.0, "test"))
    assert plan.output_names == ("logits",) and plan.output_kind == "logits"
    with torch.no_grad():
        h = student(x)
        want = 0.3 * h["ce"] + 0.7 / 2.0 * h["kd"]
        assert torch.allclose(module(x), want, atol=1e-5)
    assert sum(isinstance(m, torch.nn.Linear) for m in module.modules()) == 1


def test_prob_graph_is_the_probability_blend(student):
    x = torch.randn(6, 3, 32, 32)
    module, plan = build_module(student, fold_heads=True, blend=BlendChoice("prob", 0.4, 1.5, "test"))
    assert isinstance(module, ProbBlendFolded) and plan.output_names == ("probs",) and plan.output_kind == "probs"
    assert module.head.out_features == 20
    with torch.no_grad():
        h = student(x)
        got = module(x).numpy()
    want = blend_probs(h["ce"].numpy(), h["kd"].numpy(), "prob", 0.4, 1.5)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-6)


def test_paper_counterexample_prob_blend_is_not_a_logit_average():
    h_ce, h_kd = np.array([[5.0, 0, 3]]), np.array([[-5.0, 2, 1.5]])
    p = blend_probs(h_ce, h_kd, "prob", 0.5, 1.0)
    lg = blend_probs(h_ce, h_kd, "logit", 0.5, 1.0)
    assert p.argmax() != lg.argmax()


def test_two_head_and_single_head_plans(student):
    module, plan = build_module(student, fold_heads=False, blend=None)
    assert isinstance(module, TwoHead) and plan.kind == "two_head" and plan.output_names == ("logits_ce", "logits_kd")
    single = create_student("cifar_resnet8", num_classes=10, method="ce+kd").eval()
    module, plan = build_module(single, fold_heads=False, blend=None)
    assert plan.kind == "student" and plan.head == "shared" and plan.output_names == ("logits",)
    with pytest.raises(ExportError, match="ce and kd"):
        build_module(single, fold_heads=True, blend=BlendChoice("logit", 0.5, 1.0, ""))


def test_uint8_wrapper_matches_normalize_uint8(student):
    from distill.preprocess import PreprocessSpec, normalize_uint8

    spec = PreprocessSpec()
    u8 = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    module, _ = build_module(student, fold_heads=True, blend=BlendChoice("logit", 0.5, 1.0, ""))
    with torch.no_grad():
        a = Uint8Input(module, spec)(torch.from_numpy(u8))
        b = module(torch.from_numpy(normalize_uint8(u8, spec)))
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_choose_blend_prefers_better_val_acc_and_says_why():
    ck = {"blend": {"prob": {"alpha": 0.5, "beta": 1.0, "val_acc": 0.9}, "logit": {"alpha": 0.4, "beta": 2.0, "val_acc": 0.8}}}
    c = choose_blend(ck, None)
    assert (c.blend, c.alpha, c.beta) == ("prob", 0.5, 1.0) and "0.9000 > logit" in c.why
    ck["blend"]["logit"]["val_acc"] = 0.95
    assert choose_blend(ck, None).blend == "logit"
    assert choose_blend(ck, "prob").blend == "prob"
    assert choose_blend({"blend": None}, None) is None
    with pytest.raises(ExportError):
        choose_blend(ck, "geometric")


def test_search_blend_finds_a_good_grid_point():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    h_ce = rng.normal(size=(200, 5))
    h_kd = rng.normal(size=(200, 5))
    h_kd[np.arange(200), labels] += 3.0  # the kd head is the informative one
    alpha, beta, acc = search_blend(h_ce, h_kd, labels, "logit")
    assert alpha < 0.5 and acc > 0.8
