"""Blend search: picks the right alpha/beta, reports test accuracy, and the prob-vs-logit counterexample."""

from __future__ import annotations

import pytest
import torch

from distill.blend import ALPHAS, BETAS, grid_correct, logit_blend, prob_blend, search_blends


def test_grid_is_method_md_grid():
    assert len(ALPHAS) == 21 and ALPHAS[0] == 0.0 and ALPHAS[-1] == 1.0 and ALPHAS[10] == 0.5
    assert BETAS == (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 4.0)


def test_counterexample_prob_blend_is_not_the_logit_blend():
    """docs/method.md: alpha=0.5, beta=1, h_ce=(5,0,3), h_kd=(-5,2,1.5)."""
    h_ce, h_kd = torch.tensor([[5.0, 0.0, 3.0]]), torch.tensor([[-5.0, 2.0, 1.5]])
    assert prob_blend(h_ce, h_kd, 0.5, 1.0).argmax(-1).item() == 0
    assert logit_blend(h_ce, h_kd, 0.5, 1.0).argmax(-1).item() == 2
    assert prob_blend(h_ce, h_kd, 0.5, 1.0).sum().item() == pytest.approx(1.0)


def test_grid_matches_loop():
    g = torch.Generator().manual_seed(0)
    ce, kd, y = torch.randn(50, 4, generator=g), torch.randn(50, 4, generator=g) * 3, torch.randint(0, 4, (50,), generator=g)
    for kind, fn in (("prob", prob_blend), ("logit", logit_blend)):
        grid = grid_correct(kind, ce, kd, y, chunk=7)
        for i, a in enumerate(ALPHAS):
            for j, b in enumerate(BETAS):
                assert grid[i, j].item() == int((fn(ce, kd, a, b).argmax(-1) == y).sum())


def _constructed(n_per: int = 40, seed: int = 0):
    """Two heads that are each right on a different half; only a narrow band of blends gets both halves.

    Half A: h_ce confidently right (margin 4), h_kd weakly wrong (margin 1).
    Half B: h_ce weakly wrong (margin 1), h_kd right with margin m. Logit blend correct on both halves iff
    4a > (1-a)/b and m(1-a)/b > a, e.g. with m=0.5 only alpha in (~0.04..) with small beta, tight band.
    """
    C = 3
    y = torch.arange(2 * n_per) % C
    ce = torch.zeros(2 * n_per, C)
    kd = torch.zeros(2 * n_per, C)
    for i in range(2 * n_per):
        right, wrong = int(y[i]), (int(y[i]) + 1) % C
        if i < n_per:
            ce[i, right], kd[i, wrong] = 4.0, 1.0
        else:
            ce[i, wrong], kd[i, right] = 1.0, 3.0
    return ce, kd, y


def test_search_picks_a_blend_that_gets_both_halves_and_reports_test():
    ce, kd, y = _constructed()
    res = search_blends(ce, kd, y, ce, kd, y)
    assert res["heads_val_acc"] == {"ce": 0.5, "kd": 0.5}
    for kind in ("prob", "logit"):
        assert res[kind]["val_acc"] == 1.0 and res[kind]["test_acc"] == 1.0
        a, b = res[kind]["alpha"], res[kind]["beta"]
        fn = prob_blend if kind == "prob" else logit_blend
        assert (fn(ce, kd, a, b).argmax(-1) == y).all()
    # logit blend: need 4a > (1-a)/b and 3(1-a)/b > a; at b=1 both hold for a in (0.2, 0.75) -> tie-break to 0.5
    assert (res["logit"]["alpha"], res["logit"]["beta"]) == (0.5, 1.0)
    assert res["agreement_prob_logit"] == 1.0
    assert set(res) >= {"prob", "logit", "heads_val_acc", "heads_test_acc", "agreement_prob_logit"}


def test_search_selects_on_val_not_test():
    """Val prefers the ce head (alpha=1), test prefers kd: the selection must follow val."""
    ce, kd, y = _constructed()
    n = y.numel() // 2
    val = (ce[:n], kd[:n], y[:n])     # only half A: ce right -> alpha near 1 wins
    test = (ce[n:], kd[n:], y[n:])    # half B: kd right
    res = search_blends(*val, *test)
    assert res["logit"]["val_acc"] == 1.0
    assert res["logit"]["test_acc"] < 1.0 or res["logit"]["alpha"] < 0.75
    assert res["heads_test_acc"] == {"ce": 0.0, "kd": 1.0}


def test_unique_optimum_is_found():
    """Only beta=4 with alpha=0 separates these classes in the prob blend (kd logits need cooling)."""
    h_kd = torch.tensor([[3.0, 2.9, 0.0], [0.0, 3.0, 2.9]])
    h_ce = torch.tensor([[0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])  # always wrong and confident
    y = torch.tensor([0, 1])
    res = search_blends(h_ce, h_kd, y)
    assert res["prob"]["val_acc"] == 1.0 and res["prob"]["alpha"] < 0.5
    assert res["heads_test_acc"] is None and res["prob"]["test_acc"] is None


# -- one blend for everyone: numpy, the tie rules, and every caller agreeing -------------------------------
def _rec(p_acc, l_acc, p=(0.2, 2.0), lo=(0.35, 1.0)):
    return {"prob": {"alpha": p[0], "beta": p[1], "val_acc": p_acc}, "logit": {"alpha": lo[0], "beta": lo[1], "val_acc": l_acc}}


@pytest.mark.parametrize("blend,want", [
    (_rec(0.9, 0.8), "prob"),
    (_rec(0.8, 0.9), "logit"),
    (_rec(0.5, 0.5), "logit"),            # equal recorded accuracy: the one-Linear logit blend
    (_rec(None, None), "logit"),          # nothing to compare: logit
    (_rec(None, 0.1), "logit"),           # only one has an accuracy: that one
    (_rec(0.1, None), "prob"),
    ({"prob": {"alpha": 0.3, "beta": 1.0}}, "prob"),
])
def test_best_recorded_blend_and_its_tie_rule(blend, want):
    from distill.blend import choose_blend

    assert choose_blend(blend).blend == want


def test_export_and_bench_describe_the_same_blend():
    """export folds, and edge_bench benchmarks, the blend chosen by the one rule (ties included)."""
    from edge_bench.backends import checkpoint_blend
    from export.fold import choose_blend as export_choice

    for blend in (_rec(0.9, 0.8), _rec(0.8, 0.9), _rec(0.5, 0.5), _rec(None, None), _rec(0.1, None)):
        a, b = export_choice({"blend": blend}, None), checkpoint_blend({"blend": blend})
        assert (a.blend, a.alpha, a.beta) == (b.blend, b.alpha, b.beta)
    d = checkpoint_blend({"blend": None})
    assert (d.blend, d.alpha, d.beta) == ("prob", 0.5, 1.0)


def test_grid_tie_goes_to_the_neutral_blend():
    """Every grid point is equally right: the search returns alpha = 0.5, beta = 1."""
    import numpy as np

    from distill.blend import search_blend

    h = np.eye(3, dtype=np.float32) * 5
    assert search_blend(h, h, np.arange(3), "logit")[:2] == (0.5, 1.0)
    assert search_blend(h, h, np.arange(3), "prob")[:2] == (0.5, 1.0)


def test_blend_module_is_numpy_only_and_matches_the_runtime():
    """distill.blend imports without torch; the runtime's two-head post-processing is the same function."""
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np

    code = ("import sys, distill.blend; bad = [m for m in ('torch', 'timm') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
    from distill.blend import blend_probs, logit_blend, prob_blend, softmax
    from export import runtime

    assert runtime.blend_probs is blend_probs
    rng = np.random.default_rng(0)
    ce, kd = rng.normal(size=(8, 5)), rng.normal(size=(8, 5)) * 3
    np.testing.assert_allclose(blend_probs(ce, kd, "prob", 0.3, 2.0), prob_blend(ce, kd, 0.3, 2.0), atol=0)
    np.testing.assert_allclose(blend_probs(ce, kd, "logit", 0.3, 2.0), softmax(logit_blend(ce, kd, 0.3, 2.0)), atol=0)
    # torch tensors (the training loop's CPU logits) give the same numbers as numpy
    t = torch.from_numpy(ce.astype(np.float32)), torch.from_numpy(kd.astype(np.float32))
    np.testing.assert_array_equal(prob_blend(*t, 0.3, 2.0), prob_blend(ce, kd, 0.3, 2.0))


def test_torch_inputs_with_grad_and_half_precision_are_accepted():
    ce = torch.randn(6, 4, requires_grad=True)
    kd = torch.randn(6, 4).half()
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    from distill.blend import accuracy, blend_scores

    want = accuracy(blend_scores("prob", ce.detach().numpy(), kd.float().numpy(), 0.5, 0.5), y.numpy())
    assert accuracy(blend_scores("prob", ce, kd, 0.5, 0.5), y) == want
