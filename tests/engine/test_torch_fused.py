"""The default engine on torch's own fused kernels (Adam/AdamW, SGD, Adagrad) over flat buffers.

The reference for these rows is torch.optim's ``fused=True`` implementation
(the kernels are the same; only each parameter's scalar tail is computed in
a vector of the flat buffer), and torch's for-loop implementation to rounding.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import descentlab
from descentlab.engine import torch_fused
from descentlab.rules.adam import AdamRule
from tests.engine.helpers import rel_diff, train

#: (optimizer, setting): every flag combination a fused kernel takes
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True, "maximize": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("AdamW", {"lr": 0.01, "amsgrad": True}),
    ("SGD", {"lr": 0.01}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.01, "momentum": 0.9, "dampening": 0.3, "maximize": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1,
                 "initial_accumulator_value": 0.1}),
]
SHAPES = [(37,), (5, 7), (1000,), (3, 3, 3), (1,), ()]
#: float32: the scalar tails round once per step in another order (1 ulp), over 30 steps
TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-14}


def _pair(name: str, setting: dict[str, Any], dtype: torch.dtype, engine: str = "auto"):
    torch.manual_seed(0)
    base = [torch.randn(s, dtype=dtype) for s in SHAPES]
    ours = [torch.nn.Parameter(t.clone()) for t in base]
    theirs = [torch.nn.Parameter(t.clone()) for t in base]
    return (
        ours, getattr(descentlab, name)(ours, engine=engine, **setting),
        theirs, getattr(torch.optim, name)(theirs, fused=True, **setting),
    )


def _step_both(ours, opt, theirs, ref, steps: int = 30) -> None:
    for _ in range(steps):
        for p, q in zip(ours, theirs, strict=True):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()


@torch.no_grad()
def _worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(
        float((p - q).abs().max() / q.abs().max().clamp_min(1e-30))
        for p, q in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("name", "setting"), SETTINGS)
def test_auto_matches_torch_fused(name, setting, dtype):
    ours, opt, theirs, ref = _pair(name, setting, dtype)
    _step_both(ours, opt, theirs, ref)
    assert _worst(ours, theirs) <= TOLERANCE[dtype]
    for p, q in zip(ours, theirs, strict=True):  # and the state, key by key
        for key, value in ref.state[q].items():
            assert torch.allclose(opt.state[p][key].float(), value.float(), rtol=1e-5, atol=1e-7)


def test_one_kernel_call_per_buffer_and_step(monkeypatch):
    calls = []
    check, call = torch_fused.FUSED[AdamRule]
    monkeypatch.setitem(
        torch_fused.FUSED, AdamRule, (check, lambda *a: (calls.append(a[1].numel()), call(*a)))
    )
    ours, opt, theirs, ref = _pair("Adam", {"lr": 0.01}, torch.float32)
    _step_both(ours, opt, theirs, ref, steps=3)
    assert len(calls) == 3 and calls[0] >= sum(p.numel() for p in ours)


def test_forms_without_a_kernel_stay_eager_and_bitwise():
    """SGD's averaged momentum has no torch kernel: auto gives the flat (reference) bits."""
    setting = {"lr": 0.05, "momentum": 0.9, "momentum_form": "averaged"}
    ref_net, _ = train("sgd", "reference", setting=setting)
    net, _ = train("sgd", "auto", setting=setting)
    assert rel_diff(net, ref_net) == 0.0


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam", "adamw"])
def test_auto_matches_reference_to_rounding_with_schedules_and_missing_grads(name):
    """The engine tests' model: lr changes each step, a parameter lacks a gradient on odd steps."""
    net, _ = train(name, "auto")
    ref, _ = train(name, "reference")
    assert rel_diff(net, ref) <= 1e-12


def test_switch_off(monkeypatch):
    monkeypatch.setenv("DESCENTLAB_TORCH_FUSED", "0")
    # and no compiling: a compiled Adam kernel another test of this process made ready
    # (tests/engine/test_run_threads.py) would be taken, and rounds differently from the loop
    monkeypatch.setenv("DESCENTLAB_AUTO_COMPILE", "0")
    ours, opt, theirs, _ = _pair("Adam", {"lr": 0.01}, torch.float64)
    ref = descentlab.Adam(theirs, lr=0.01, engine="reference")
    _step_both(ours, opt, theirs, ref, steps=5)
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))


def test_resume_is_bit_identical():
    ours, opt, _, _ = _pair("AdamW", {"lr": 0.01, "amsgrad": True}, torch.float32)
    grads = [[torch.randn_like(p) for p in ours] for _ in range(6)]
    for g in grads[:3]:
        for p, gi in zip(ours, g, strict=True):
            p.grad = gi.clone()
        opt.step()
    saved_params = [p.detach().clone() for p in ours]
    saved = copy.deepcopy(opt.state_dict())
    for g in grads[3:]:
        for p, gi in zip(ours, g, strict=True):
            p.grad = gi.clone()
        opt.step()
    again = [torch.nn.Parameter(t.clone()) for t in saved_params]
    resumed = descentlab.AdamW(again, lr=0.01, amsgrad=True)
    resumed.load_state_dict(saved)
    for g in grads[3:]:
        for p, gi in zip(again, g, strict=True):
            p.grad = gi.clone()
        resumed.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, again, strict=True))
