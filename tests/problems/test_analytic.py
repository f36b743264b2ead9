"""Analytic functions against hand-computed values, gradients, Hessians and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import rosen, rosen_der, rosen_hess

from descentlab.problems import get_problem
from descentlab.problems.analytic import FUNCTIONS, NoisyQuadratic, get_function

# name -> (point, value, gradient), all computed by hand from the formulas.
HAND = {
    "square": ((1.5, -2.0), 6.25, (3.0, -4.0)),
    "ill_conditioned_quadratic": ((2.0, 1.0), 2.4, (0.4, 4.0)),
    "saddle": ((1.0, 2.0), -3.0, (2.0, -4.0)),
    # x³ − 3xy² at (1, 2): 1 − 12; ∇ = (3x² − 3y², −6xy) = (−9, −12)
    "monkey_saddle": ((1.0, 2.0), -11.0, (-9.0, -12.0)),
    # (1 − x)² + 100(y − x²)² at (0, 1): 1 + 100; ∇ = (−2(1 − x) − 400x(y − x²), 200(y − x²))
    "rosenbrock": ((0.0, 1.0), 101.0, (-2.0, 200.0)),
    # at (0.5, 0.25): 20 + 0.25 + 10 + 0.0625 − 0 = 30.3125; ∇ = 2t + 20π sin 2πt
    "rastrigin": ((0.5, 0.25), 30.3125, (1.0, 0.5 + 20 * math.pi)),
    # Beale at (1, 1): (1.5)² + (2.25)² + (2.625)²; ∂x = Σ 2 rᵢ (yⁱ − 1) = 0,
    # ∂y = 2·1.5·1 + 2·2.25·2 + 2·2.625·3
    "beale": ((1.0, 1.0), 1.5**2 + 2.25**2 + 2.625**2, (0.0, 3.0 + 9.0 + 15.75)),
    # Himmelblau at (0, 0): 121 + 49; ∇ = (4x·a + 2b, 2a + 4y·b) with a = −11, b = −7
    "himmelblau": ((0.0, 0.0), 170.0, (-14.0, -22.0)),
}


def test_every_function_is_covered():
    assert set(HAND) == set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(HAND))
def test_value_and_gradient_by_hand(name):
    (x, y), value, grad = HAND[name]
    xy = torch.tensor([x, y], dtype=torch.float64, requires_grad=True)
    f = FUNCTIONS[name](xy)
    f.backward()
    assert f.item() == pytest.approx(value, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(xy.grad, torch.tensor(grad, dtype=torch.float64))


@pytest.mark.parametrize("name", [n for n, f in FUNCTIONS.items() if f.minima])
def test_known_minima_are_stationary_with_known_value(name):
    fn = FUNCTIONS[name]
    for point in fn.minima:
        xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        f = fn(xy)
        f.backward()
        assert f.item() == pytest.approx(fn.min_value, abs=1e-9)
        assert xy.grad.abs().max() < 1e-4
        hess = torch.autograd.functional.hessian(lambda p, fn=fn: fn(p), xy.detach())
        assert torch.linalg.eigvalsh(hess).min() > 0  # a strict local minimum


@pytest.mark.parametrize("point", [(-1.2, 1.0), (0.3, -0.7), (1.5, 2.0)])
def test_rosenbrock_matches_scipy(point):
    xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    f = FUNCTIONS["rosenbrock"](xy)
    f.backward()
    assert f.item() == pytest.approx(rosen(np.array(point)), rel=1e-12)
    np.testing.assert_allclose(xy.grad.numpy(), rosen_der(np.array(point)), rtol=1e-12)
    hess = torch.autograd.functional.hessian(FUNCTIONS["rosenbrock"], xy.detach())
    np.testing.assert_allclose(hess.numpy(), rosen_hess(np.array(point)), rtol=1e-12)


def test_saddle_hessians_match_the_seed_article():
    zero = torch.zeros(2, dtype=torch.float64)
    h = torch.autograd.functional.hessian(FUNCTIONS["saddle"], zero)
    torch.testing.assert_close(h, torch.tensor([[2.0, 0.0], [0.0, -2.0]], dtype=torch.float64))
    h = torch.autograd.functional.hessian(FUNCTIONS["monkey_saddle"], zero)
    torch.testing.assert_close(h, torch.zeros(2, 2, dtype=torch.float64))


def test_starts_lie_inside_bounds():
    for fn in FUNCTIONS.values():
        (x0, x1), (y0, y1) = fn.bounds
        assert x0 < fn.start[0] < x1 and y0 < fn.start[1] < y1
        for mx, my in fn.minima:
            assert x0 <= mx <= x1 and y0 <= my <= y1


def test_get_function_rejects_unknown_names():
    with pytest.raises(ValueError, match="valid 2-D functions: beale"):
        get_function("banana")
    assert get_function("beale") is FUNCTIONS["beale"]


def test_task_position_and_evaluate():
    task = get_problem("himmelblau").build(0)
    p = task.position()
    assert p.shape == (2,)
    value = float(FUNCTIONS["himmelblau"](p))
    assert task.evaluate() == {"loss": value, "train_loss": value, "val_loss": value}
    assert get_problem("noisy_quadratic").build(0).position is None


def test_seed_perturbs_the_start_deterministically():
    p = get_problem("beale")
    a, b, c = p.build(1).position(), p.build(1).position(), p.build(2).position()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert (a - torch.tensor(FUNCTIONS["beale"].start)).abs().max() < 0.5


def test_gradient_descent_step_is_the_hand_step():
    task = get_problem("ill_conditioned_quadratic").build(0)
    (w,) = task.parameters()
    x, y = w.detach().clone().tolist()
    loss = task.train_step(torch.optim.SGD(task.parameters(), lr=0.1))
    assert loss == pytest.approx(0.1 * x**2 + 2 * y**2, rel=1e-6)
    torch.testing.assert_close(w.detach(), torch.tensor([x - 0.1 * 0.2 * x, y - 0.1 * 4 * y]))


def test_gradient_descent_escapes_the_saddle_only_off_axis():
    problem = get_problem("saddle")
    task = problem.build(0)
    opt = torch.optim.SGD(task.parameters(), lr=0.1)
    for _ in range(problem.steps):
        task.train_step(opt)
    assert problem.reached(task.evaluate()["loss"])
    fn = FUNCTIONS["saddle"]
    w = torch.nn.Parameter(torch.tensor([fn.start[0], 0.0]))  # on the stable axis y = 0
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(problem.steps):
        opt.zero_grad()
        fn(w).backward()
        opt.step()
    assert w[1].item() == 0.0 and fn(w).item() >= 0.0


def test_noisy_quadratic_gradients_are_unbiased_with_covariance_noise2_h():
    model = NoisyQuadratic(dim=4, h_min=0.1, h_max=1.0, noise=0.5, seed=0)
    torch.testing.assert_close(model.h, torch.tensor([0.1, 0.1 ** (2 / 3), 0.1 ** (1 / 3), 1.0]))
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    grads = []
    for _ in range(20000):
        wi = w.clone().requires_grad_(True)
        model.sample()(wi).backward()
        grads.append(wi.grad)
    g = torch.stack(grads)
    exact = model.h * w
    assert (g.mean(0) - exact).abs().max() < 4 * (0.5 * model.h.sqrt().max()) / 20000**0.5
    torch.testing.assert_close(g.var(0), 0.25 * model.h, rtol=0.05, atol=0)
    assert float(model(w)) == pytest.approx(0.5 * float((model.h * w**2).sum()))


def test_noisy_quadratic_noise_depends_on_seed_only():
    p = get_problem("noisy_quadratic")
    runs = []
    for seed in (0, 0, 1):
        task = p.build(seed)
        opt = torch.optim.SGD(task.parameters(), lr=0.5)
        runs.append([task.train_step(opt) for _ in range(5)])
    assert runs[0] == runs[1] and runs[0] != runs[2]
