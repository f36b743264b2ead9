"""SAM and adaptive SAM: against pytorch_optimizer's SAM, by hand, and the closure protocol."""

from __future__ import annotations

import pytest
import pytorch_optimizer
import pytorch_optimizer.optimizer.sam as reference_sam
import torch

import descentlab
from descentlab.schedules import ExponentialDecay, attach
from descentlab.wrappers import SAM, NonFiniteGuard
from tests.wrappers.helpers import (
    loss_at,
    make_closure,
    max_rel_diff,
    network,
    train,
    weights,
)

BASES = {  # name: (ours, the reference's base, arguments)
    "sgd_momentum": (torch.optim.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adamw": (torch.optim.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "descentlab_adamw": (descentlab.AdamW, torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
    "descentlab_sgd": (descentlab.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
}


def norm_in_gradient_dtype(param_groups, device=None, *, weight_adaptive=False):
    """pytorch_optimizer's squared global norm, summed in the gradients' dtype.

    Its own version rounds the per-tensor norms to float32 before summing; this
    is the same formula (|p| weighting for adaptive groups) without that rounding.
    """
    grads = [p.grad * p.abs() if weight_adaptive and group.get("adaptive") else p.grad
             for group in param_groups for p in group["params"] if p.grad is not None]
    return torch.stack([g.norm() for g in grads]).square().sum().reshape(1)


def run_reference(base, kwargs, adaptive, dtype, steps=50, **extra):
    model = network(dtype)
    rho = 0.5 if adaptive else 0.05
    opt = pytorch_optimizer.SAM(model.parameters(), base, rho=rho, adaptive=adaptive,
                                **extra, **kwargs)
    train(opt, model, range(steps), protocol="backward")
    return weights(model)


def run_ours(base, kwargs, adaptive, dtype, protocol, steps=50, **extra):
    model = network(dtype)
    rho = 0.5 if adaptive else 0.05
    opt = SAM(model.parameters(), base, rho=rho, adaptive=adaptive, **extra, **kwargs)
    train(opt, model, range(steps), protocol=protocol)
    return weights(model)


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("base", sorted(BASES))
def test_float64_parity_with_pytorch_optimizer(base, adaptive, monkeypatch):
    ours_cls, ref_cls, kwargs = BASES[base]
    monkeypatch.setattr(reference_sam, "get_global_gradient_norm", norm_in_gradient_dtype)
    ref = run_reference(ref_cls, kwargs, adaptive, torch.float64)
    for protocol in ("closure", "backward"):  # descentlab's protocol and pytorch_optimizer's
        ours = run_ours(ours_cls, kwargs, adaptive, torch.float64, protocol)
        assert max_rel_diff(ours, ref) <= 1e-12, protocol
    assert max_rel_diff(ref, weights(network(torch.float64))) > 1e-2  # it trained


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_unpatched_reference_differs_only_by_its_float32_norm(adaptive):
    """In float64 the reference's perturbation is float32-accurate; in float32 we agree bitwise."""
    ref = run_reference(torch.optim.AdamW, {"lr": 0.01}, adaptive, torch.float64)
    ours = run_ours(torch.optim.AdamW, {"lr": 0.01}, adaptive, torch.float64, "closure")
    assert 1e-12 < max_rel_diff(ours, ref) < 1e-7  # measured: 3e-9
    for base in (torch.optim.SGD, torch.optim.AdamW):
        kwargs = {"lr": 0.05, "momentum": 0.9} if base is torch.optim.SGD else {"lr": 0.01}
        ref = run_reference(base, kwargs, adaptive, torch.float32)
        ours = run_ours(base, kwargs, adaptive, torch.float32, "closure")
        assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))


def test_gradient_centralisation_as_pytorch_optimizer():
    kwargs = {"lr": 0.05, "momentum": 0.9}
    ref = run_reference(torch.optim.SGD, kwargs, False, torch.float32, steps=20, use_gc=True)
    ours = run_ours(torch.optim.SGD, kwargs, False, torch.float32, "closure", steps=20,
                    use_gc=True)
    plain = run_ours(torch.optim.SGD, kwargs, False, torch.float32, "closure", steps=20)
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    assert max_rel_diff(ours, plain) > 1e-6


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_one_step_by_hand_on_a_quadratic(adaptive):
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    w0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    w = w0.clone().requires_grad_()
    rho, lr = 0.3, 0.1
    opt = SAM([w], torch.optim.SGD, rho=rho, adaptive=adaptive, lr=lr)

    def closure():
        opt.zero_grad()
        loss = 0.5 * w @ a @ w
        loss.backward()
        return loss

    loss = opt.step(closure)
    g = a @ w0
    t = w0.abs() if adaptive else torch.ones(2, dtype=torch.float64)
    eps = rho * t * t * g / ((t * g).norm() + 1e-12)
    expected = w0 - lr * (a @ (w0 + eps))
    torch.testing.assert_close(w.detach(), expected, rtol=1e-15, atol=0)
    assert float(loss.detach()) == pytest.approx(float(0.5 * w0 @ a @ w0), rel=1e-15)


def test_closure_calls_per_step_and_returned_loss():
    model = network()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)
    calls: list[int] = []
    for t in range(3):  # descentlab's protocol: step evaluates w, then w + eps
        loss = opt.step(make_closure(opt, model, t, calls))
        assert isinstance(loss, torch.Tensor)
    assert calls == [0, 0, 1, 1, 2, 2]
    calls.clear()
    for t in range(3, 6):  # pytorch_optimizer's: the caller computed the gradient at w
        closure = make_closure(opt, model, t, calls)
        closure()
        assert opt.step(closure) is None
    assert calls == [3, 3, 4, 4, 5, 5]
    calls.clear()
    opt.zero_grad(set_to_none=False)  # zeroed, not None: not taken as the current gradients
    opt.step(make_closure(opt, model, 6, calls))
    assert calls == [6, 6]
    base_calls: list[int] = []
    base = torch.optim.SGD(network().parameters(), lr=0.1)
    base.step(make_closure(base, network(), 0, base_calls))
    assert len(calls) == 2 * len(base_calls)  # one extra forward-backward, nothing more


def test_first_and_second_step_by_hand_equal_step():
    model, twin = network(), network()
    opt = SAM(model.parameters(), torch.optim.AdamW, rho=0.1, lr=0.01)
    by_hand = SAM(twin.parameters(), torch.optim.AdamW, rho=0.1, lr=0.01)
    train(opt, model, range(5))
    for t in range(5):
        loss_at(twin, t).backward()
        by_hand.first_step(zero_grad=True)
        assert all("old_p" in by_hand.state[p] for p in twin.parameters())
        loss_at(twin, t).backward()
        by_hand.second_step(zero_grad=True)
        assert not by_hand.state  # the saved weights are gone again
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(twin), strict=True))


def test_base_optimizer_instance_equals_class_and_groups_carry_rho():
    model, twin = network(), network()
    by_class = SAM(model.parameters(), torch.optim.SGD, rho=0.2, lr=0.1, momentum=0.5)
    inner = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.5)
    by_instance = SAM(twin.parameters(), inner, rho=0.2)
    assert by_instance.base_optimizer is inner and by_instance.param_groups is inner.param_groups
    train(by_class, model, range(4))
    train(by_instance, twin, range(4))
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(twin), strict=True))
    assert [g["rho"] for g in by_class.param_groups] == [0.2]
    by_class.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "rho": 0.3})
    assert [(g["rho"], g["adaptive"]) for g in by_class.param_groups] == [(0.2, False),
                                                                         (0.3, False)]


def test_rho_per_group_and_scheduled():
    model = network()
    first, rest = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = SAM([{"params": first, "rho": 0.0}, {"params": rest}], torch.optim.SGD, rho=0.1,
              lr=0.1)
    controller = attach(opt, rho=ExponentialDecay(0.2, 0.5))
    assert [g["rho"] for g in opt.param_groups] == [0.2, 0.2]
    opt.step(make_closure(opt, model, 0))
    controller.step()
    assert [g["rho"] for g in opt.param_groups] == [0.1, 0.1]
    opt.param_groups[0]["rho"] = 0.0
    before = weights(model)
    make_closure(opt, model, 1)()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.first_step()
    norm = torch.sqrt(sum((g * g).sum() for g in grads)) + 1e-12  # over all groups
    moved = [p.detach() - b for p, b in zip(model.parameters(), before, strict=True)]
    assert all(torch.equal(m, torch.zeros_like(m)) for m in moved[:2])
    for m, g in zip(moved[2:], grads[2:], strict=True):
        torch.testing.assert_close(m, 0.1 * g / norm, rtol=1e-12, atol=1e-15)


def test_guard_around_sam_and_guard_inside_it():
    model, twin = network(), network()
    guarded = NonFiniteGuard(SAM(model.parameters(), torch.optim.SGD, lr=0.1))
    plain = SAM(twin.parameters(), torch.optim.SGD, lr=0.1)
    calls: list[int] = []
    for t in range(3):
        guarded.step(make_closure(guarded, model, t, calls))
        plain.step(make_closure(plain, twin, t))
    assert calls == [0, 0, 1, 1, 2, 2]  # the guard's evaluation at w is SAM's first
    assert all(torch.equal(a, b) for a, b in zip(weights(model), weights(twin), strict=True))

    w = torch.ones(3, requires_grad=True)
    inner = NonFiniteGuard(torch.optim.SGD([w], lr=0.1))
    opt = SAM([w], inner, rho=0.05)

    def closure():  # finite at w, not finite at the perturbed point
        opt.zero_grad()
        loss = (w ** 2).sum() if torch.equal(w, torch.ones(3)) else (w ** 2).sum() * float("inf")
        loss.backward()
        return loss

    opt.step(closure)
    assert inner.skipped_steps == 1 and torch.equal(w.detach(), torch.ones(3))


def test_bad_arguments_are_refused_with_their_values():
    params = list(network().parameters())
    with pytest.raises(ValueError, match="rho must be a finite number >= 0, got -0.1"):
        SAM(params, torch.optim.SGD, rho=-0.1, lr=0.1)
    with pytest.raises(ValueError, match="perturb_eps must be"):
        SAM(params, torch.optim.SGD, perturb_eps=-1.0, lr=0.1)
    with pytest.raises(TypeError, match="adaptive must be True or False, got 1"):
        SAM(params, torch.optim.SGD, adaptive=1, lr=0.1)
    with pytest.raises(ValueError, match="rho must be a finite number >= 0, got -1"):
        SAM([{"params": params, "rho": -1}], torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="base_optimizer must be a torch.optim.Optimizer"):
        SAM(params, "sgd", lr=0.1)
    with pytest.raises(TypeError, match=r"arguments \['lr'\] with an optimizer instance"):
        SAM(params, torch.optim.SGD(params, lr=0.1), lr=0.1)
    with pytest.raises(ValueError, match="not the base optimizer's"):
        SAM(params[:2], torch.optim.SGD(params, lr=0.1))
    with pytest.raises(ValueError, match="Adadelta has its own hyperparameter 'rho'"):
        SAM(params, torch.optim.Adadelta)
    opt = SAM(params, torch.optim.SGD, lr=0.1)
    with pytest.raises(TypeError, match="SAM.step\\(\\) needs a closure"):
        opt.step()


def test_state_dicts_load_both_ways_with_pytorch_optimizer():
    model, twin = network(), network()
    ours = SAM(model.parameters(), torch.optim.AdamW, lr=0.01)
    theirs = pytorch_optimizer.SAM(twin.parameters(), torch.optim.AdamW, lr=0.01)
    train(ours, model, range(3))
    train(theirs, twin, range(3), protocol="backward")
    fresh = SAM(twin.parameters(), torch.optim.AdamW, lr=0.01)
    fresh.load_state_dict(theirs.state_dict())
    assert int(fresh.base_optimizer.state_dict()["state"][0]["step"]) == 3
    back = pytorch_optimizer.SAM(model.parameters(), torch.optim.AdamW, lr=0.01)
    back.load_state_dict(ours.state_dict())
    assert int(back.state_dict()["state"][0]["step"]) == 3
