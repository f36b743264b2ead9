"""The conformance suite for optimizers whose reference is another package (package_infos.py).

Parity in float64 over 100 steps with the reference class; bit-identical
resume through state_dict / torch.save(weights_only=True); checkpoints both
ways with the reference package; copies; torch's LR schedulers; parameter
groups; parameters without gradients; closures; hooks; dtypes.
"""

from __future__ import annotations

import pytest
import torch

import descentlab
from tests.copies import HOWS, copy_by, saved_and_loaded
from tests.optim.helpers import float64_default, loss_fn, make_params, max_rel_diff
from tests.optim.package_infos import PACKAGE_INFOS, build, richest

IDS = [info.name for info in PACKAGE_INFOS]
CASES = [(info, s) for info in PACKAGE_INFOS for s in info.settings]
CASE_IDS = ["-".join([i.name] + [f"{k}={v}" for k, v in s.items()]) for i, s in CASES]


def run(opt, params, start, count, info, seed=None):
    """``count`` steps from batch ``start``; ``seed`` reseeds torch's generator first (probes)."""
    if seed is not None:
        torch.manual_seed(seed)
    sign = -1.0 if getattr(opt, "maximize", opt.param_groups[0].get("maximize", False)) else 1.0
    for t in range(start, start + count):
        opt.zero_grad()
        info.backward(loss_fn(params, t, sign))
        opt.step()


def trained(info, cls, setting, steps=100, dtype=torch.float64):
    params = make_params(dtype)
    opt = build(info, cls, params, setting)
    run(opt, params, 0, steps, info, seed=0)
    return params, opt


def at_evaluation_point(opt, params):
    if hasattr(opt, "eval"):
        opt.eval()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float64_parity_with_the_reference_over_100_steps(case):
    info, setting = case
    if info.bitwise is info.reference:
        pytest.skip("the reference is the bit-for-bit class: the next test compares exactly")
    with float64_default():
        ours, opt = trained(info, info.ours, setting)
        ref, ref_opt = trained(info, info.reference, setting)
        assert max_rel_diff(ours, ref) <= info.tolerance  # the training point
        assert max_rel_diff(at_evaluation_point(opt, ours),
                            at_evaluation_point(ref_opt, ref)) <= info.tolerance


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bitwise_equal_to_the_reference_packages_fast_class(case, dtype):
    info, setting = case
    if info.bitwise is None:
        pytest.skip("no class of the reference computes the same arithmetic")
    for foreach in (False, True):
        ours, opt = trained(info, info.ours, setting, dtype=dtype)
        ref, ref_opt = trained(info, info.bitwise, {**setting, "foreach": foreach}, dtype=dtype)
        assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(at_evaluation_point(opt, ours),
                                                     at_evaluation_point(ref_opt, ref),
                                                     strict=True))


@pytest.mark.parametrize("via_torch_save", [False, True], ids=["in-memory", "torch.save"])
@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_state_dict_resume_is_bit_identical(info, via_torch_save):
    setting = richest(info)
    full, _ = trained(info, info.ours, setting, steps=40)
    part, opt = trained(info, info.ours, setting, steps=25)
    state = opt.state_dict()
    if via_torch_save:
        state = saved_and_loaded(state)
    params = [p.detach().clone().requires_grad_() for p in part]
    resumed = info.ours(params, **setting)
    resumed.load_state_dict(state)
    run(resumed, params, 25, 15, info)
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))


@pytest.mark.parametrize("direction", ["reference-to-ours", "ours-to-reference"])
@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_checkpoints_move_both_ways_with_the_reference_package(info, direction):
    if info.bitwise is None:
        pytest.skip("no class of the reference computes the same arithmetic")
    setting = richest(info)
    first, second = (info.bitwise, info.ours) if direction == "reference-to-ours" else (
        info.ours, info.bitwise)
    full, _ = trained(info, second, setting, steps=30)
    part, opt = trained(info, first, setting, steps=20)
    params = [p.detach().clone().requires_grad_() for p in part]
    other = second(params, **setting)
    other.load_state_dict(opt.state_dict())
    run(other, params, 20, 10, info)
    assert all(torch.equal(a, b) for a, b in zip(params, full, strict=True))


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_copy_is_an_independent_optimizer_that_continues_the_same(info, how):
    setting = richest(info)
    params, opt = trained(info, info.ours, setting, steps=10)
    twin = copy_by(opt, how)
    twin_params = [p for g in twin.param_groups for p in g["params"]]
    assert type(twin) is type(opt)
    assert all(a is not b for a, b in zip(twin_params, params, strict=True))
    run(twin, twin_params, 10, 10, info, seed=1)  # first: had it shared anything, the original
    run(opt, params, 10, 10, info, seed=1)        # would change
    uninterrupted, again = trained(info, info.ours, setting, steps=10)
    run(again, uninterrupted, 10, 10, info, seed=1)
    for a, b, c in zip(params, twin_params, uninterrupted, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=1),
}


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_torch_schedulers_drive_them_as_they_drive_the_reference(info, scheduler):
    reference = info.bitwise or info.reference
    tolerance = 0.0 if info.bitwise else info.tolerance

    def scheduled(cls):
        params = make_params()
        opt = build(info, cls, params, richest(info))
        sched = SCHEDULERS[scheduler](opt)
        lrs = []
        torch.manual_seed(0)
        sign = -1.0 if getattr(opt, "maximize", opt.param_groups[0].get("maximize", False)) else 1.0
        for t in range(30):
            opt.zero_grad()
            loss = loss_fn(params, t, sign)
            info.backward(loss)
            opt.step()
            sched.step(float(loss.detach())) if scheduler == "ReduceLROnPlateau" else sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        return params, lrs

    ours, ours_lrs = scheduled(info.ours)
    ref, ref_lrs = scheduled(reference)
    assert ours_lrs == ref_lrs and len(set(ours_lrs)) > 1
    assert max_rel_diff(ours, ref) <= tolerance


@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_param_groups_with_different_hyperparameters(info):
    reference = info.bitwise or info.reference
    tolerance = 0.0 if info.bitwise else info.tolerance

    def grouped(cls):
        w, b, s = make_params()
        opt = cls([{"params": [w], **info.settings[0]}, {"params": [b, s], **richest(info)}])
        info.prepare(opt)
        run(opt, [w, b, s], 0, 30, info, seed=0)
        return [w, b, s]

    with float64_default():
        assert max_rel_diff(grouped(info.ours), grouped(reference)) <= tolerance


@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_parameter_without_gradient_is_untouched_and_gets_no_state(info):
    params = make_params()
    idle = torch.randn(4, dtype=torch.float64, requires_grad=True)
    before = idle.detach().clone()
    opt = build(info, info.ours, [*params, idle], richest(info))
    run(opt, params, 0, 3, info)
    assert torch.equal(idle.detach(), before) and not opt.state.get(idle)
    assert all(opt.state[p] for p in params)


@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_closure_step_returns_loss_and_gradients_are_left_alone(info):
    params = make_params()
    opt = build(info, info.ours, params, richest(info))
    sign = -1.0 if getattr(opt, "maximize", opt.param_groups[0].get("maximize", False)) else 1.0
    for t in range(3):
        def closure(t=t):
            opt.zero_grad()
            loss = loss_fn(params, t, sign)
            info.backward(loss)
            return loss
        expected = float(loss_fn(params, t, sign).detach())
        loss = opt.step(closure)
        assert float(loss.detach()) == expected  # the loss before the update
    closure(3)
    grads = [p.grad.detach().clone() for p in params]
    opt.step()  # the reference packages write into p.grad (schedulefree: the Adam
    # denominator, weight decay; pytorch_optimizer: maximize, coupled decay); ours do not
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))


@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_step_and_state_dict_hooks_fire(info):
    params = make_params()
    opt = build(info, info.ours, params, richest(info))
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("state_dict"))
    run(opt, params, 0, 1, info)
    opt.state_dict()
    assert calls == ["pre", "post", "state_dict"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_dtypes_keep_state_in_the_parameters_dtype(info, dtype):
    params, opt = trained(info, info.ours, info.settings[0], steps=5, dtype=dtype)
    assert all(p.dtype == dtype and torch.isfinite(p).all() for p in params)
    for p in params:
        assert all(v.dtype == dtype for v in opt.state[p].values() if v.dim() > 0)


@pytest.mark.parametrize("info", PACKAGE_INFOS, ids=IDS)
def test_registered_under_its_name(info):
    opt = descentlab.make_optimizer(info.name, make_params(), lr=0.05)
    assert type(opt) is info.ours and opt.param_groups[0]["lr"] == 0.05
    assert info.name in descentlab.available_optimizers()
