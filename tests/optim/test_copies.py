"""Copies of an optimizer work on their own: deepcopy, pickle, torch.save/torch.load.

A copy must keep its engine, step on its own parameters without touching the
original's, and continue exactly as the original does; a (model, optimizer)
pair copied together must train like the original pair.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.copies import HOWS, copy_by
from tests.optim.engines import ENGINES_UNDER_TEST
from tests.optim.helpers import make_params, run_steps, sign_of
from tests.optim.infos import INFOS

IDS = [info.name for info in INFOS]
#: with DESCENTLAB_TEST_COMPILED=1 this includes "compiled" (its copies rebuild the engine the
#: same way as flat's; the kernels are process-wide, so a copy compiles nothing again)
ENGINES = [*ENGINES_UNDER_TEST, "auto"]


def richest(info):
    return max(info.settings, key=len)


def own_params(opt):
    return [p for group in opt.param_groups for p in group["params"]]


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_copy_is_an_independent_optimizer_that_continues_the_same(info, engine, how):
    setting = richest(info)
    sign = sign_of(setting)
    params = make_params()
    opt = info.ours(params, **setting, engine=engine)
    run_steps(opt, params, 0, 10, sign)
    twin = copy_by(opt, how)
    twin_params = own_params(twin)
    assert type(twin) is type(opt) and twin.engine == engine
    assert all(a is not b for a, b in zip(twin_params, params, strict=True))
    # the twin steps first: had it shared anything with the original, they would now differ
    run_steps(twin, twin_params, 10, 10, sign)
    run_steps(opt, params, 10, 10, sign)
    uninterrupted = make_params()
    run_steps(info.ours(uninterrupted, **setting, engine=engine), uninterrupted, 0, 20, sign)
    for a, b, c in zip(params, twin_params, uninterrupted, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)
    public = {k for k in opt.__dict__ if not k.startswith("_")}
    assert public == {k for k in twin.__dict__ if not k.startswith("_")}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("info", INFOS, ids=IDS)
def test_model_and_optimizer_copied_together_train_like_the_original(info, engine):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    model.double()
    setting = {k: v for k, v in richest(info).items() if k != "maximize"}
    opt = info.ours(model.parameters(), **setting, engine=engine)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 5, generator=gen, dtype=torch.float64),
                torch.randn(8, 1, generator=gen, dtype=torch.float64)) for _ in range(12)]

    def train(m, o, data):
        for x, y in data:
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()

    train(model, opt, batches[:4])
    model2, opt2 = copy.deepcopy((model, opt))
    assert all(a is b for a, b in zip(model2.parameters(), own_params(opt2), strict=True))
    train(model2, opt2, batches[4:])
    train(model, opt, batches[4:])
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert a is not b and torch.equal(a, b)

