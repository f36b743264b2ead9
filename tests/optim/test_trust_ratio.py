"""Lion, LARS and LAMB under every engine, and what the package conformance suite cannot see.

The rest of their conformance (resume, copies, schedulers, groups, dtypes) runs from
tests/optim/package_infos.py.
"""

from __future__ import annotations

import lion_pytorch
import pytest
import torch

import descentlab
from descentlab.rules.trust_ratio import GRAD_SCALE_KEY
from tests.optim.helpers import float64_default, loss_fn, make_params, max_rel_diff
from tests.optim.package_infos import PACKAGE_INFO_BY_NAME

STEPS = 64
INFOS = [PACKAGE_INFO_BY_NAME[n] for n in ("lion", "lars", "lamb")]
#: the tensor rules run eagerly under every engine; Lion compiles once (one setting) in CI
CASES = [
    (info, s, engine)
    for info in INFOS
    for s in info.settings
    for engine in ("reference", "flat", "auto")
] + [(info, info.settings[0], "compiled") for info in INFOS] + [
    (PACKAGE_INFO_BY_NAME["lars"], {"lr": 0.2, "momentum": 0.8, "dampening": 0.3,
                                    "maximize": True}, engine) for engine in ("reference", "flat")
] + [(PACKAGE_INFO_BY_NAME["lamb"], {"lr": 0.01, "weight_decay": 0.1, "maximize": True}, engine)
     for engine in ("reference", "flat")]


def _trained(cls, setting, steps=STEPS, params=None, **options):
    params = make_params() if params is None else params
    opt = cls(params, **setting, **options)
    sign = -1.0 if setting.get("maximize") else 1.0
    for t in range(steps):
        opt.zero_grad()
        loss_fn(params, t, sign).backward()
        opt.step()
    return params, opt


def _reference_options(info, setting):
    if info.reference is lion_pytorch.Lion:
        return {}
    return {"foreach": False}  # pytorch_optimizer's own per-tensor path


@pytest.mark.parametrize(
    "case", CASES, ids=[f"{i.name}-{n}-{e}" for n, (i, _, e) in enumerate(CASES)]
)
def test_float64_parity_with_the_reference_under_every_engine(case):
    info, setting, engine = case
    with float64_default():
        ours, _ = _trained(info.ours, setting, engine=engine)
        ref, _ = _trained(info.reference, setting, **_reference_options(info, setting))
    assert max_rel_diff(ours, ref) <= 1e-10


def test_lars_leaves_vectors_to_plain_momentum_sgd():
    w, b, s = make_params()
    opt = descentlab.LARS([w, b, s], lr=0.1, weight_decay=0.5, momentum=0.0)
    before = b.detach().clone()
    loss_fn([w, b, s], 0).backward()
    grad = b.grad.clone()
    opt.step()
    torch.testing.assert_close(b.detach(), before - 0.1 * grad, rtol=0, atol=0)


def test_lamb_first_step_by_hand():
    """t = 1: m = (1−β₁)g, v = (1−β₂)g², u = m/(√v + ε), θ ← θ − η/(1−β₁) · r u."""
    w = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    w.requires_grad_()
    g = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-6
    u = (1 - b1) * g / (((1 - b2) * g * g).sqrt() + eps)
    ratio = min(w.detach().norm(), 10.0) / (u.norm() + eps)
    expected = w.detach() - lr / (1 - b1) * ratio * u
    opt = descentlab.LAMB([w], lr=lr)
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(w.detach(), expected, rtol=1e-14, atol=0)


def test_lamb_pre_norm_leaves_gradients_and_groups_alone():
    params = make_params()
    opt = descentlab.LAMB(params, lr=0.01, pre_norm=True, max_grad_norm=0.05)
    loss_fn(params, 0).backward()
    grads = [p.grad.clone() for p in params]
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
    assert all(GRAD_SCALE_KEY not in group for group in opt.param_groups)
    plain, _ = _trained(descentlab.LAMB, {"lr": 0.01}, steps=1)
    assert max_rel_diff(params, plain) > 1e-6  # the rescaling changed the step


def test_lion_decoupled_decay_is_relative_to_the_constructors_lr():
    """As lion-pytorch: λ′ = λ/η₀ with η₀ the constructor's lr, for every group."""
    def grouped(cls):
        w, b, s = make_params()
        opt = cls([{"params": [w], "lr": 0.03}, {"params": [b, s]}], lr=0.01,
                  weight_decay=0.1, decoupled_weight_decay=True)
        for t in range(STEPS):
            opt.zero_grad()
            loss_fn([w, b, s], t).backward()
            opt.step()
        return [w, b, s], opt

    with float64_default():
        ours, opt = grouped(descentlab.Lion)
        ref, _ = grouped(lion_pytorch.Lion)
    assert [g["init_lr"] for g in opt.param_groups] == [0.01, 0.01]
    assert max_rel_diff(ours, ref) <= 1e-10


def test_lion_accepts_and_ignores_use_triton():
    p = torch.zeros(3, requires_grad=True)
    assert "use_triton" not in descentlab.Lion([p], use_triton=False).defaults
