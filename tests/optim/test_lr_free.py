"""Prodigy, DAdaptAdam and DAdaptSGD against prodigyopt and dadaptation, and the global-rule hook.

Parity in float64 over 80 steps with two parameter groups (≤1e-10 relative,
under the reference and the flat engines), the reductions once per step per
flat buffer, resume bit-identical, checkpoints from the reference packages,
copies, torch's LR schedulers, frozen groups and bad arguments.
"""

from __future__ import annotations

import dadaptation
import prodigyopt
import pytest
import torch

import descentlab
from descentlab.rules import lr_free, reduction
from tests.copies import HOWS, copy_by, saved_and_loaded
from tests.optim.helpers import float64_default, loss_fn, make_params, max_rel_diff

#: (ours, reference, settings of the whole optimizer, settings of the second group)
CASES = [
    (descentlab.Prodigy, prodigyopt.Prodigy, {}, {}),
    (descentlab.Prodigy, prodigyopt.Prodigy,
     {"weight_decay": 0.1, "use_bias_correction": True, "safeguard_warmup": True},
     {"weight_decay": 0.0, "eps": 1e-6}),
    (descentlab.Prodigy, prodigyopt.Prodigy,
     {"weight_decay": 0.1, "decouple": False, "betas": (0.0, 0.99), "d_coef": 0.5,
      "growth_rate": 1.05, "beta3": 0.9}, {"d0": 1e-5}),
    (descentlab.Prodigy, prodigyopt.Prodigy,
     {"betas": (0.8, 0.95), "weight_decay": 0.01, "d0": 1e-4}, {"safeguard_warmup": True}),
    (descentlab.DAdaptAdam, dadaptation.DAdaptAdam, {}, {}),
    (descentlab.DAdaptAdam, dadaptation.DAdaptAdam,
     {"weight_decay": 0.1, "use_bias_correction": True, "decouple": True},
     {"layer_scale": 0.5, "eps": 1e-6}),
    (descentlab.DAdaptAdam, dadaptation.DAdaptAdam,
     {"weight_decay": 0.1, "growth_rate": 1.02, "betas": (0.8, 0.99)}, {"weight_decay": 0.0}),
    (descentlab.DAdaptSGD, dadaptation.DAdaptSGD, {}, {}),
    (descentlab.DAdaptSGD, dadaptation.DAdaptSGD,
     {"momentum": 0.9, "weight_decay": 0.01, "growth_rate": 1.1}, {}),
]
#: registry name → class (tested here, not in the package registry: groups share one lr)
REGISTERED = {"prodigy": descentlab.Prodigy, "dadapt_adam": descentlab.DAdaptAdam,
              "dadapt_sgd": descentlab.DAdaptSGD}
IDS = [f"{ours.__name__}-{i}" for i, (ours, *_ ) in enumerate(CASES)]
STEPS = 80


def run(opt, params, start, count):
    for t in range(start, start + count):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()


def trained(cls, setting, second, steps=STEPS, dtype=torch.float64, **kwargs):
    w, b, s = make_params(dtype)
    opt = cls([{"params": [w]}, {"params": [b, s], **second}], **setting, **kwargs)
    run(opt, [w, b, s], 0, steps)
    return [w, b, s], opt


@pytest.mark.parametrize("engine", ["reference", "flat"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float64_parity_with_the_reference_package(case, engine):
    ours, reference, setting, second = case
    with float64_default():
        mine, opt = trained(ours, setting, second, engine=engine)
        theirs, ref = trained(reference, setting, second)
    assert max_rel_diff(mine, theirs) <= 1e-10
    assert opt.param_groups[0]["d"] == pytest.approx(ref.param_groups[0]["d"], rel=1e-10)
    assert opt.param_groups[0]["d"] != setting.get("d0", 1e-6)  # the estimate moved
    assert opt.param_groups[1]["k"] == ref.param_groups[1]["k"] == STEPS


#: dot products per piece and step: Prodigy ⟨g, θ₀ − θ⟩, DAdaptAdam ⟨g, s/d⟩, DAdaptSGD ⟨g, s⟩, ‖s‖²
DOTS = {descentlab.Prodigy: 1, descentlab.DAdaptAdam: 1, descentlab.DAdaptSGD: 2}


@pytest.mark.parametrize("engine,pieces", [("flat", 1), ("reference", 5)])
@pytest.mark.parametrize("cls", list(DOTS), ids=lambda c: c.__name__)
def test_reductions_run_once_per_step_over_the_flat_buffer(cls, engine, pieces, monkeypatch):
    dots, sums = [], []
    monkeypatch.setattr(lr_free, "dot", lambda a, b: dots.append(a.numel()) or torch.dot(
        a.reshape(-1), b.reshape(-1)))
    monkeypatch.setattr(lr_free, "global_sums", lambda *v: sums.append(len(v)) or
                        reduction.global_sums(*v))
    params = [torch.randn(4, 3, requires_grad=True) for _ in range(5)]
    opt = cls(params, engine=engine)
    for step in range(3):
        dots.clear(), sums.clear()
        opt.zero_grad()
        sum((p**2).sum() for p in params).backward()
        opt.step()
        first_sgd = cls is descentlab.DAdaptSGD and step == 0  # also ‖g₀‖², once
        assert len(sums) == 1 + first_sgd  # one host synchronisation per step
        assert len(dots) == (DOTS[cls] + first_sgd) * pieces
        if engine == "flat":  # each dot spans all five parameters (one flat buffer)
            assert min(dots) >= 5 * 12


RICHEST = {cls: max((c for c in CASES if c[0] is cls), key=lambda c: len(c[2]) + len(c[3]))
           for cls in DOTS}


@pytest.mark.parametrize("via_torch_save", [False, True], ids=["in-memory", "torch.save"])
@pytest.mark.parametrize("cls", list(DOTS), ids=lambda c: c.__name__)
def test_state_dict_resume_is_bit_identical(cls, via_torch_save):
    _, _, setting, second = RICHEST[cls]
    full, _ = trained(cls, setting, second, steps=30)
    part, opt = trained(cls, setting, second, steps=20)
    state = opt.state_dict()
    assert state["param_groups"][0]["d"] == opt.param_groups[0]["d"]
    assert "k" in state["param_groups"][1]
    if via_torch_save:
        state = saved_and_loaded(state)
    params = [p.detach().clone().requires_grad_() for p in part]
    resumed = cls([{"params": params[:1]}, {"params": params[1:], **second}], **setting)
    resumed.load_state_dict(state)
    run(resumed, params, 20, 10)
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))


@pytest.mark.parametrize("cls", list(DOTS), ids=lambda c: c.__name__)
def test_a_checkpoint_of_the_reference_package_continues_here(cls):
    ours, reference, setting, second = RICHEST[cls]
    with float64_default():
        full, _ = trained(reference, setting, second, steps=30)
        part, ref = trained(reference, setting, second, steps=20)
        params = [p.detach().clone().requires_grad_() for p in part]
        mine = cls([{"params": params[:1]}, {"params": params[1:], **second}], **setting)
        mine.load_state_dict(ref.state_dict())
        run(mine, params, 20, 10)
    assert max_rel_diff(params, full) <= 1e-10


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("cls", list(DOTS), ids=lambda c: c.__name__)
def test_copy_continues_the_same_and_shares_nothing(cls, how):
    _, _, setting, second = RICHEST[cls]
    params, opt = trained(cls, setting, second, steps=10)
    twin = copy_by(opt, how)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    run(twin, twin_params, 10, 10)
    run(opt, params, 10, 10)
    uninterrupted, _ = trained(cls, setting, second, steps=20)
    for a, b, c in zip(params, twin_params, uninterrupted, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("cls", list(DOTS), ids=lambda c: c.__name__)
def test_torch_schedulers_drive_them_as_they_drive_the_reference(cls):
    ours, reference, setting, second = RICHEST[cls]

    def scheduled(kind):
        params = make_params()
        opt = kind([{"params": params[:1]}, {"params": params[1:], **second}], **setting)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=50)  # lr > 0 (DAdaptSGD's fails at 0)
        for t in range(25):
            opt.zero_grad()
            loss_fn(params, t).backward()
            opt.step()
            sched.step()
        return params, opt.param_groups[0]["lr"]

    with float64_default():
        (mine, lr), (theirs, ref_lr) = scheduled(ours), scheduled(reference)
    assert lr == ref_lr < 1.0 and max_rel_diff(mine, theirs) <= 1e-10


@pytest.mark.parametrize("cls", list(DOTS), ids=lambda c: c.__name__)
def test_frozen_group_and_parameters_without_gradients(cls):
    ours, reference, setting, _ = RICHEST[cls]

    def frozen(kind):
        w, b, s = make_params()
        idle = torch.ones(3, requires_grad=True)
        opt = kind([{"params": [w, idle]}, {"params": [b, s], "lr": 0.0}], **setting)
        run(opt, [w, b, s], 0, 20)
        return [w, b, s], idle, opt

    with float64_default():
        mine, idle, opt = frozen(ours)
        theirs, _, _ = frozen(reference)
    assert torch.equal(idle.detach(), torch.ones(3)) and not opt.state.get(idle)
    assert max_rel_diff(mine, theirs) <= 1e-10


def test_groups_with_other_learning_rates_or_rules_are_refused():
    w, b, _ = make_params()
    opt = descentlab.Prodigy([{"params": [w]}, {"params": [b], "lr": 0.5}])
    w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match=r"param group 1 has lr=0.5"):
        opt.step()
    assert torch.equal(w.detach(), before)
    with pytest.raises(ValueError, match="cannot run rule 'adamw'"):
        descentlab.DAdaptAdam([{"params": [w], "rule": "adamw"}])


@pytest.mark.parametrize("kwargs,match", [
    ({"slice_p": 11}, "slice_p=11 is not supported"),
    ({"d0": 0.0}, "d0 must be a finite number > 0"),
    ({"growth_rate": 0.0}, r"growth_rate must be in \(0.0, inf\]"),
    ({"beta3": 1.0}, r"beta3 must be in \[0.0, 1.0\)"),
    ({"betas": (0.9, 1.0)}, r"betas\[1\] must be in"),
])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        descentlab.Prodigy([torch.zeros(2, requires_grad=True)], **kwargs)


def test_maximize_climbs_as_minimising_the_negated_objective():
    def climbed(sign, **kw):
        params = make_params()
        opt = descentlab.DAdaptAdam(params, **kw)
        for t in range(20):
            opt.zero_grad()
            loss_fn(params, t, sign).backward()
            opt.step()
        return params

    assert max_rel_diff(climbed(-1.0, maximize=True), climbed(1.0)) == 0.0
