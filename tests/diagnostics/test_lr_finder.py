"""Learning-rate range test: restoration, divergence against the quadratic's 2/λ_max, rules."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn

from descentlab.diagnostics.lr_finder import lr_range_test, smooth_losses, suggest_lrs

matplotlib.use("Agg")


def _regression(seed=0, n=64, d=6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.linspace(0.3, 2.0, d)
    y = x @ torch.randn(d, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def test_model_and_optimizer_are_restored():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = _regression()
    for _ in range(3):  # some optimizer state to restore
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = {
        k: {n: t.clone() for n, t in s.items()} for k, s in opt.state_dict()["state"].items()
    }
    lr_range_test(model, opt, nn.functional.mse_loss, [(x, y)], num_steps=30)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    after = opt.state_dict()
    assert after["param_groups"][0]["lr"] == 3e-3
    for k, s in after["state"].items():
        for n, t in s.items():
            torch.testing.assert_close(t, opt_before[k][n], rtol=0, atol=0)
    assert not model.training


def test_divergence_and_suggestions_against_quadratic_stability_limit():
    # Full-batch GD on least squares: the loss is a quadratic with Hessian (2/n)·XᵀX; GD is
    # stable iff lr < 2/λ_max. The sweep must not stop before that and must suggest below it.
    x, y = _regression()
    lam_max = float(torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max())
    limit = 2 / lam_max
    model = nn.Linear(6, 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(
        model, opt, nn.functional.mse_loss, [(x, y)], start_lr=1e-4, end_lr=10, num_steps=100
    )
    assert res.diverged
    assert res.lrs[-1] > limit
    for rule, lr in res.suggestions.items():
        assert 1e-4 < lr < limit, rule
    assert res.suggestion("minimum/10") < res.suggestion("steepest") * 10


def test_smoothing_is_bias_corrected_ema():
    xs = [3.0, 1.0, 2.0, 5.0]
    beta = 0.9
    a, want = 0.0, []
    for t, x in enumerate(xs, 1):
        a = beta * a + (1 - beta) * x
        want.append(a / (1 - beta**t))
    assert smooth_losses(xs, beta) == pytest.approx(want)
    assert smooth_losses(xs, 0.0) == xs


def test_rules_on_a_hand_made_curve():
    lrs = [10 ** (-5 + i / 10) for i in range(51)]  # 1e-5 .. 1
    # flat, then a fall between 1e-3 and 1e-1 (steepest at 1e-2), then a rise
    ys = [
        2.0 - math.tanh(2 * (math.log10(lr) + 2)) + (max(0.0, math.log10(lr) + 1) * 5) for lr in lrs
    ]
    s = suggest_lrs(lrs, ys, skip_start=0)
    assert s["steepest"] == pytest.approx(1e-2, rel=0.3)
    best = min(range(len(ys)), key=ys.__getitem__)
    assert s["minimum/10"] == pytest.approx(lrs[best] / 10)
    assert lrs[0] <= s["valley"] <= lrs[best]


def test_plot_and_errors():
    x, y = _regression()
    model = nn.Linear(6, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    res = lr_range_test(model, opt, nn.functional.mse_loss, [(x, y)], num_steps=20, end_lr=1.0)
    ax = res.plot()
    assert len(ax.lines) >= 2 + len(res.suggestions)
    with pytest.raises(ValueError, match="end_lr"):
        lr_range_test(model, opt, nn.functional.mse_loss, [(x, y)], start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="smoothing"):
        lr_range_test(model, opt, nn.functional.mse_loss, [(x, y)], smoothing=1.0)
    with pytest.raises(ValueError, match="num_steps"):
        lr_range_test(model, opt, nn.functional.mse_loss, [(x, y)], num_steps=2)
    with pytest.raises(ValueError, match="rule"):
        res.suggestion("median")


def test_one_shot_batches_that_run_out_give_a_clear_error():
    x, y = _regression()
    model = nn.Linear(6, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="batches ran out after 5 steps"):
        lr_range_test(model, opt, nn.functional.mse_loss, iter([(x, y)] * 5), num_steps=20)
    for p, b in zip(model.parameters(), before, strict=True):
        torch.testing.assert_close(p.detach(), b)
