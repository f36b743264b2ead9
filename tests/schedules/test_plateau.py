"""ReduceOnPlateau against torch's ReduceLROnPlateau, and composed with closed-form schedules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

from descentlab.schedules import (
    CosineDecay,
    Join,
    LinearSchedule,
    ReduceOnPlateau,
    Warmup,
    attach,
)

BASE = 0.1


def metric_sequence(n: int, mode: str, seed: int) -> list[float]:
    """Improving, then noisy plateaus, then improving again: exercises every branch."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    curve = 1.0 / (1.0 + 0.05 * np.minimum(t, 120)) + 0.002 * rng.standard_normal(n)
    curve[300:] -= 0.1 * (1 - np.exp(-(t[300:] - 300) / 50.0))
    return list(curve if mode == "min" else -curve)


CONFIGS = [
    dict(mode="min", factor=0.5, patience=5, threshold=1e-4, threshold_mode="rel", cooldown=0,
         min_lr=0.0),
    dict(mode="max", factor=0.3, patience=3, threshold=1e-3, threshold_mode="abs", cooldown=4,
         min_lr=2e-4),
    dict(mode="min", factor=0.9, patience=0, threshold=0.0, threshold_mode="abs", cooldown=2,
         min_lr=1e-3),
    dict(mode="max", factor=0.1, patience=10, threshold=1e-2, threshold_mode="rel", cooldown=0,
         min_lr=1e-9),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['mode']}-{c['threshold_mode']}")
def test_plateau_parity_with_torch(cfg):
    metrics = metric_sequence(1000, cfg["mode"], seed=len(str(cfg)))
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=BASE)
    ref_sched = L.ReduceLROnPlateau(opt, **cfg)
    ref = []
    for m in metrics:
        ref_sched.step(m)
        ref.append(opt.param_groups[0]["lr"])

    q = torch.zeros(1, requires_grad=True)
    opt2 = torch.optim.SGD([q], lr=BASE)
    kw = dict(cfg)
    kw["min_value"] = kw.pop("min_lr")
    ctrl = attach(opt2, lr=ReduceOnPlateau(BASE, **kw))
    mine = []
    for m in metrics:
        ctrl.step(m)
        mine.append(opt2.param_groups[0]["lr"])
    assert len(set(ref)) > 2, "the metric sequence must trigger reductions"
    np.testing.assert_allclose(mine, ref, rtol=1e-12, atol=0)


def test_plateau_hand_computed():
    s = ReduceOnPlateau(1.0, factor=0.5, patience=1, threshold=0.0, threshold_mode="abs",
                        cooldown=1, min_value=0.2)
    seen = []
    for m in [5, 4, 4, 4, 4, 4, 4, 4, 4]:
        s.observe(m, 0)
        seen.append(s(0))
    # bad counts: 4 (ok), 4 (1), 4 (2 > 1: reduce, cooldown 1), 4 (cooldown), 4 (1), 4 (2: reduce)
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]
    for m in [4] * 6:
        s.observe(m, 0)
    assert s(0) == 0.2  # min_value floor
    assert s.num_reductions == 3  # further reductions change less than eps: skipped


def test_warmup_then_plateau_composes():
    """Warm-up for 4 steps, then the metric decides; warm-up metrics are not counted."""
    inner = ReduceOnPlateau(0.1, factor=0.5, patience=1, threshold=0.0, threshold_mode="abs")
    sched = Warmup(inner, 4, start_value=0.0)
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    ctrl = attach(opt, lr=sched)
    lrs = [opt.param_groups[0]["lr"]]
    for m in [1.0] * 9:  # a flat metric from the start
        ctrl.step(m)
        lrs.append(opt.param_groups[0]["lr"])
    expected = [0.0, 0.025, 0.05, 0.075, 0.1,  # warm-up (metrics ignored)
                0.1, 0.1, 0.05, 0.05, 0.025]  # from step 4: best, bad 1, bad 2 -> halve, ...
    np.testing.assert_allclose(lrs, expected, rtol=1e-15)


def test_plateau_on_top_of_cosine_and_min_never_raises_base():
    s = ReduceOnPlateau(CosineDecay(1.0, 100), factor=0.1, patience=0, min_value=0.05)
    s.observe(1.0, 10)
    s.observe(2.0, 10)  # worse: reduce
    assert s(10) == pytest.approx(max(0.1 * CosineDecay(1.0, 100)(10), 0.05))
    assert s(99) == pytest.approx(CosineDecay(1.0, 100)(99))  # base below min_value: untouched


def test_join_routes_metrics_to_active_schedule_only():
    plateau = ReduceOnPlateau(0.1, factor=0.5, patience=0)
    sched = Join([LinearSchedule(0.0, 0.1, 10), plateau], [10])
    sched.observe(1.0, 3)
    sched.observe(2.0, 5)
    assert plateau.num_reductions == 0 and plateau.best == float("inf")
    sched.observe(1.0, 10)
    sched.observe(2.0, 11)
    assert plateau.num_reductions == 1 and sched(12) == 0.05


def test_plateau_state_dict_round_trip():
    a = ReduceOnPlateau(0.1, factor=0.5, patience=0)
    for m in [3.0, 2.0, 2.5, 2.6]:
        a.observe(m, 0)
    b = ReduceOnPlateau(0.1, factor=0.5, patience=0)
    b.load_state_dict(a.state_dict())
    for m in [2.7, 1.0, 1.5]:
        a.observe(m, 0)
        b.observe(m, 0)
        assert a(0) == b(0)
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(factor=1.0), "factor"),
        (dict(factor=1.5), "factor"),
        (dict(factor=0.0), "factor"),
        (dict(mode="mean"), "mode"),
        (dict(threshold_mode="pct"), "threshold_mode"),
        (dict(patience=-1), "patience"),
        (dict(cooldown=1.5), "cooldown"),
        (dict(min_value=-1e-3), "min_value"),
    ],
)
def test_plateau_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ReduceOnPlateau(0.1, **kwargs)
