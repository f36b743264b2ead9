"""MARS against pytorch_optimizer.MARS on more shapes, in every form, with foreach on and off.

The package conformance suite (package_infos.py) covers resume, copies, schedulers,
groups, hooks and dtypes on the small shared model; this adds 3-D, square and 0-D
tensors, both of the reference's code paths, the previous gradient in state, and refusals.
"""

from __future__ import annotations

import pytest
import pytorch_optimizer
import torch

import descentlab
from descentlab.rules.mars import newton_schulz_5
from tests.optim.helpers import float64_default, max_rel_diff
from tests.threads import one_thread

SHAPES = [(5, 3), (3,), (1,), (4, 3, 2), (6, 6), (2, 7), ()]

@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


SETTINGS = [
    {},
    {"lr": 0.01, "weight_decay": 0.1, "weight_decay_1d": 0.05, "cautious": True},
    {"lr": 0.01, "mars_type": "lion", "weight_decay": 0.1, "weight_decouple": False,
     "lr_1d": 0.02},
    {"lr": 0.01, "optimize_1d": True, "ams_bound": True, "gamma": 0.1, "fixed_decay": True,
     "weight_decay": 0.01},
    {"lr": 0.01, "mars_type": "shampoo", "betas": (0.9, 0.95), "cautious": True,
     "maximize": True},
    {"lr": 0.01, "mars_type": "shampoo", "optimize_1d": True, "betas_1d": (0.8, 0.9),
     "eps": 1e-6, "ams_bound": True},
]


def _params(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
            for s in SHAPES]


def _trained(cls, setting, steps=60, dtype=torch.float64, **extra):
    params = _params(dtype)
    opt = cls(params, **setting, **extra)
    sign = -1.0 if setting.get("maximize") else 1.0
    for t in range(steps):
        gen = torch.Generator().manual_seed(100 + t)
        opt.zero_grad()
        loss = sum(((torch.tanh(p) - 0.3) ** 2 * (1 + torch.rand(
            p.shape, generator=gen, dtype=torch.float64).to(dtype))).sum()
            + 0.1 * p.sum() ** 2 for p in params)
        (sign * loss).backward()
        opt.step()
    return params, opt


@pytest.mark.parametrize("foreach", [False, True], ids=["per-tensor", "foreach"])
@pytest.mark.parametrize("setting", SETTINGS, ids=[str(i) for i in range(len(SETTINGS))])
def test_float64_parity_with_pytorch_optimizer_over_60_steps(setting, foreach):
    with float64_default():
        ours, _ = _trained(descentlab.MARS, setting)
        ref, _ = _trained(pytorch_optimizer.MARS, setting, foreach=foreach)
    assert max_rel_diff(ours, ref) <= 1e-13  # bitwise equal in our runs
    assert max_rel_diff(ours, _params()) > 1e-2  # it moved


@pytest.mark.parametrize("setting", SETTINGS[1:5:3], ids=["adamw", "shampoo"])
def test_float32_parity_with_pytorch_optimizer(setting):
    ours, _ = _trained(descentlab.MARS, setting, dtype=torch.float32)
    ref, _ = _trained(pytorch_optimizer.MARS, setting, dtype=torch.float32, foreach=False)
    assert max_rel_diff(ours, ref) <= 1e-6  # bitwise equal in our runs


def test_the_previous_gradient_is_kept_and_corrects_the_step():
    with float64_default():
        params, opt = _trained(descentlab.MARS, {"lr": 0.01}, steps=3)
        state = opt.state[params[0]]
        assert set(state) == {"step", "exp_avg", "exp_avg_sq", "last_grad"}
        assert torch.equal(state["last_grad"], params[0].grad)
        # γ = 0 is AdamW on the (norm-capped) gradient: the correction changes the iterates
        plain, _ = _trained(descentlab.MARS, {"lr": 0.01, "gamma": 0.0}, steps=3)
    assert max_rel_diff(params[:1], plain[:1]) > 1e-6


def test_lr_1d_is_a_factor_of_lr():
    opt = descentlab.MARS(_params(), lr=0.01, lr_1d=0.03)
    assert opt.param_groups[0]["lr_1d_factor"] == pytest.approx(3.0)


def test_newton_schulz_matches_the_reference_bit_for_bit():
    g = torch.randn(7, 4, generator=torch.Generator().manual_seed(3))
    from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_newton_schulz_5
    assert torch.equal(newton_schulz_5(g, eps=1e-8), zero_power_via_newton_schulz_5(g, eps=1e-8))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("mars_type", "sgd", "mars_type must be one of"),
    ("lr", 0.0, "lr must be a finite number > 0, got 0.0"),
    ("gamma", -1.0, "gamma"),
    ("betas_1d", (0.9, 1.0), r"betas_1d\[1\] must be in"),
])
def test_bad_arguments_are_refused_by_name(key, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        descentlab.MARS(_params(), **{key: value})
