"""Line searches: acceptance conditions re-checked independently, hand-computed steps, counts."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.linesearch import (
    Armijo,
    ArmijoGoldstein,
    FullRelaxation,
    LineSearchError,
    StochasticArmijo,
    StrongWolfe,
)


def rosen(x: torch.Tensor) -> torch.Tensor:
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def quad_problem(n: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen)
    a = m @ m.T + torch.eye(n)
    b = torch.randn(n, generator=gen)
    return a, b, (lambda x: 0.5 * x @ a @ x - b @ x)


class Counted:
    """Wrap a function and count its calls (one call = one f+g evaluation)."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x):
        self.calls += 1
        return self.fn(x)


def value_and_grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    f = fn(x)
    (g,) = torch.autograd.grad(f, x)
    return float(f.detach()), g


START_POINTS = [torch.tensor([-1.2, 1.0]), torch.tensor([0.5, -0.3]), torch.tensor([2.0, 2.0])]


@pytest.mark.parametrize("x", START_POINTS)
@pytest.mark.parametrize("step", [1.0, 1e-3, 10.0])
def test_armijo_condition_holds(x, step):
    res = Armijo(c1=1e-4)(rosen, x, step=step)
    f0, g0 = value_and_grad(rosen, x)
    f1, _ = value_and_grad(rosen, x - res.step * g0)
    assert res.success and res.step > 0
    assert f1 <= f0 + 1e-4 * res.step * float(g0 @ -g0)
    assert f1 == pytest.approx(res.f, rel=1e-12)


@pytest.mark.parametrize("x", START_POINTS)
@pytest.mark.parametrize("step", [1.0, 1e-6, 10.0])
def test_goldstein_both_bounds_hold(x, step):
    c = 0.25
    res = ArmijoGoldstein(c=c)(rosen, x, step=step)
    f0, g0 = value_and_grad(rosen, x)
    f1, _ = value_and_grad(rosen, x - res.step * g0)
    slope = float(g0 @ -g0)
    assert res.success
    assert f0 + (1 - c) * res.step * slope <= f1 <= f0 + c * res.step * slope


@pytest.mark.parametrize("x", START_POINTS)
@pytest.mark.parametrize("c2", [0.9, 0.1])
def test_strong_wolfe_conditions_hold(x, c2):
    res = StrongWolfe(c1=1e-4, c2=c2)(rosen, x)
    f0, g0 = value_and_grad(rosen, x)
    d = -g0
    f1, g1 = value_and_grad(rosen, x + res.step * d)
    assert res.success
    assert f1 <= f0 + 1e-4 * res.step * float(g0 @ d)
    assert abs(float(g1 @ d)) <= c2 * abs(float(g0 @ d))
    assert res.dphi == pytest.approx(float(g1 @ d), rel=1e-10)


def test_strong_wolfe_agrees_with_scipy_conditions():
    """Our step and scipy.optimize.line_search's both satisfy the conditions; similar counts."""
    scipy_opt = pytest.importorskip("scipy.optimize")
    import numpy as np

    x = torch.tensor([-1.2, 1.0])
    f0, g0 = value_and_grad(rosen, x)
    d = -g0

    calls = {"n": 0}

    def f_np(v):
        calls["n"] += 1
        return value_and_grad(rosen, torch.tensor(v))[0]

    def g_np(v):
        return value_and_grad(rosen, torch.tensor(v))[1].numpy()

    alpha, *_ = scipy_opt.line_search(f_np, g_np, x.numpy(), d.numpy(), c1=1e-4, c2=0.9)
    assert alpha is not None
    res = StrongWolfe(c1=1e-4, c2=0.9)(rosen, x, d, step=1.0)
    for a in (alpha, res.step):
        fa, ga = value_and_grad(rosen, x + a * d)
        assert fa <= f0 + 1e-4 * a * float(g0 @ d)
        assert abs(float(ga @ d)) <= 0.9 * abs(float(g0 @ d))
    assert res.evaluations <= calls["n"] + 2
    assert np.isfinite(alpha)


def test_full_relaxation_condition_with_exact_hessian():
    x = torch.tensor([-1.2, 1.0])
    search = FullRelaxation(c=0.1, b=0.05)
    res = search(rosen, x)
    f0, g0 = value_and_grad(rosen, x)
    d = -g0
    hess = torch.autograd.functional.hessian(rosen, x)
    f1, _ = value_and_grad(rosen, x + res.step * d)
    bound = 0.1 * res.step * float(g0 @ d) + 0.5 * 0.05 * res.step**2 * float(d @ hess @ d)
    assert res.success and res.hvps == 1
    assert f1 - f0 <= bound and f1 < f0


def test_full_relaxation_takes_exact_step_on_quadratic():
    a, b, fn = quad_problem()
    x = torch.zeros(6)
    g = a @ x - b
    exact = float(g @ g) / float(g @ a @ g)  # hand-computed exact line minimiser
    counted = Counted(fn)
    res = FullRelaxation()(counted, x)
    assert res.step == pytest.approx(exact, rel=1e-12)
    assert res.evaluations == 1 and res.hvps == 1
    assert counted.calls == 2  # the start point and the one trial


def test_armijo_hand_computed_interpolation():
    """f = x^2 at x = 1, d = -2: step 1 lands on f = 1 (rejected); the cubic through
    (0, 1, -4) and (1, 1, 4) is exact, giving the minimiser 0.5 (x = 0)."""
    fn = Counted(lambda x: (x**2).sum())
    res = Armijo()(fn, torch.tensor([1.0]), step=1.0)
    assert res.step == pytest.approx(0.5, abs=1e-15)
    assert res.f == pytest.approx(0.0, abs=1e-30)
    assert res.evaluations == 2 and fn.calls == 3


def test_armijo_plain_backtracking_sequence():
    """Without interpolation the trials are 1, 0.5, 0.25, ...: f = x^2, x = 1, d = -2,
    step 4: f(1 - 8) = 49, f(1 - 4) = 9, f(1 - 2) = 1 (all rejected), f(0) = 0 accepted."""
    res = Armijo(interpolate=False, shrink=0.5)(lambda x: (x**2).sum(), torch.tensor([1.0]),
                                                step=4.0)
    assert res.step == 0.5 and res.evaluations == 4


def test_goldstein_extends_short_step():
    res = ArmijoGoldstein(c=0.25)(lambda x: (x**2).sum(), torch.tensor([1.0]), step=1e-3)
    assert res.success and res.step > 0.1  # had to grow from 1e-3


@pytest.mark.parametrize("search", [Armijo(), ArmijoGoldstein(), StrongWolfe(),
                                    FullRelaxation(), StochasticArmijo()])
def test_evaluations_are_counted(search):
    counted = Counted(rosen)
    res = search(counted, torch.tensor([-1.2, 1.0]))
    assert res.evaluations == counted.calls - 1  # the start point is the caller's


@pytest.mark.parametrize("search", [Armijo(max_evals=2), ArmijoGoldstein(max_evals=2),
                                    StrongWolfe(max_evals=2), FullRelaxation(max_evals=1)])
def test_failure_raises_clear_error(search):
    # Steepest descent on Rosenbrock from (-1.2, 1): a first trial of 1e3 overshoots by
    # orders of magnitude, so two evaluations cannot find a step. (The full-relaxation
    # search starts at the model step instead, which a rippled function rejects.)
    x = torch.tensor([-1.2, 1.0])
    with pytest.raises(LineSearchError, match="max_evals"):
        if isinstance(search, FullRelaxation):
            search(lambda v: rosen(v) + 50 * torch.sin(30 * v).sum(), x)
        else:
            search(rosen, x, step=1e3)


def test_wrong_gradient_fails_with_message():
    class Lying(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x**2).sum()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return -2 * x * grad  # the wrong sign: -d is an ascent direction

    with pytest.raises(LineSearchError) as err:
        StrongWolfe(max_evals=40)(Lying.apply, torch.tensor([1.0, 2.0]))
    assert "StrongWolfe" in str(err.value)


def test_non_descent_direction_is_refused():
    with pytest.raises(ValueError, match="not a descent direction"):
        # the gradient of Rosenbrock at (-1.2, 1) is (-215.6, -88): +g points uphill
        Armijo()(rosen, torch.tensor([-1.2, 1.0]), torch.tensor([-215.6, -88.0]))


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Armijo(c1=1.5), "c1"),
        (lambda: Armijo(shrink=1.0), "shrink"),
        (lambda: ArmijoGoldstein(c=0.6), "c"),
        (lambda: FullRelaxation(b=1.0), "b"),
        (lambda: StrongWolfe(c1=0.5, c2=0.1), "c1"),
        (lambda: StrongWolfe(max_evals=0), "max_evals"),
        (lambda: StochasticArmijo(gamma=-1.0), "gamma"),
    ],
)
def test_bad_arguments_name_the_argument(make, name):
    with pytest.raises((ValueError, TypeError), match=name):
        make()


def test_stochastic_armijo_reset_rule():
    search = StochasticArmijo(gamma=2.0, batches_per_epoch=4, max_step=10.0)
    assert search.initial_step(None, 1.0) == 1.0
    assert search.initial_step(0.5, 1.0) == pytest.approx(0.5 * 2.0 ** 0.25)
    assert search.initial_step(9.9, 1.0) == 10.0  # capped
    assert search.c == 0.1 and search.beta == 0.9


def test_stochastic_armijo_condition_on_batch():
    x = torch.tensor([-1.2, 1.0])
    res = StochasticArmijo()(rosen, x, step=1.0)
    f0, g0 = value_and_grad(rosen, x)
    assert res.f <= f0 - 0.1 * res.step * float(g0 @ g0)
    # pure backtracking by 0.9 from 1: the step is a power of 0.9
    k = math.log(res.step) / math.log(0.9)
    assert k == pytest.approx(round(k), abs=1e-9)
