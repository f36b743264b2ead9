"""The flat engines' per-step check (``engine/slot_check.py``): one C++ pass, or Python.

Both must say False as soon as one parameter's ``.data`` or ``.grad`` is not
its slot any more, and the engine must then give what torch.optim gives.
"""

from __future__ import annotations

import pytest
import torch

import descentlab
from descentlab.engine import slot_check


@pytest.fixture(params=["library", "python"])
def check(request, monkeypatch):
    if request.param == "library":
        if slot_check.LIBRARY.wait() is None:
            pytest.skip(f"the check's C++ library is not available: {slot_check.LIBRARY.error}")
    else:
        monkeypatch.setattr(slot_check.LIBRARY, "get", lambda: None)
    return request.param


def _bucket(opt):
    layout = opt._engine.layout(opt, opt.param_groups[0])
    (bucket,) = layout.buckets
    return bucket


def _params(n=6):
    params = [torch.nn.Parameter(torch.randn(10 + k)) for k in range(n)]
    for p in params:
        p.grad = torch.randn(p.shape)
    return params


@pytest.mark.parametrize("change", ["grad replaced", "grad None", "data replaced", "none"])
def test_the_check_sees_every_change(check, change):
    params = _params()
    opt = descentlab.Adam(params, engine="flat")
    opt.step()
    b = _bucket(opt)
    assert b.holds()
    if change == "grad replaced":
        params[3].grad = torch.randn(params[3].shape)
    elif change == "grad None":
        params[5].grad = None
    elif change == "data replaced":
        params[0].data = torch.randn(params[0].shape)
    assert b.holds() == (change == "none")


@pytest.mark.parametrize("engine", ["flat", "auto"])
def test_steps_after_changes_match_torch(check, engine):
    """Replaced gradients and data, a gradient set to None, between steps: as torch.optim."""
    params = _params(40)
    ours = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, ours, strict=True):
        q.grad = p.grad.clone()
    torch_opt = torch.optim.Adam(params, lr=0.01)
    opt = descentlab.Adam(ours, lr=0.01, engine=engine)
    for t in range(5):
        torch_opt.step()
        opt.step()
        gen = torch.Generator().manual_seed(t)
        for k, (p, q) in enumerate(zip(params, ours, strict=True)):
            g = torch.randn(p.shape, generator=gen)
            if k == t:  # a new gradient tensor
                p.grad, q.grad = g, g.clone()
            elif k == 10 + t:  # no gradient this step
                p.grad = q.grad = None
            else:
                if p.grad is None:
                    p.grad, q.grad = torch.zeros_like(p), torch.zeros_like(q)
                p.grad.copy_(g)
                q.grad.copy_(g)
            if k == 20 + t:  # new values for the parameter
                v = torch.randn(p.shape, generator=gen)
                p.data, q.data = v, v.clone()
    torch_opt.step()
    opt.step()
    for p, q in zip(params, ours, strict=True):
        torch.testing.assert_close(q, p, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("position", [0, 7, 8, 23, 24, 50, 98, 99])
def test_the_check_sees_a_change_at_any_position_of_a_long_list(check, position):
    """The C++ pass reads ahead of the compared parameter: a change anywhere is still seen."""
    params = _params(100)
    opt = descentlab.Adam(params, engine="flat")
    opt.step()
    b = _bucket(opt)
    assert b.holds()
    params[position].grad = torch.randn(params[position].shape)
    assert not b.holds()
    opt.step()
    opt.step()  # the same new gradient a second time: it is moved into its slot
    assert b.holds()
    params[position].data = torch.randn(params[position].shape)
    assert not b.holds()


def test_same_items_compares_identity_and_length(check):
    a = [torch.zeros(2), torch.zeros(2), torch.zeros(2)]
    assert slot_check.same_items(a, list(a))
    assert slot_check.same_items([], [])
    assert not slot_check.same_items(a, a[:2])
    assert not slot_check.same_items(a, [a[0], torch.zeros(2), a[2]])  # equal values, not `is`
    assert not slot_check.same_items(a, [a[0], a[2], a[1]])
    assert slot_check.same_items(tuple(a), a)  # not a list: compared in Python


def test_count_step_adds_one_as_add_does(check):
    """The step counters' increment in C gives add_'s float32 values (beyond 2^24 too)."""
    start = torch.tensor([0.0, 1.0, 41.0, 2.0**24 - 1, 2.0**24, 3e7], dtype=torch.float32)
    steps = start.clone()
    slot_check.count_step(steps, steps.data_ptr())
    assert torch.equal(steps, start.clone().add_(1))
    slot_check.count_step(steps, None)  # no address (not a CPU float32 buffer): add_
    assert torch.equal(steps, start.clone().add_(1).add_(1))


@pytest.mark.parametrize("engine", ["flat", "auto"])
def test_the_state_steps_follow_the_counters(check, engine):
    params = _params(30)
    opt = descentlab.Adam(params, engine=engine)
    for _ in range(3):
        opt.step()
    assert {float(opt.state[p]["step"]) for p in params} == {3.0}
    assert all(opt.state_dict()["state"][i]["step"].item() == 3.0 for i in range(30))
