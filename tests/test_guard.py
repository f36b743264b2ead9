"""NonFiniteGuard: a non-finite gradient changes neither parameters nor optimizer state."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import descentlab
from descentlab.guard import NonFiniteGuard, grads_are_finite
from descentlab.schedules import CosineDecay, attach

OPTIMIZERS = {
    "torch-sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "torch-adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
    "torch-adamw-foreach": lambda ps: torch.optim.AdamW(ps, lr=0.01, foreach=True),
    "descentlab-adam": lambda ps: descentlab.Adam(ps, lr=0.01),
    "descentlab-rmsprop": lambda ps: descentlab.RMSprop(ps, lr=0.01, momentum=0.5),
}


def model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    return model, x, y


def snapshot(model, opt):
    return (
        [p.detach().clone() for p in model.parameters()],
        copy.deepcopy(opt.state_dict()),
    )


def assert_same(a, b):
    for p, q in zip(a[0], b[0], strict=True):
        assert torch.equal(p, q)
    sa, sb = a[1]["state"], b[1]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        for name in sa[k]:
            va, vb = sa[k][name], sb[k][name]
            assert torch.equal(torch.as_tensor(va), torch.as_tensor(vb)), name


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_skip_leaves_params_and_state_untouched(name, bad):
    model, x, y = model_and_data()
    ref_model = copy.deepcopy(model)
    opt = NonFiniteGuard(OPTIMIZERS[name](model.parameters()))
    ref = OPTIMIZERS[name](ref_model.parameters())
    for step in range(6):
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        if step in (0, 3):  # a poisoned gradient: the guarded optimizer must not move
            next(model.parameters()).grad[0, 0] = bad
            before = snapshot(model, opt)
            opt.step()
            assert opt.last_skipped
            assert_same(before, snapshot(model, opt))
            continue
        opt.step()
        ref.step()
        assert not opt.last_skipped
    # the guarded run equals an unguarded run that simply had no bad steps
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (opt.skipped_steps, opt.steps) == (2, 6)


def test_closure_is_evaluated_once_and_replayed():
    model, x, y = model_and_data()
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    opt = NonFiniteGuard(torch.optim.SGD(model.parameters(), lr=0.1))
    loss = opt.step(closure)
    assert len(calls) == 1 and torch.isfinite(loss)

    def bad_closure():
        loss = closure()
        return loss * math.inf

    before = snapshot(model, opt)
    opt.step(bad_closure)  # finite grads, infinite loss: skipped (check_loss=True)
    assert opt.last_skipped and opt.skipped_steps == 1
    assert_same(before, snapshot(model, opt))


@pytest.mark.parametrize("lbfgs", [torch.optim.LBFGS, descentlab.LBFGS])
def test_lbfgs_through_the_guard_matches_plain_lbfgs(lbfgs):
    model, x, y = model_and_data()
    ref_model = copy.deepcopy(model)

    def make_closure(m, o):
        def closure():
            o.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            return loss

        return closure

    opt = NonFiniteGuard(lbfgs(model.parameters(), lr=0.5, max_iter=5))
    ref = torch.optim.LBFGS(ref_model.parameters(), lr=0.5, max_iter=5)
    for _ in range(3):
        opt.step(make_closure(model, opt))
        ref.step(make_closure(ref_model, ref))
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_state_dict_round_trip_and_plain_load():
    model, x, y = model_and_data()
    opt = NonFiniteGuard(torch.optim.Adam(model.parameters()))
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    next(model.parameters()).grad.fill_(math.nan)
    opt.step()
    sd = opt.state_dict()
    other = NonFiniteGuard(torch.optim.Adam(model.parameters()))
    other.load_state_dict(sd)
    assert (other.skipped_steps, other.steps) == (1, 2)
    plain = torch.optim.Adam(model.parameters())
    plain.load_state_dict(sd)  # the extra key is ignored by torch
    assert plain.state_dict()["state"][0]["step"] == 1


def test_works_with_schedulers_and_grad_scaler():
    model, x, y = model_and_data()
    opt = NonFiniteGuard(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    ctrl = attach(opt, lr=CosineDecay(0.1, 10))
    torch_sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=4.0)
    scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    ctrl.step()
    torch_sched.step()
    assert opt.steps == 1 and opt.param_groups is opt.optimizer.param_groups


def test_grads_are_finite_helper():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1)
    assert grads_are_finite(opt)  # no gradients yet
    p.grad = torch.tensor([1e38, -3e38, 0.0])  # huge but finite
    assert grads_are_finite(opt)
    p.grad = torch.tensor([3e38, 3e38, 3e38])  # the float32 sum overflows; still finite
    assert torch.isinf(p.grad.sum()) and grads_are_finite(opt)
    p.grad = torch.tensor([math.inf, -math.inf, 0.0])
    assert not grads_are_finite(opt)
    p.grad[1] = math.nan
    assert not grads_are_finite(opt)
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        NonFiniteGuard([p])
