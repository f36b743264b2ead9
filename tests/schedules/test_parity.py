"""Every schedule torch.optim.lr_scheduler also has, against torch, over 1,000+ steps.

torch's scheduler runs on a dummy ``torch.optim.SGD``; its ``group["lr"]``
(and ``momentum``/``betas[0]`` for the cycling schedulers) after each
``step()`` is the reference. Tolerance: 1e-12 relative.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

from descentlab.schedules import (
    CosineDecay,
    CosineWarmRestarts,
    Cyclic,
    ExponentialDecay,
    InverseTimeDecay,
    Join,
    LambdaSchedule,
    LinearSchedule,
    MultiplicativeSchedule,
    MultiStepDecay,
    OneCycle,
    PiecewiseConstant,
    PolynomialDecay,
    Product,
    StepDecay,
    one_cycle_momentum,
)

BASE = 0.1
RTOL = 1e-12


def torch_run(make, steps, key="lr", opt_cls=torch.optim.SGD, **opt_kwargs):
    """Values of ``group[key]`` that torch's scheduler sets for steps 0..steps-1."""
    p = torch.zeros(2, requires_grad=True)
    opt_kwargs.setdefault("lr", BASE)
    opt = opt_cls([p], **opt_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        read = (lambda g: g["betas"][0]) if key == "beta1" else (lambda g: g[key])
        out = [read(opt.param_groups[0])]
        for _ in range(steps - 1):
            opt.step()
            sched.step()
            out.append(read(opt.param_groups[0]))
    return np.array(out, dtype=np.float64)


def ours(schedule, steps):
    return np.array([schedule(t) for t in range(steps)], dtype=np.float64)


def assert_parity(mine, ref):
    assert len(mine) >= 1000
    np.testing.assert_allclose(mine, ref, rtol=RTOL, atol=0)


CASES = {
    "StepLR": (lambda o: L.StepLR(o, step_size=7, gamma=0.5), StepDecay(BASE, 7, 0.5)),
    "MultiStepLR": (
        lambda o: L.MultiStepLR(o, milestones=[100, 300, 300, 700], gamma=0.3),
        MultiStepDecay(BASE, [100, 300, 300, 700], 0.3),
    ),
    "ExponentialLR": (lambda o: L.ExponentialLR(o, gamma=0.995), ExponentialDecay(BASE, 0.995)),
    "PolynomialLR": (
        lambda o: L.PolynomialLR(o, total_iters=800, power=2.0),
        PolynomialDecay(BASE, 800, power=2.0),
    ),
    "PolynomialLR-linear": (
        lambda o: L.PolynomialLR(o, total_iters=1100, power=1.0),
        PolynomialDecay(BASE, 1100),
    ),
    "LinearLR-warmup": (
        lambda o: L.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=300),
        LinearSchedule(BASE * 0.1, BASE, 300),
    ),
    "LinearLR-decay": (
        lambda o: L.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=1000),
        LinearSchedule(BASE, BASE * 0.05, 1000),
    ),
    "ConstantLR": (
        lambda o: L.ConstantLR(o, factor=0.25, total_iters=40),
        PiecewiseConstant([BASE * 0.25, BASE], [40]),
    ),
    "LambdaLR": (
        lambda o: L.LambdaLR(o, lambda t: 1.0 / (1.0 + 0.01 * t)),
        LambdaSchedule(lambda t: 1.0 / (1.0 + 0.01 * t), scale=BASE),
    ),
    "LambdaLR-as-time-decay": (
        lambda o: L.LambdaLR(o, lambda t: 1.0 / (1.0 + 0.01 * t)),
        InverseTimeDecay(BASE, 0.01),
    ),
    "MultiplicativeLR": (
        lambda o: L.MultiplicativeLR(o, lambda t: 0.999 if t % 3 else 1.001),
        MultiplicativeSchedule(lambda t: 0.999 if t % 3 else 1.001, BASE),
    ),
    "CosineAnnealingWarmRestarts": (
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=37, eta_min=1e-3),
        CosineWarmRestarts(BASE, 37, min_value=1e-3),
    ),
    "CosineAnnealingWarmRestarts-T_mult": (
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-3),
        CosineWarmRestarts(BASE, 10, period_mult=2, min_value=1e-3),
    ),
    "CosineAnnealingWarmRestarts-T_mult3": (
        lambda o: L.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=3),
        CosineWarmRestarts(BASE, 5, period_mult=3),
    ),
    "SequentialLR-linear-exp": (
        lambda o: L.SequentialLR(
            o,
            [L.LinearLR(o, start_factor=0.01, total_iters=100), L.ExponentialLR(o, 0.997)],
            milestones=[100],
        ),
        Join([LinearSchedule(BASE * 0.01, BASE, 100), ExponentialDecay(BASE, 0.997)], [100]),
    ),
    "SequentialLR-three": (
        lambda o: L.SequentialLR(
            o,
            [
                L.ConstantLR(o, factor=0.5, total_iters=1000),
                L.StepLR(o, step_size=50, gamma=0.7),
                L.MultiStepLR(o, milestones=[200, 400]),
            ],
            milestones=[80, 500],
        ),
        Join(
            [PiecewiseConstant([BASE * 0.5], []), StepDecay(BASE, 50, 0.7),
             MultiStepDecay(BASE, [200, 400])],
            [80, 500],
        ),
    ),
    "ChainedScheduler-as-Product": (
        lambda o: L.ChainedScheduler(
            [L.LinearLR(o, start_factor=0.2, total_iters=150), L.ExponentialLR(o, 0.998)]
        ),
        Product(LinearSchedule(0.2, 1.0, 150), ExponentialDecay(BASE, 0.998)),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_lr_parity(name):
    make, schedule = CASES[name]
    steps = 1200
    assert_parity(ours(schedule, steps), torch_run(make, steps))


def test_cosine_annealing_matches_closed_form():
    """torch's recursive form drifts; its closed form is the reference (see CosineDecay)."""
    t_max, eta_min, steps = 1200, 1e-3, 1201
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=BASE)
    sched = L.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    ref = []
    for t in range(steps):
        sched.last_epoch = t
        ref.append(sched._get_closed_form_lr()[0])
    assert_parity(ours(CosineDecay(BASE, t_max, eta_min), steps), np.array(ref))
    # and the recursive values agree too, to the drift documented in CosineDecay
    rec = torch_run(lambda o: L.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), steps)
    np.testing.assert_allclose(ours(CosineDecay(BASE, t_max, eta_min), steps), rec, rtol=1e-12)


def test_cosine_periodic_follows_torch_past_t_max():
    t_max, steps = 300, 1200
    rec = torch_run(lambda o: L.CosineAnnealingLR(o, T_max=t_max, eta_min=1e-3), steps)
    assert_parity(ours(CosineDecay(BASE, t_max, 1e-3, periodic=True), steps), rec)


def test_cosine_holds_final_value_after_total_steps():
    s = CosineDecay(1.0, 100, final_value=0.01)
    assert s(100) == pytest.approx(0.01, abs=1e-15)
    assert s(150) == s(100) == s(10_000)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_one_cycle_parity(anneal, three_phase, opt_cls):
    total = 1500
    kw = dict(
        max_lr=0.5, total_steps=total, pct_start=0.25, anneal_strategy=anneal,
        three_phase=three_phase, div_factor=20.0, final_div_factor=500.0,
        base_momentum=0.8, max_momentum=0.93,
    )
    opt_kw = {"momentum": 0.9} if opt_cls is torch.optim.SGD else {}
    key = "momentum" if opt_cls is torch.optim.SGD else "beta1"

    def make(o):
        return L.OneCycleLR(o, **kw)

    lr_ref = torch_run(make, total, "lr", opt_cls, **opt_kw)
    mom_ref = torch_run(make, total, key, opt_cls, **opt_kw)
    lr = OneCycle(0.5, total, 0.25, anneal, div_factor=20.0, final_div_factor=500.0,
                  three_phase=three_phase)
    mom = one_cycle_momentum(total, 0.8, 0.93, 0.25, anneal, three_phase)
    assert_parity(ours(lr, total), lr_ref)
    assert_parity(ours(mom, total), mom_ref)
    assert lr(total + 10) == lr(total - 1) == pytest.approx(0.5 / 20 / 500, rel=1e-15)


@pytest.mark.parametrize(
    "mode,gamma,down", [("triangular", 1.0, None), ("triangular2", 1.0, 150),
                        ("exp_range", 0.999, 70)]
)
def test_cyclic_parity(mode, gamma, down):
    steps = 1300

    def make(o):
        return L.CyclicLR(o, base_lr=0.01, max_lr=0.2, step_size_up=100, step_size_down=down,
                          mode=mode, gamma=gamma, base_momentum=0.8, max_momentum=0.95)

    lr_ref = torch_run(make, steps, "lr", momentum=0.9)
    mom_ref = torch_run(make, steps, "momentum", momentum=0.9)
    lr = Cyclic(0.01, 0.2, 100, down, mode=mode, gamma=gamma)
    mom = Cyclic(0.95, 0.8, 100, down, mode=mode, gamma=gamma)  # inverse cycle: bounds swapped
    assert_parity(ours(lr, steps), lr_ref)
    assert_parity(ours(mom, steps), mom_ref)


def test_cyclic_custom_scale_fn_parity():
    steps = 1000

    def scale(x):
        return 1.0 / (1.0 + 0.5 * x)

    def make(o):
        return L.CyclicLR(o, 0.01, 0.1, step_size_up=60, scale_fn=scale,
                          scale_mode="cycle", cycle_momentum=False)

    assert_parity(ours(Cyclic(0.01, 0.1, 60, scale_fn=scale), steps), torch_run(make, steps))


def test_warm_restarts_cycle_boundaries_are_exact():
    s = CosineWarmRestarts(1.0, 10, period_mult=2, min_value=0.0)
    # restarts at 10, 30, 70, 150: value back to the peak, exactly
    for t in (0, 10, 30, 70, 150):
        assert s(t) == 1.0
    assert s.cycle(149) == (3, 79, 80)
    assert s(69) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
