"""L-BFGS against torch.optim.LBFGS and closed-form minima; groups, state_dict, errors."""

from __future__ import annotations

import copy

import pytest
import torch

from descentlab.linesearch import Armijo
from descentlab.second_order import LBFGS


def logistic_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(80, 6, generator=gen)
    y = (torch.rand(80, generator=gen) < torch.sigmoid(x @ torch.randn(6, generator=gen))) * 2.0
    y = y - 1.0

    def loss(w):
        return torch.nn.functional.softplus(-y * (x @ w)).mean() + 0.01 * (w @ w)

    return loss


def closure_for(opt, loss_fn, w):
    def closure():
        opt.zero_grad()
        loss = loss_fn(w)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("history", [3, 100])
def test_fixed_step_matches_torch_lbfgs(history):
    """Without a line search both take t = lr (first: min(1, 1/|g|_1) lr) along the
    two-loop direction, so the iterates must agree to rounding."""
    loss_fn = logistic_problem()
    w_ref = torch.zeros(6, requires_grad=True)
    ref = torch.optim.LBFGS([w_ref], lr=0.5, max_iter=7, history_size=history)
    w = torch.zeros(6, requires_grad=True)
    ours = LBFGS([w], lr=0.5, max_iter=7, history_size=history)
    for _ in range(4):
        ref.step(closure_for(ref, loss_fn, w_ref))
        ours.step(closure_for(ours, loss_fn, w))
        torch.testing.assert_close(w.detach(), w_ref.detach(), rtol=1e-10, atol=1e-12)


def newton_minimiser(loss_fn, n):
    """Exact Newton iterations with the full Hessian (the reference minimum)."""
    w = torch.zeros(n)
    for _ in range(30):
        g = torch.func.grad(loss_fn)(w)
        w = w - torch.linalg.solve(torch.autograd.functional.hessian(loss_fn, w), g)
    return w


def test_strong_wolfe_reaches_the_minimum_like_torch():
    loss_fn = logistic_problem(1)
    w_star = newton_minimiser(loss_fn, 6)
    w_ref = torch.zeros(6, requires_grad=True)
    ref = torch.optim.LBFGS([w_ref], max_iter=200, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=0.0)
    ref.step(closure_for(ref, loss_fn, w_ref))
    w = torch.zeros(6, requires_grad=True)
    ours = LBFGS([w], max_iter=200, line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                 tolerance_change=0.0)
    ours.step(closure_for(ours, loss_fn, w))
    torch.testing.assert_close(w_ref.detach(), w_star, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(w.detach(), w_star, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_default_tolerances_cost_no_more_than_torch(seed):
    loss_fn = logistic_problem(seed)
    w_ref = torch.zeros(6, requires_grad=True)
    ref = torch.optim.LBFGS([w_ref], max_iter=200, line_search_fn="strong_wolfe")
    ref.step(closure_for(ref, loss_fn, w_ref))
    w = torch.zeros(6, requires_grad=True)
    ours = LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")
    ours.step(closure_for(ours, loss_fn, w))
    torch.testing.assert_close(w.detach(), w_ref.detach(), rtol=1e-4, atol=1e-5)
    assert ours.state[w]["func_evals"] <= ref.state[w_ref]["func_evals"] + 2


def test_quadratic_minimum_with_armijo_search():
    gen = torch.Generator().manual_seed(2)
    m = torch.randn(8, 8, generator=gen)
    a, b = m @ m.T + torch.eye(8), torch.randn(8, generator=gen)
    w = torch.zeros(8, requires_grad=True)
    opt = LBFGS([w], max_iter=100, line_search_fn=Armijo(), tolerance_grad=1e-12,
                tolerance_change=0.0)
    opt.step(closure_for(opt, lambda v: 0.5 * v @ a @ v - b @ v, w))
    torch.testing.assert_close(w.detach(), torch.linalg.solve(a, b), rtol=1e-8, atol=1e-9)


def test_two_param_groups_equal_one_group():
    loss_fn = logistic_problem(3)
    w = torch.zeros(6, requires_grad=True)
    one = LBFGS([w], max_iter=15, line_search_fn="strong_wolfe")
    one.step(closure_for(one, loss_fn, w))
    u = torch.zeros(2, requires_grad=True)
    v = torch.zeros(4, requires_grad=True)
    two = LBFGS([{"params": [u]}, {"params": [v]}], max_iter=15, line_search_fn="strong_wolfe")
    two.step(closure_for(two, lambda _: loss_fn(torch.cat([u, v])), None))
    torch.testing.assert_close(torch.cat([u, v]).detach(), w.detach(), rtol=0, atol=1e-14)


def test_per_group_lr_still_finds_the_minimum():
    loss_fn = logistic_problem(4)
    w = torch.zeros(6, requires_grad=True)
    ref = LBFGS([w], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-11,
                tolerance_change=0.0)
    ref.step(closure_for(ref, loss_fn, w))
    u = torch.zeros(3, requires_grad=True)
    v = torch.zeros(3, requires_grad=True)
    opt = LBFGS([{"params": [u], "lr": 1.0}, {"params": [v], "lr": 0.1}], max_iter=100,
                line_search_fn="strong_wolfe", tolerance_grad=1e-11, tolerance_change=0.0)
    opt.step(closure_for(opt, lambda _: loss_fn(torch.cat([u, v])), None))
    torch.testing.assert_close(torch.cat([u, v]).detach(), w.detach(), rtol=1e-6, atol=1e-8)


def test_float32_parameters_of_several_shapes():
    gen = torch.Generator().manual_seed(5)
    target = torch.randn(3, 4, generator=gen, dtype=torch.float32)
    m = torch.zeros(3, 4, dtype=torch.float32, requires_grad=True)
    s = torch.zeros((), dtype=torch.float32, requires_grad=True)
    opt = LBFGS([m, s], max_iter=50, line_search_fn="strong_wolfe")
    opt.step(closure_for(opt, lambda _: ((m - target) ** 2).sum() + (s - 2.0) ** 2, None))
    torch.testing.assert_close(m.detach(), target, rtol=1e-5, atol=1e-5)
    assert abs(float(s.detach()) - 2.0) < 1e-5


def test_state_dict_resume_is_exact():
    loss_fn = logistic_problem(6)
    w = torch.zeros(6, requires_grad=True)
    opt = LBFGS([w], max_iter=3, line_search_fn="strong_wolfe", history_size=4)
    for _ in range(2):
        opt.step(closure_for(opt, loss_fn, w))
    sd = copy.deepcopy(opt.state_dict())
    w2 = w.detach().clone().requires_grad_(True)
    opt2 = LBFGS([w2], max_iter=3, line_search_fn="strong_wolfe", history_size=4)
    opt2.load_state_dict(sd)
    for _ in range(3):
        opt.step(closure_for(opt, loss_fn, w))
        opt2.step(closure_for(opt2, loss_fn, w2))
    torch.testing.assert_close(w2.detach(), w.detach(), rtol=0, atol=0)
    assert len(opt2.state[w2]["old_dirs"]) == len(opt.state[w]["old_dirs"]) <= 4


def test_closure_without_backward_is_accepted():
    loss_fn = logistic_problem(7)
    w = torch.zeros(6, requires_grad=True)
    opt = LBFGS([w], max_iter=30, line_search_fn="strong_wolfe")
    opt.step(lambda: loss_fn(w))
    w_ref = torch.zeros(6, requires_grad=True)
    ref = LBFGS([w_ref], max_iter=30, line_search_fn="strong_wolfe")
    ref.step(closure_for(ref, loss_fn, w_ref))
    torch.testing.assert_close(w.detach(), w_ref.detach(), rtol=0, atol=1e-14)


def test_errors_are_clear():
    w = torch.zeros(2, requires_grad=True)
    opt = LBFGS([w])
    with pytest.raises(TypeError, match="LBFGS.step\\(\\) needs a closure"):
        opt.step()
    with pytest.raises(ValueError, match="history_size"):
        LBFGS([w], history_size=0)
    with pytest.raises(ValueError, match="lr"):
        LBFGS([w], lr=-1.0)
    with pytest.raises(ValueError, match="line_search must be one of"):
        LBFGS([w], line_search_fn="wolfe")
    with pytest.raises(TypeError, match="closure must return the loss"):
        opt.step(lambda: 1.0)
