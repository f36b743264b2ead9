"""Curvature numbers against exact Hessians (torch.autograd.functional.hessian + eigvalsh)."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.diagnostics.curvature import (
    HessianOperator,
    edge_of_stability,
    extreme_eigenvalues,
    hutchinson_trace,
    lanczos,
    power_iteration,
    saddle_check,
    spectral_density,
)
from descentlab.diagnostics.findings import FindingKind, Severity


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def test_hvp_matches_exact_hessian(small_net):
    H = small_net.exact_hessian()
    op = HessianOperator(small_net.loss, small_net.params)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(op.matvec(v), H @ v)
    assert op.size == H.shape[0]


def test_power_iteration_top_k_by_magnitude_within_1_percent(small_net):
    H = small_net.exact_hessian()
    exact = torch.linalg.eigvalsh(H)
    by_mag = exact[exact.abs().argsort(descending=True)]
    op = HessianOperator(small_net.loss, small_net.params)
    vals, vecs = power_iteration(op, k=3, max_iter=2000, tol=1e-10)
    for got, want in zip(vals, by_mag[:3], strict=True):
        assert _rel(got, float(want)) < 0.01
    assert abs(float(vecs[0] @ vecs[1])) < 1e-3


def test_lanczos_extreme_eigenvalues_within_1_percent(make_net):
    for seed in range(3):
        net = make_net(seed=seed, sizes=(5, 8, 4))
        exact = torch.linalg.eigvalsh(net.exact_hessian())
        op = HessianOperator(net.loss, net.params)
        ev = extreme_eigenvalues(op, k=3)
        for got, want in zip(ev["largest"], exact.flip(0)[:3], strict=True):
            assert _rel(got, float(want)) < 0.01
        assert _rel(ev["smallest"][0], float(exact[0])) < 0.01


def test_lanczos_tridiagonal_is_projection_of_operator():
    A = torch.randn(12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    A = A + A.T
    T, Q = lanczos(lambda v: A @ v, 12, 6)
    torch.testing.assert_close(Q @ Q.T, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(T, Q @ A @ Q.T)


def test_hutchinson_trace_within_its_stated_error(small_net):
    exact = float(torch.trace(small_net.exact_hessian()))
    op = HessianOperator(small_net.loss, small_net.params)
    for seed in range(3):
        est = hutchinson_trace(op, samples=200, seed=seed)
        lo, hi = est.interval(3.0)
        assert lo <= exact <= hi
        assert est.stderr > 0


def test_hutchinson_stderr_matches_rademacher_variance_formula(small_net):
    H = small_net.exact_hessian()
    off = H - torch.diag(torch.diag(H))
    sd = math.sqrt(2 * float((off**2).sum()))
    est = hutchinson_trace(HessianOperator(small_net.loss, small_net.params), samples=400)
    assert est.stderr == pytest.approx(sd / math.sqrt(400), rel=0.2)


def test_slq_moments_exact_for_low_degree(small_net):
    H = small_net.exact_hessian()
    op = HessianOperator(small_net.loss, small_net.params)
    dens = spectral_density(op, probes=1, steps=5, seed=3)
    v = op.random(torch.Generator().manual_seed(3), "rademacher").to(torch.float64)
    v /= v.norm()
    for j in range(0, 9):
        want = float(v @ torch.linalg.matrix_power(H, j) @ v)
        assert dens.moment(j) == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_slq_density_integrates_to_one_and_matches_exact(small_net):
    H = small_net.exact_hessian()
    exact = torch.linalg.eigvalsh(H)
    op = HessianOperator(small_net.loss, small_net.params)
    dens = spectral_density(op, probes=30, steps=op.size, seed=0)
    sigma = 0.05
    grid = torch.linspace(float(exact.min()) - 1, float(exact.max()) + 1, 2001, dtype=torch.float64)
    phi = dens.density(grid, sigma)
    assert float(torch.trapezoid(phi, grid)) == pytest.approx(1.0, abs=1e-3)
    # With as many steps as parameters each probe's nodes are H's eigenvalues; the mean of
    # the Rademacher weights is exactly 1/n, so the density tends to the exact one.
    z = (grid[:, None] - exact[None, :]) / sigma
    ref = torch.exp(-0.5 * z**2).sum(1) / (len(exact) * sigma * math.sqrt(2 * math.pi))
    assert float(torch.trapezoid((phi - ref).abs(), grid)) < 0.5
    assert dens.moment(1) == pytest.approx(float(torch.trace(H)) / len(exact), rel=0.15)


def test_saddle_of_two_layer_linear_net_at_zero_is_reported():
    # L(w1, w2) = (w2·w1 − 1)²: at zero init the gradient vanishes and H = [[0, −2], [−2, 0]].
    w = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    op = HessianOperator(lambda: (w[1] * w[0] - 1) ** 2, [w])
    f = saddle_check(op)
    assert f is not None and f.kind is FindingKind.SADDLE_POINT
    assert f.evidence["lambda_min"] == pytest.approx(-2.0)
    assert f.evidence["lambda_max"] == pytest.approx(2.0)


def test_minimum_and_slope_are_not_saddles():
    w = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    assert saddle_check(HessianOperator(lambda: (w[1] * w[0] - 1) ** 2, [w])) is None
    x = torch.tensor([0.5, 0.5], dtype=torch.float64, requires_grad=True)
    # x² − y² away from the origin: negative curvature but a large gradient.
    assert saddle_check(HessianOperator(lambda: x[0] ** 2 - x[1] ** 2, [x])) is None


def test_edge_of_stability_thresholds():
    assert edge_of_stability(10.0, 0.1) is None
    near = edge_of_stability(10.0, 0.19)
    assert near is not None and near.severity is Severity.INFO
    over = edge_of_stability(10.0, 0.25)
    assert over is not None and over.severity is Severity.WARNING
    assert over.evidence["product"] == pytest.approx(2.5)


def test_edge_of_stability_predicts_gd_divergence_on_quadratic():
    # GD on ½ xᵀAx: diverges iff lr·λ_max > 2 — the check must agree with the simulation.
    A = torch.diag(torch.tensor([4.0, 1.0], dtype=torch.float64))
    x0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    for lr in (0.3, 0.45, 0.55, 0.7):
        x = x0.clone()
        for _ in range(200):
            x = x - lr * (A @ x)
        diverged = bool(x.norm() > 10)
        finding = edge_of_stability(4.0, lr)
        assert diverged == (finding is not None and finding.severity is Severity.WARNING)


def test_bad_arguments_are_named(small_net):
    op = HessianOperator(small_net.loss, small_net.params)
    with pytest.raises(ValueError, match="k must be"):
        power_iteration(op, k=0)
    with pytest.raises(ValueError, match="which"):
        extreme_eigenvalues(op, which="middle")
    with pytest.raises(ValueError, match="samples"):
        hutchinson_trace(op, samples=1)
    with pytest.raises(ValueError, match="v must have shape"):
        op.matvec(torch.zeros(3))
    with pytest.raises(ValueError, match="lr"):
        edge_of_stability(1.0, -1.0)


def test_spectral_density_plot(small_net):
    import matplotlib

    matplotlib.use("Agg")
    op = HessianOperator(small_net.loss, small_net.params)
    ax = spectral_density(op, probes=2, steps=10).plot()
    assert ax.get_xlabel() == "eigenvalue" and ax.lines


def test_non_scalar_loss_is_refused():
    w = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"scalar tensor, got \(3,\)"):
        HessianOperator(lambda: w * 2, [w])
