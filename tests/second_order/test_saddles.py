"""Saddles (seed 001): x^2 - y^2 and the monkey saddle x^3 - 3xy^2, method by method.

What each method does is asserted against hand-derived behaviour:

* at the exact saddle point every gradient-based method (torch SGD, LineSearchGD,
  LBFGS, NonlinearCG) and Newton-CG (both variants) stays put: the gradient is
  exactly zero, and on the monkey saddle the Hessian is zero too;
* PerturbedGD escapes both (on x^2 - y^2 the perturbation's y-part grows by
  ``1 + 2 lr`` per step; on the monkey saddle, whose Hessian vanishes, only the
  cubic term moves it, so escape needs a larger radius or more steps);
* near the saddle, along the monkey saddle's ridge ``y = 0``, gradient descent and
  Newton are *attracted* to the degenerate saddle (hand-computed recursions).
"""

from __future__ import annotations

import pytest
import torch

from descentlab.second_order import LBFGS, LineSearchGD, NewtonCG, NonlinearCG, PerturbedGD


def saddle(p):
    return p[0] ** 2 - p[1] ** 2


def monkey(p):
    return p[0] ** 3 - 3 * p[0] * p[1] ** 2


METHODS = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.05),
    "line_search_gd": lambda ps: LineSearchGD(ps, max_iter=20),
    "lbfgs": lambda ps: LBFGS(ps, line_search_fn="strong_wolfe"),
    "nonlinear_cg": lambda ps: NonlinearCG(ps),
    "newton_cg": lambda ps: NewtonCG(ps),
    "newton_cg_trust_region": lambda ps: NewtonCG(ps, trust_region=True),
}


def run(fn, make, start, steps, stop_below=None):
    """Run ``steps`` steps (or until ``fn < stop_below``); return (point, optimizer, steps)."""
    p = torch.tensor(start, requires_grad=True)
    opt = make([p])

    def closure():
        return fn(p)  # loss-only closure: every optimizer here differentiates it

    for k in range(steps):
        if isinstance(opt, torch.optim.SGD):
            opt.zero_grad()
            fn(p).backward()
            opt.step()
        else:
            opt.step(closure)
        if stop_below is not None and float(fn(p.detach())) < stop_below:
            return p.detach(), opt, k + 1
    return p.detach(), opt, steps


@pytest.mark.parametrize("fn", [saddle, monkey], ids=["x2-y2", "monkey"])
@pytest.mark.parametrize("name", list(METHODS))
def test_every_deterministic_method_stays_at_the_saddle_point(fn, name):
    p, _, _ = run(fn, METHODS[name], [0.0, 0.0], 20)
    assert torch.equal(p, torch.zeros(2))


def test_perturbed_gd_escapes_x2_minus_y2():
    p, opt, _ = run(saddle, lambda ps: PerturbedGD(ps, lr=0.05, radius=1e-2, seed=0),
                 [0.0, 0.0], 100)
    assert float(saddle(p)) < -1.0  # |y| grew from <= 0.01 by ~1.1^100
    assert abs(float(p[0])) < 1e-3  # the x-part of the perturbation decayed
    assert opt.state[opt.param_groups[0]["params"][0]]["perturbations"] == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perturbed_gd_escapes_the_monkey_saddle(seed):
    p, _, steps = run(monkey, lambda ps: PerturbedGD(ps, lr=0.05, radius=0.5, seed=seed),
                      [0.0, 0.0], 100, stop_below=-1.0)
    assert float(monkey(p)) < -1.0 and steps < 100
    # it leaves along one of the three descending valleys (angles pi/3, pi, 5pi/3)
    angle = float(torch.atan2(p[1], p[0])) % (2 * torch.pi)
    valleys = torch.tensor([torch.pi / 3, torch.pi, 5 * torch.pi / 3])
    assert float((valleys - angle).abs().min()) < 0.3


def test_gradient_descent_is_attracted_along_the_monkey_ridge():
    """On y = 0 the monkey saddle is f = x^3: y stays 0 and x_{k+1} = x_k - 3 lr x_k^2."""
    p, _, _ = run(monkey, METHODS["sgd"], [0.5, 0.0], 200)
    x = 0.5
    for _ in range(200):
        x = x - 3 * 0.05 * x * x
    assert float(p[1]) == 0.0
    assert float(p[0]) == pytest.approx(x, rel=1e-12)
    assert 0.0 < x < 0.05  # creeping towards the saddle, never reaching it


@pytest.mark.parametrize("name", ["line_search_gd", "lbfgs", "nonlinear_cg"])
def test_line_searches_cross_the_monkey_ridge_saddle(name):
    """Along y = 0 the function is x^3: a line search along -g = (-3x^2, 0) is free to step
    past x = 0, where x^3 keeps decreasing, so these methods do not stall like plain GD."""
    p, _, steps = run(monkey, METHODS[name], [0.5, 0.0], 100, stop_below=-10.0)
    assert float(monkey(p)) < -10.0 and float(p[0]) < 0 and float(p[1]) == 0.0


@pytest.mark.parametrize("trust_region", [False, True])
def test_newton_halves_its_way_into_the_monkey_saddle(trust_region):
    """On y = 0 the Hessian is diag(6x, -6x) and g = (3x^2, 0): CG converges in one step
    along x, the Newton step is x -> x/2, and y never moves."""
    p, opt, _ = run(monkey, lambda ps: NewtonCG(ps, max_iter=10, trust_region=trust_region,
                                             radius=10.0, tolerance_grad=0.0,
                                             tolerance_change=0.0),
                 [0.5, 0.0], 1)
    assert float(p[1]) == 0.0
    assert float(p[0]) == pytest.approx(0.5 / 2**10, rel=1e-9)


def test_truncated_newton_leaves_x2_minus_y2_where_exact_newton_jumps_onto_it():
    start = torch.tensor([0.1, 1e-3])
    exact = start - torch.linalg.solve(torch.diag(torch.tensor([2.0, -2.0])),
                                       torch.tensor([0.2, -2e-3]))
    assert torch.equal(exact, torch.zeros(2))  # pure Newton is attracted to the saddle
    for tr in (False, True):
        p, _, _ = run(saddle, lambda ps, tr=tr: NewtonCG(ps, max_iter=30, trust_region=tr),
                   [0.1, 1e-3], 1)
        assert float(saddle(p)) < -1.0
