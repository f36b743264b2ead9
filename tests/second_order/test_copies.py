"""Copies of every closure optimizer work on their own; generators in parameter groups."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

from descentlab.linesearch import StochasticArmijo
from descentlab.second_order import LBFGS, LineSearchGD, NewtonCG, NonlinearCG, PerturbedGD

OPTIMIZERS = {
    "lbfgs": lambda ps: LBFGS(ps, max_iter=3, line_search_fn="strong_wolfe"),
    "lbfgs_armijo": lambda ps: LBFGS(ps, max_iter=3, line_search_fn="armijo"),
    "newton_cg": lambda ps: NewtonCG(ps, max_iter=2),
    "newton_cg_trust_region": lambda ps: NewtonCG(ps, max_iter=2, trust_region=True),
    "nonlinear_cg": lambda ps: NonlinearCG(ps, max_iter=3),
    "line_search_gd": lambda ps: LineSearchGD(ps, line_search=StochasticArmijo()),
    "full_relaxation_gd": lambda ps: LineSearchGD(ps, line_search="full_relaxation"),
    "perturbed_gd": lambda ps: PerturbedGD(ps, lr=1e-4, grad_threshold=1e4, radius=1e-3, wait=1,
                                         seed=3),
}


def rosen(u, v):
    x = torch.cat([u, v])
    return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()


def closure_for(opt, params):
    def closure():
        opt.zero_grad()
        loss = rosen(*params)
        loss.backward()
        return loss

    return closure


def copy_of(opt, how):
    if how == "deepcopy":
        return copy.deepcopy(opt)
    if how == "pickle":
        return pickle.loads(pickle.dumps(opt))
    buf = io.BytesIO()
    torch.save(opt, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_copy_is_independent_and_continues_identically(name, how):
    params = [torch.tensor([-1.2, 1.0], requires_grad=True),
              torch.tensor([-0.5], requires_grad=True)]
    opt = OPTIMIZERS[name](params)
    opt.step(closure_for(opt, params))
    twin = copy_of(opt, how)
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
