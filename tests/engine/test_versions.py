"""A step counts as an in-place update of each parameter it changes, as with torch.optim:
autograd then refuses a backward through a graph that saved a parameter before the step,
instead of silently using the new values (the flat engines write the parameters' slots,
which autograd does not see by itself)."""

from __future__ import annotations

import pytest
import torch

import descentlab
from descentlab.rules import RULES

ENGINES = ["auto", "flat", "reference"]
#: SparseAdam takes sparse gradients only (its own tests)
NAMES = [n for n in sorted(RULES) if n != "sparse_adam"]


def _model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 8))


def _fill_grads(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.grad = torch.randn_like(p)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", NAMES)
def test_backward_through_a_stepped_parameter_is_refused_as_with_torch(name, engine):
    model = _model()
    # Muon steps the hidden matrix; the rest goes to its AdamW groups
    params = descentlab.muon_param_groups(model) if name == "muon" else model.parameters()
    opt = descentlab.make_optimizer(name, params, engine=engine)
    if hasattr(opt, "train"):
        opt.train()  # (Schedule-Free)
    _fill_grads(model)
    opt.step()  # (the first step lays the parameters out)
    before = [p._version for p in model.parameters()]
    loss = model(torch.randn(3, 6, requires_grad=True)).square().sum()  # saves the weights
    _fill_grads(model)
    opt.step()
    assert all(p._version > v for p, v in zip(model.parameters(), before, strict=True))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("engine", ENGINES)
def test_only_the_parameters_a_step_changes_are_counted(engine):
    model = _model()
    opt = descentlab.Adam(model.parameters(), engine=engine)
    _fill_grads(model)
    opt.step()
    idle = model[2].weight
    idle.grad = None
    versions = {id(p): p._version for p in model.parameters()}
    opt.step()
    for p in model.parameters():
        assert (p._version > versions[id(p)]) == (p is not idle)


def test_torch_counts_the_same_way():
    """The reference behaviour the tests above expect of ours."""
    model = _model()
    opt = torch.optim.Adam(model.parameters())
    _fill_grads(model)
    opt.step()
    loss = model(torch.randn(3, 6)).square().sum()
    _fill_grads(model)
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
