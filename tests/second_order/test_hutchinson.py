"""SophiaH and AdaHessian against steps computed by hand with fixed probe vectors.

The objective is the quadratic f(θ) = ½ θᵀAθ − bᵀθ, whose Hessian A is known,
so the Hutchinson estimate u ⊙ (A u) of a fixed probe u is known exactly; one
probe gives an estimate with a negative entry (off-diagonal curvature), which
exercises Sophia's clip. Every way to the Hessian-vector products is checked:
``backward(create_graph=True)``, a closure that returns the loss only, and a
plain-backward closure (finite differences).
"""

from __future__ import annotations

import pytest
import torch

import descentlab
from descentlab.bench.entrants import get_entrant
from descentlab.bench.runner import run as run_entrant
from tests.bench.fakes import quadratic_problem

A = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 0.2]], dtype=torch.float64)
B = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
THETA0 = torch.tensor([0.5, -0.3, 1.0], dtype=torch.float64)
PROBES = [torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64),
          torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)]


def fixed_probes(cls):
    """``cls`` drawing PROBES[0], PROBES[1], PROBES[0], ... instead of random ones."""

    class Fixed(cls):
        drawn = 0

        def sample_probes(self, params):
            u = PROBES[Fixed.drawn % len(PROBES)]
            Fixed.drawn += 1
            return [u.clone()]

    return Fixed


def f(theta):
    return 0.5 * theta @ A @ theta - B @ theta


def grad(theta):
    return A @ theta - B


def estimate(u):
    return u * (A @ u)  # Hutchinson's u ⊙ (A u), exact for a quadratic


def run(cls, setting, steps, how):
    theta = THETA0.clone().requires_grad_()
    opt = fixed_probes(cls)([theta], **setting)
    for _ in range(steps):
        if how == "create_graph":
            opt.zero_grad()
            f(theta).backward(create_graph=True)
            opt.step()
        elif how == "loss_only_closure":
            opt.step(lambda: f(theta))
        else:  # plain backward: finite differences of gradients through the closure
            def closure():
                opt.zero_grad()
                loss = f(theta)
                loss.backward()
                return loss
            opt.step(closure)
    return theta.detach()


HOWS = ["create_graph", "loss_only_closure", "plain_closure"]
TOL = {"create_graph": 1e-14, "loss_only_closure": 1e-14, "plain_closure": 1e-6}


def sophia_by_hand(setting, steps):
    lr, (b1, b2) = setting["lr"], setting.get("betas", (0.96, 0.99))
    p, eps, k = setting.get("p", 1e-2), setting.get("eps", 1e-12), setting["update_period"]
    wd = setting.get("weight_decay", 0.0)
    theta, m, h = THETA0.clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3,
                                                                                  dtype=torch.float64)
    drawn = 0
    for t in range(1, steps + 1):
        g = grad(theta)
        if (t - 1) % k == 0:
            h = b2 * h + (1 - b2) * estimate(PROBES[drawn % 2])
            drawn += 1
        theta = theta * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        theta = theta - lr * torch.clamp(m / torch.clamp(h, min=eps), -p, p)
    return theta


def adahessian_by_hand(setting, steps):
    lr, (b1, b2) = setting["lr"], setting.get("betas", (0.9, 0.999))
    eps, k, power = setting.get("eps", 1e-16), setting["update_period"], setting.get(
        "hessian_power", 1.0)
    theta, m, v = THETA0.clone(), torch.zeros(3, dtype=torch.float64), torch.zeros(3,
                                                                                  dtype=torch.float64)
    drawn = 0
    for t in range(1, steps + 1):
        g = grad(theta)
        if (t - 1) % k == 0:
            v = b2 * v + (1 - b2) * estimate(PROBES[drawn % 2]) ** 2
            drawn += 1
        m = b1 * m + (1 - b1) * g
        denom = (v / (1 - b2**t)) ** (power / 2) + eps
        theta = theta - lr / (1 - b1**t) * m / denom
    return theta


def test_the_probes_give_a_negative_curvature_entry():
    assert (estimate(PROBES[0]) < 0).any() and (estimate(PROBES[1]) > 0).any()


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("setting", [
    {"lr": 0.5, "update_period": 1, "p": 0.05},
    {"lr": 0.5, "update_period": 2, "p": 1.0, "weight_decay": 0.1, "betas": (0.9, 0.95)},
])
def test_sophiah_steps_by_hand(setting, how):
    ours = run(descentlab.SophiaH, setting, 5, how)
    expected = sophia_by_hand(setting, 5)
    assert torch.allclose(ours, expected, rtol=TOL[how], atol=TOL[how])


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("setting", [
    {"lr": 0.1, "update_period": 1},
    {"lr": 0.1, "update_period": 3, "hessian_power": 0.5, "betas": (0.8, 0.99)},
])
def test_adahessian_steps_by_hand(setting, how):
    ours = run(descentlab.AdaHessian, setting, 5, how)
    expected = adahessian_by_hand(setting, 5)
    assert torch.allclose(ours, expected, rtol=TOL[how], atol=TOL[how])


def test_finite_differences_leave_the_point_and_gradient_in_place():
    theta = THETA0.clone().requires_grad_()
    opt = fixed_probes(descentlab.SophiaH)([theta], lr=0.0, hvp="finite_difference")
    calls = []

    def closure():
        calls.append(theta.detach().clone())
        opt.zero_grad()
        loss = f(theta)
        loss.backward()
        return loss

    opt.step(closure)
    assert len(calls) == 2  # the gradient, then one product
    assert torch.equal(theta.detach(), THETA0) and torch.equal(theta.grad, grad(THETA0))
    assert torch.allclose(opt.state[theta]["hessian"], estimate(PROBES[0]), rtol=0, atol=1e-6)


def test_external_estimates_and_errors():
    theta = THETA0.clone().requires_grad_()
    opt = descentlab.SophiaH([theta], lr=0.1)
    f(theta).backward()  # no graph, no closure: nothing to take products with
    with pytest.raises(RuntimeError, match=r"create_graph=True.*closure.*hessian="):
        opt.step()
    opt.step(hessian=[torch.ones(3, dtype=torch.float64)])
    assert torch.equal(opt.state[theta]["hessian"], torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"hessian entry of shape \(2,\)"):
        opt.step(hessian=[torch.ones(2, dtype=torch.float64)])
    with pytest.raises(RuntimeError, match="create_graph"):
        descentlab.AdaHessian([theta], hvp="autograd").step(lambda: float(f(theta)))


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (descentlab.SophiaH, {"hvp": "exact"}, r"hvp must be one of"),
        (descentlab.SophiaH, {"hessian_distribution": "uniform"}, r"hessian_distribution must"),
        (descentlab.SophiaH, {"p": -1.0}, r"p must be a finite number >= 0"),
        (descentlab.SophiaH, {"betas": (0.9, 1.0)}, r"betas\[1\] must be in"),
        (descentlab.AdaHessian, {"hessian_power": 0.0}, r"hessian_power must be in \(0.0, 1.0\]"),
        (descentlab.AdaHessian, {"update_period": 0}, r"update_period must be an integer >= 1"),
        (descentlab.AdaHessian, {"num_samples": 0}, r"num_samples must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused_naming_them(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls([THETA0.clone().requires_grad_()], **kwargs)


@pytest.mark.parametrize("name", ["sophiah", "adahessian"])
def test_hessian_diagonal_entrants_run_on_plain_backward_closures(name):
    """compare's tasks call plain backward(): the products come from finite differences."""
    problem = quadratic_problem(steps=20, eval_every=5, h=(1.0, 3.0))
    sampled = {"lr": 0.05, "p" if name == "sophiah" else "beta1": 0.5}
    record = run_entrant(problem, get_entrant(name), sampled, seed=0)
    assert not record.diverged and record.final["loss"] < record.curve[0]["loss"]
