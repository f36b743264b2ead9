"""What torch.optim.LBFGS accepts, every closure optimizer accepts: copies, generators in
parameter groups, closures returning floats, gradients set outside the closure, frozen
parameters, infinite tolerances, complex parameters."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.linesearch import StochasticArmijo
from descentlab.second_order import LBFGS, LineSearchGD, NewtonCG, NonlinearCG, PerturbedGD
from tests.copies import HOWS, copy_by

OPTIMIZERS = {
    "lbfgs": lambda ps: LBFGS(ps, max_iter=3, line_search_fn="strong_wolfe"),
    "lbfgs_armijo": lambda ps: LBFGS(ps, max_iter=3, line_search_fn="armijo"),
    "newton_cg": lambda ps: NewtonCG(ps, max_iter=2),
    "newton_cg_trust_region": lambda ps: NewtonCG(ps, max_iter=2, trust_region=True),
    "nonlinear_cg": lambda ps: NonlinearCG(ps, max_iter=3),
    "line_search_gd": lambda ps: LineSearchGD(ps, line_search=StochasticArmijo()),
    "full_relaxation_gd": lambda ps: LineSearchGD(ps, line_search="full_relaxation"),
    "perturbed_gd": lambda ps: PerturbedGD(ps, lr=1e-4, grad_threshold=1e4, radius=1e-6, wait=1,
                                         seed=3),
}

CURVATURE = {"newton_cg", "newton_cg_trust_region", "full_relaxation_gd"}


def rosen(u, v):
    x = torch.cat([u, v])
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def closure_for(opt, params, fn=rosen):
    def closure():
        opt.zero_grad()
        loss = fn(*params)
        loss.backward()
        return loss

    return closure


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_copy_is_independent_and_continues_identically(name, how):
    params = [torch.tensor([-1.2, 1.0], requires_grad=True),
              torch.tensor([-0.5], requires_grad=True)]
    opt = OPTIMIZERS[name](params)
    opt.step(closure_for(opt, params))
    twin = copy_by(opt, how)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    assert all(a is not b and torch.equal(a, b)
               for a, b in zip(twin_params, params, strict=True))
    for _ in range(3):
        opt.step(closure_for(opt, params))
        twin.step(closure_for(twin, twin_params))
    for p, q in zip(params, twin_params, strict=True):
        assert torch.equal(p, q)
    state, twin_state = opt.state[params[0]], twin.state[twin_params[0]]
    assert twin_state["func_evals"] == state["func_evals"]
    assert twin_state.get("perturbations", 2) == state.get("perturbations", 2) == 2


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_generators_inside_parameter_groups(name):
    """{"params": module.parameters()} is the usual idiom; the groups must not be empty."""
    u = torch.tensor([-1.2, 1.0], requires_grad=True)
    v = torch.tensor([-0.5], requires_grad=True)
    opt = OPTIMIZERS[name]([{"params": (p for p in [u])}, {"params": iter([v])}])
    assert [g["params"] for g in opt.param_groups] == [[u], [v]]
    before = rosen(u, v).item()
    opt.step(closure_for(opt, [u, v]))
    assert rosen(u, v).item() < before


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_closure_returning_a_python_float(name):
    params = [torch.tensor([-1.2, 1.0], requires_grad=True),
              torch.tensor([-0.5], requires_grad=True)]
    opt = OPTIMIZERS[name](params)
    before = rosen(*params).item()

    def closure():
        opt.zero_grad()
        loss = rosen(*params)
        loss.backward()
        return loss.item()

    first = opt.step(closure)
    assert isinstance(first, float) and first == before
    assert rosen(*params).item() < before


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_nothing_moves_without_trainable_parameters(name):
    frozen = [torch.tensor([-1.2, 1.0]), torch.tensor([-0.5])]
    opt = OPTIMIZERS[name](frozen)
    calls = []

    def closure():
        calls.append(1)
        return rosen(*frozen)

    assert float(opt.step(closure)) == rosen(*frozen).item()
    assert len(calls) == 1 and torch.equal(frozen[0], torch.tensor([-1.2, 1.0]))


@pytest.mark.parametrize("name", sorted(set(OPTIMIZERS) - CURVATURE))
def test_gradients_set_outside_the_closure_are_used(name):
    """The closure reports a loss without a graph; the gradient was set beforehand.
    (Not for the curvature methods: they need gradients at other points.)"""
    c = torch.tensor([1.0, -2.0, 0.5])  # f(p) = c . p, whose gradient c is set by hand
    p = torch.zeros(3, requires_grad=True)
    opt = OPTIMIZERS[name]([p])
    p.grad = c.clone()
    opt.step(lambda: torch.tensor(float(p.detach() @ c)))
    assert float(p.detach() @ c) < 0 and torch.equal(p.grad, c)  # moved against c


@pytest.mark.parametrize("name", sorted(set(OPTIMIZERS) - {"perturbed_gd"}))  # no tolerance
def test_infinite_tolerance_grad_stops_at_the_first_evaluation(name):
    params = [torch.tensor([-1.2, 1.0], requires_grad=True),
              torch.tensor([-0.5], requires_grad=True)]
    opt = OPTIMIZERS[name](params)
    opt.param_groups[0]["tolerance_grad"] = math.inf
    opt.step(closure_for(opt, params))
    assert torch.equal(params[0].detach(), torch.tensor([-1.2, 1.0]))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_complex_parameters_equal_their_real_view(name):
    def f(z):
        return (z.abs() ** 2 - 1.0).pow(2).sum() + (z * (1 + 2j)).real.sum()

    z = torch.tensor([0.3 + 0.1j, -0.2 + 0.4j], dtype=torch.complex128, requires_grad=True)
    r = torch.view_as_real(z.detach()).clone().requires_grad_(True)
    opt_z, opt_r = OPTIMIZERS[name]([z]), OPTIMIZERS[name]([r])
    for _ in range(3):
        opt_z.step(closure_for(opt_z, [z], f))
        opt_r.step(closure_for(opt_r, [r], lambda v: f(torch.view_as_complex(v))))
    torch.testing.assert_close(torch.view_as_real(z.detach()), r.detach(), rtol=1e-12,
                               atol=1e-12)
