"""LineSearchGD and PerturbedGD against hand-computed iterations and torch.optim.SGD."""

from __future__ import annotations

import copy

import pytest
import torch

from descentlab.linesearch import ArmijoGoldstein
from descentlab.second_order import LineSearchGD, PerturbedGD


def spd(n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen)
    return m @ m.T + torch.eye(n), torch.randn(n, generator=gen)


def test_full_relaxation_gd_is_exact_steepest_descent():
    """On a quadratic the full-relaxation search takes alpha = g.g / g.Ag: compare with
    steepest descent with exact line search computed by hand."""
    a, b = spd(5)
    x = torch.zeros(5, requires_grad=True)
    opt = LineSearchGD([x], line_search="full_relaxation", max_iter=1)
    ref = torch.zeros(5)
    for _ in range(6):
        opt.step(lambda: 0.5 * x @ a @ x - b @ x)
        g = a @ ref - b
        ref = ref - float(g @ g) / float(g @ a @ g) * g
        torch.testing.assert_close(x.detach(), ref, rtol=1e-10, atol=1e-12)
    st = opt.state[x]
    assert st["hvp_evals"] == 6 and st["func_evals"] == 12  # start + one trial per step


def test_full_relaxation_with_the_standard_closure():
    """A closure calling plain backward(): d^T H d comes from a difference of gradients
    (one extra call per search); on a quadratic that is exact up to rounding."""
    a, b = spd(5)
    x = torch.zeros(5, requires_grad=True)
    opt = LineSearchGD([x], line_search="full_relaxation", max_iter=1)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        return loss

    ref = torch.zeros(5)
    for _ in range(6):
        opt.step(closure)
        g = a @ ref - b
        ref = ref - float(g @ g) / float(g @ a @ g) * g
        torch.testing.assert_close(x.detach(), ref, rtol=1e-6, atol=1e-8)
    st = opt.state[x]
    assert st["hvp_evals"] == 6 and st["func_evals"] == 12 and len(calls) == 18


@pytest.mark.parametrize("search", ["armijo", "strong_wolfe", ArmijoGoldstein()])
def test_line_search_gd_decreases_monotonically_and_converges(search):
    a, b = spd(4, seed=1)
    x = torch.zeros(4, requires_grad=True)
    opt = LineSearchGD([x], lr=10.0, line_search=search)

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        return loss

    losses = [float(opt.step(closure).detach()) for _ in range(400)]
    assert all(l1 <= l0 for l0, l1 in zip(losses, losses[1:], strict=False))
    torch.testing.assert_close(x.detach(), torch.linalg.solve(a, b), rtol=1e-6, atol=1e-6)


def test_perturbed_gd_equals_sgd_away_from_saddles():
    a, b = spd(4, seed=2)
    x = torch.zeros(4, requires_grad=True)
    x_ref = torch.zeros(4, requires_grad=True)
    opt = PerturbedGD([x], lr=0.01, grad_threshold=1e-6)
    ref = torch.optim.SGD([x_ref], lr=0.01)
    for _ in range(20):
        for o, v in ((opt, x), (ref, x_ref)):
            def closure(o=o, v=v):
                o.zero_grad()
                loss = 0.5 * v @ a @ v - b @ v
                loss.backward()
                return loss

            o.step(closure)
    torch.testing.assert_close(x.detach(), x_ref.detach(), rtol=0, atol=1e-15)
    assert opt.state[x]["perturbations"] == 0


def test_perturbation_lies_in_the_ball_and_waits():
    x = torch.zeros(3, requires_grad=True)
    opt = PerturbedGD([x], lr=0.0, grad_threshold=1.0, radius=0.1, wait=4, seed=0)
    for _ in range(10):
        opt.step(lambda: (x**2).sum())
    st = opt.state[x]
    assert 0 < float(x.detach().norm()) <= 0.1 * 3  # lr = 0: only perturbations move x
    assert st["perturbations"] == 2  # at t = 0 and t = 5 (wait 4 in between)
    assert st["func_evals"] == 12  # one extra closure call per perturbation


def _saddle(p):
    return p[0] ** 2 - p[1] ** 2 + p[1] ** 4


def _resumed_alongside(opt, x, seed, steps):
    """A copy of ``x`` under a fresh PerturbedGD (seeded ``seed``) loaded with ``opt``'s state;
    both then take ``steps`` steps on the saddle ``_saddle``."""
    sd = copy.deepcopy(opt.state_dict())
    y = x.detach().clone().requires_grad_(True)
    opt2 = PerturbedGD([y], lr=0.1, grad_threshold=1e-3, radius=0.1, wait=2, seed=seed)
    opt2.load_state_dict(sd)
    for _ in range(steps):
        opt.step(lambda: _saddle(x))
        opt2.step(lambda: _saddle(y))
    return y


def test_seeded_perturbations_resume_exactly():
    def run(split):
        x = torch.zeros(2, requires_grad=True)
        opt = PerturbedGD([x], lr=0.1, grad_threshold=1e-3, radius=0.1, wait=2, seed=7)
        for _ in range(split):
            opt.step(lambda: _saddle(x))
        y = _resumed_alongside(opt, x, seed=123, steps=30)
        return x.detach(), y.detach()

    a, b = run(5)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_f_threshold_stops_at_a_minimum():
    x = torch.zeros(2, requires_grad=True)
    opt = PerturbedGD([x], lr=0.1, grad_threshold=1e-2, radius=0.05, wait=5,
                      f_threshold=1e-3, seed=0)
    for _ in range(20):
        opt.step(lambda: (x**2).sum())  # a minimum: perturbing never helps
    assert opt.state[x].get("converged") is True
    assert float(x.detach().norm()) == 0.0  # restored to the point before the perturbation


def test_errors():
    x = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match="needs a closure"):
        PerturbedGD([x]).step()
    with pytest.raises(TypeError, match="needs a closure"):
        LineSearchGD([x]).step()
    with pytest.raises(ValueError, match="radius"):
        PerturbedGD([x], radius=0.0)
    with pytest.raises(ValueError, match="wait"):
        PerturbedGD([x], wait=-1)
    with pytest.raises(ValueError, match="lr"):
        LineSearchGD([x], lr=-0.5)


def test_line_search_gd_two_groups_equal_one_group():
    a, b = spd(5, seed=3)
    x = torch.zeros(5, requires_grad=True)
    one = LineSearchGD([x], lr=0.5, max_iter=10)
    one.step(lambda: 0.5 * x @ a @ x - b @ x)
    u = torch.zeros(2, requires_grad=True)
    v = torch.zeros(3, requires_grad=True)
    two = LineSearchGD([{"params": [u]}, {"params": [v]}], lr=0.5, max_iter=10)

    def closure():
        z = torch.cat([u, v])
        return 0.5 * z @ a @ z - b @ z

    two.step(closure)
    torch.testing.assert_close(torch.cat([u, v]).detach(), x.detach(), rtol=0, atol=1e-15)


def test_seeded_resume_before_any_perturbation():
    def make(v):
        return PerturbedGD([v], lr=0.1, grad_threshold=1e-3, radius=0.1, wait=2, seed=7)

    x = torch.zeros(2, requires_grad=True)
    opt = make(x)
    x.data.fill_(1.0)  # far from the saddle: no perturbation in the first steps
    opt.step(lambda: _saddle(x))
    y = _resumed_alongside(opt, x, seed=99, steps=200)
    assert opt.state[x]["perturbations"] > 0
    torch.testing.assert_close(y.detach(), x.detach(), rtol=0, atol=0)
