"""Hand-computed values for the schedules torch lacks, combinators, and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from descentlab.schedules import (
    AnnealCycle,
    Constant,
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
    ReduceOnPlateau,
    StepDecay,
    Warmup,
    WarmupStableDecay,
    warmup_cosine,
)


def test_inverse_time_decay():
    s = InverseTimeDecay(0.5, decay_rate=0.1)
    assert [s(t) for t in (0, 1, 10, 90)] == [0.5, 0.5 / 1.1, 0.25, 0.05]
    st = InverseTimeDecay(1.0, decay_rate=1.0, decay_steps=10, staircase=True)
    assert [st(t) for t in (0, 9, 10, 19, 20)] == [1.0, 1.0, 0.5, 0.5, 1.0 / 3.0]


def test_exponential_with_transition_steps():
    s = ExponentialDecay(2.0, 0.5, transition_steps=4)
    assert s(2) == pytest.approx(2.0 * 0.5**0.5)
    assert ExponentialDecay(2.0, 0.5, 4, staircase=True)(7) == 1.0


def test_polynomial_end_value():
    s = PolynomialDecay(1.0, 10, power=2.0, end_value=0.1)
    assert s(5) == pytest.approx(0.1 + 0.9 * 0.25)
    assert s(10) == s(20) == pytest.approx(0.1)


def test_warmup_shift_and_no_shift():
    inner = CosineDecay(1.0, 100)
    shifted = Warmup(inner, 10, start_value=0.1)
    assert shifted(0) == 0.1
    assert shifted(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert shifted(10) == inner(0) == 1.0
    assert shifted(60) == inner(50)
    replaced = Warmup(inner, 10, shift=False)
    assert replaced(5) == pytest.approx(0.5 * inner(10))
    assert replaced(10) == inner(10) and replaced(60) == inner(60)


def test_warmup_cosine_matches_hugging_face_formula():
    peak, warm, total = 3e-4, 100, 1000
    s = warmup_cosine(peak, warm, total)

    def hf(t):  # transformers.get_cosine_schedule_with_warmup, as a formula
        if t < warm:
            return peak * t / warm
        progress = (t - warm) / (total - warm)
        return peak * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    np.testing.assert_allclose([s(t) for t in range(1200)], [hf(min(t, total)) for t in
                                                              range(1200)], rtol=1e-12, atol=1e-20)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd(shape):
    s = WarmupStableDecay(1.0, 100, warmup_steps=10, decay_steps=20, start_value=0.0,
                          final_value=0.1, decay_shape=shape)
    assert s(0) == 0.0 and s(5) == 0.5 and s(10) == 1.0 and s(79) == 1.0 and s(80) == 1.0
    f = 0.25
    keep = {"linear": 1 - f, "cosine": (1 + math.cos(math.pi * f)) / 2, "1-sqrt": 0.5}[shape]
    assert s(85) == pytest.approx(0.1 + 0.9 * keep, rel=1e-15)
    assert s(100) == pytest.approx(0.1, rel=1e-15) and s(500) == s(100)
    values = s.values(101)
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))


def test_join_product_piecewise():
    j = Join([Constant(1.0), LinearSchedule(0.0, 1.0, 10), 0.5], [5, 15])
    assert [j(t) for t in (0, 4, 5, 10, 14, 15, 99)] == [1.0, 1.0, 0.0, 0.5, 0.9, 0.5, 0.5]
    p = 2.0 * StepDecay(1.0, 3, 0.5) * LinearSchedule(0.0, 1.0, 4)
    assert [p(t) for t in (0, 2, 3, 4, 6)] == [0.0, 1.0, 0.75, 1.0, 0.5]
    pc = PiecewiseConstant([3.0, 2.0, 1.0], [10, 20])
    assert [pc(t) for t in (0, 9, 10, 19, 20)] == [3.0, 3.0, 2.0, 2.0, 1.0]
    assert MultiStepDecay(1.0, [2, 2, 5], 0.5)(2) == 0.25


def test_multiplicative_is_random_access():
    s = MultiplicativeSchedule(lambda t: 1.0 - 1.0 / (t + 2), 2.0)
    assert s(3) == 2.0 * (2 / 3) * (3 / 4) * (4 / 5)
    fresh = MultiplicativeSchedule(lambda t: 1.0 - 1.0 / (t + 2), 2.0)
    assert fresh(50) == s(50) and fresh(7) == s(7)


def test_inverse_cyclic_is_the_mirror_image():
    lr = Cyclic(0.1, 1.0, 10, mode="triangular2")
    mom = Cyclic(0.95, 0.85, 10, mode="triangular2")
    for t in range(0, 100, 3):
        frac = (lr(t) - 0.1) / 0.9
        assert mom(t) == pytest.approx(0.95 - 0.1 * frac)


def test_values_and_call_check_steps():
    s = CosineDecay(1.0, 10)
    assert s.values(3) == [s(0), s(1), s(2)]
    assert s(np.int64(4)) == s(4)
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        s(-1)
    with pytest.raises(TypeError, match="step must be an integer, got 1.5"):
        s(1.5)


BAD = [
    (lambda: StepDecay(0.1, 0), "step_size must be an integer >= 1, got 0"),
    (lambda: StepDecay(-0.1, 10), "init_value must be a finite number >= 0, got -0.1"),
    (lambda: CosineDecay(0.1, -5), "total_steps"),
    (lambda: CosineDecay(0.1, 10.0), "total_steps must be an integer"),
    (lambda: CosineWarmRestarts(0.1, 0), "period"),
    (lambda: CosineWarmRestarts(0.1, 10, period_mult=0), "period_mult"),
    (lambda: Cyclic(0.1, 1.0, step_size_up=0), "step_size_up"),
    (lambda: Cyclic(0.1, 1.0, 10, mode="sine"), "mode must be one of"),
    (lambda: MultiStepDecay(0.1, [5, 3]), "milestones must be non-decreasing"),
    (lambda: ExponentialDecay(0.1, 0.0), "gamma"),
    (lambda: LinearSchedule(-1.0, 0.0, 5), "start_value"),
    (lambda: Constant(-0.01), "value must be a finite number >= 0"),
    (lambda: Constant(float("nan")), "value"),
    (lambda: Join([1.0, 2.0], [5, 5]), "must have one entry fewer"),
    (lambda: Join([1.0, 2.0, 3.0], [5, 5]), "strictly increasing"),
    (lambda: Join([1.0, 2.0], [0]), "boundaries\\[0\\] must be an integer >= 1"),
    (lambda: Warmup(CosineDecay(1.0, 10), 20, shift=False), "warmup_steps=20 is longer"),
    (lambda: Warmup(CosineDecay(1.0, 10), 0), "warmup_steps"),
    (lambda: warmup_cosine(1.0, 100, 100), "warmup_steps=100 must be shorter than total"),
    (lambda: WarmupStableDecay(1.0, 100, 60, 50), "must not exceed total_steps"),
    (lambda: WarmupStableDecay(1.0, 100, 10, 10, decay_shape="exp"), "decay_shape"),
    (lambda: OneCycle(1.0, 100, pct_start=0.005), "pct_start \\* total_steps must be > 1"),
    (lambda: OneCycle(1.0, 100, pct_start=1.5), "pct_start must be in"),
    (lambda: OneCycle(1.0, 100, anneal_strategy="exp"), "anneal_strategy"),
    (lambda: OneCycle(1.0, 100, pct_start=0.6, three_phase=True), "phase ends must increase"),
    (lambda: AnnealCycle(1.0, 2.0, 0.0, 0), "total_steps"),
    (lambda: ReduceOnPlateau(0.1, factor=1.0), "factor must be in \\(0.0, 1.0\\), got 1.0"),
    (lambda: LambdaSchedule(3.0), "fn must be callable"),
    (lambda: MultiplicativeSchedule(lambda t: 1.0, -2.0), "init_value"),
    (lambda: Join(["x"], []), "schedules\\[0\\] must be a Schedule or a number"),
]


@pytest.mark.parametrize("make,match", BAD, ids=[m for _, m in BAD])
def test_bad_arguments(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
