"""Each detector: a history that triggers it and one that does not."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.diagnostics.detectors import (
    DeadReluDetector,
    DivergenceDetector,
    ExplodingGradientDetector,
    NonFiniteDetector,
    OscillationDetector,
    OverfittingDetector,
    PlateauDetector,
    StalledOptimizerDetector,
    VanishingGradientDetector,
    plateau_indices,
)
from descentlab.diagnostics.findings import FindingKind, Severity
from descentlab.diagnostics.records import (
    ActivationStats,
    Check,
    History,
    LayerStats,
    NonFiniteTrace,
)


def _losses(values, val=None, val_every=1):
    h = History(steps=list(range(len(values))), losses=list(values))
    if val is not None:
        h.val_steps = [(i + 1) * val_every - 1 for i in range(len(val))]
        h.val_losses = list(val)
    return h


def _check(step, rhos, updates=None, grads_finite=True, not_in=(), dead=None):
    layers = {}
    for i, r in enumerate(rhos):
        st = LayerStats(f"l{i}", 10, 1.0, r)
        if updates is not None:
            st.update_norm = updates[i]
        layers[st.name] = st
    acts = {f"a{i}": ActivationStats(f"a{i}", d) for i, d in enumerate(dead or [])}
    return Check(step, layers, [0.1], acts, grads_finite, not_in_optimizer=list(not_in))


def _decay(n=200, noise=0.02, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [2.3 * math.exp(-i / 60) + noise * float(torch.rand(1, generator=g)) for i in range(n)]


# --------------------------------------------------------------- non-finite, divergence
def test_non_finite_fires_on_nan_loss_and_names_module():
    h = _losses([2.0, 1.5, float("nan")])
    h.non_finite = NonFiniteTrace(2, "net.3", "Linear", False, "its parameters are non-finite")
    f = NonFiniteDetector()(h)
    assert f is not None and f.kind is FindingKind.NON_FINITE and f.severity is Severity.ERROR
    assert f.step == 2 and f.evidence["module"] == "net.3"


def test_non_finite_fires_on_inf_gradients():
    h = _losses([2.0, 1.5])
    h.checks.append(_check(1, [0.1, 0.1], grads_finite=False))
    assert NonFiniteDetector()(h).step == 1


def test_non_finite_quiet_on_finite_run():
    h = _losses(_decay())
    h.checks.append(_check(10, [0.1, 0.1]))
    assert NonFiniteDetector()(h) is None


def test_divergence_fires_on_blow_up_and_nan():
    f = DivergenceDetector()(_losses([2.3, 2.0, 1.8, 50.0, 400.0, 3e4]))
    assert f is not None and f.kind is FindingKind.DIVERGENCE
    assert DivergenceDetector()(_losses([2.3, float("inf")])).step == 1


def test_divergence_quiet_on_noisy_descent_and_late_noise():
    assert DivergenceDetector()(_losses(_decay(noise=0.3))) is None
    # a late noisy batch 8x the best but below the starting loss is not divergence
    assert DivergenceDetector(window=1)(_losses([2.3, 1.0, 0.05, 0.05, 0.4, 0.05])) is None


# --------------------------------------------------------------- gradient scale
def test_vanishing_fires_relative_to_layer_scale():
    h = History(checks=[_check(0, [0.0, 1e-9, 1e-3, 0.5])])
    f = VanishingGradientDetector()(h)
    assert f is not None and f.kind is FindingKind.VANISHING_GRADIENTS
    assert f.evidence["layers"] == ["l0", "l1"]


def test_vanishing_spread_criterion_catches_unreached_layers():
    # all above the absolute floor, but the first layer gets 1e-5 of the last layer's signal
    h = History(checks=[_check(0, [2e-5, 0.1, 1.0])])
    assert VanishingGradientDetector()(h).evidence["layers"] == ["l0"]


def test_vanishing_quiet_on_healthy_and_on_zero_scale_layers():
    h = History(checks=[_check(0, [0.05, 0.1, 0.3])])
    assert VanishingGradientDetector()(h) is None
    # a layer with all-zero parameters has no scale: it is not judged
    zero = _check(0, [0.1, 0.2])
    zero.layers["l0"].param_norm = 0.0
    assert VanishingGradientDetector()(History(checks=[zero])) is None


def test_vanishing_patience():
    h = History(checks=[_check(0, [0.1, 0.1]), _check(10, [1e-9, 0.1])])
    assert VanishingGradientDetector(patience=2)(h) is None
    h.checks.append(_check(20, [1e-9, 0.1]))
    assert VanishingGradientDetector(patience=2)(h).step == 20


def test_exploding_fires_on_relative_size_and_on_spike():
    f = ExplodingGradientDetector()(History(checks=[_check(0, [50.0, 0.1])]))
    assert f is not None and f.kind is FindingKind.EXPLODING_GRADIENTS
    spikes = [_check(i, [0.01, 0.01]) for i in range(4)] + [_check(4, [0.01, 5.0])]
    g = ExplodingGradientDetector()(History(checks=spikes))
    assert g is not None and g.evidence["criteria"] == ["spike"]


def test_exploding_quiet_when_large_gradients_match_large_weights():
    c = _check(0, [0.1, 0.2])
    for st in c.layers.values():  # huge weights, huge gradients, same ratio
        st.param_norm, st.grad_norm = 1e4, st.grad_norm * 1e4
    steady = [_check(i, [0.01, 0.02]) for i in range(5)]
    assert ExplodingGradientDetector()(History(checks=[c])) is None
    assert ExplodingGradientDetector()(History(checks=steady)) is None


# --------------------------------------------------------------- plateau
def test_plateau_rule_matches_torch_reduce_lr_on_plateau():
    g = torch.Generator().manual_seed(0)
    values = [
        1.0 / (1 + i) if i < 15 else 0.0625 + 1e-6 * float(torch.rand(1, generator=g))
        for i in range(60)
    ]
    values[40] = 0.01  # an improvement in the middle resets the count
    for patience, threshold in [(3, 1e-4), (5, 0.1), (0, 1e-4)]:
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, patience=patience, threshold=threshold, eps=0.0
        )
        fired, lr = [], 1.0
        for i, v in enumerate(values):
            sched.step(v)
            if opt.param_groups[0]["lr"] < lr:
                fired.append(i)
                lr = opt.param_groups[0]["lr"]
        assert plateau_indices(values, patience, threshold) == fired


def test_plateau_fires_on_flat_loss():
    h = _losses([2.3] * 5 + [2.302585] * 600)
    f = PlateauDetector()(h)
    assert f is not None and f.kind is FindingKind.PLATEAU


def test_plateau_uses_validation_when_present():
    h = _losses(_decay(), val=[1.0, 0.8, 0.6] + [0.59] * 12)
    assert PlateauDetector()(h).evidence["source"] == "validation loss"


def test_plateau_quiet_on_steady_descent():
    assert PlateauDetector()(_losses(_decay(n=1000))) is None


# --------------------------------------------------------------- oscillation
def test_oscillation_fires_on_jumping_loss():
    xs = [1.0 + (0.8 if i % 2 else -0.5) for i in range(40)]
    f = OscillationDetector()(_losses(xs))
    assert f is not None and f.kind is FindingKind.OSCILLATION


def test_oscillation_quiet_on_noisy_descent_and_small_jitter():
    assert OscillationDetector()(_losses(_decay(noise=0.05))) is None
    jitter = [1.0 + (0.05 if i % 2 else -0.05) for i in range(40)]
    assert OscillationDetector()(_losses(jitter)) is None


# --------------------------------------------------------------- overfitting
def test_overfitting_fires_when_validation_rises_while_training_falls():
    val = [2.0, 1.5, 1.2, 1.1, 1.15, 1.25, 1.4, 1.6]
    f = OverfittingDetector()(_losses(_decay(n=160), val=val, val_every=20))
    assert f is not None and f.kind is FindingKind.OVERFITTING
    assert f.evidence["best_validation_loss"] == 1.1


def test_overfitting_quiet_when_both_fall_or_both_rise():
    assert (
        OverfittingDetector()(_losses(_decay(n=160), val=[2, 1.5, 1.2, 1.1, 1.0], val_every=20))
        is None
    )
    rising = [0.5 + i / 100 for i in range(160)]
    val = [1.0, 1.1, 1.2, 1.3, 1.4]
    assert OverfittingDetector()(_losses(rising, val=val, val_every=20)) is None


# --------------------------------------------------------------- dead relu
def test_dead_relu_fires_after_patience():
    h = History(checks=[_check(0, [0.1], dead=[0.9, 0.0]), _check(10, [0.1], dead=[0.8, 0.1])])
    f = DeadReluDetector()(h)
    assert f is not None and f.evidence["layers"] == ["a0"]


def test_dead_relu_quiet_on_transient_or_few_dead_units():
    h = History(checks=[_check(0, [0.1], dead=[0.1, 0.0]), _check(10, [0.1], dead=[0.9, 0.1])])
    assert DeadReluDetector()(h) is None


# --------------------------------------------------------------- stalled optimizer
def test_stalled_optimizer_fires_on_zero_updates_and_missing_params():
    f = StalledOptimizerDetector()(History(checks=[_check(0, [0.1, 0.2], updates=[0.0, 0.0])]))
    assert f is not None and f.severity is Severity.ERROR
    g = StalledOptimizerDetector()(
        History(checks=[_check(0, [0.1], updates=[0.01], not_in=["head (10,)"])])
    )
    assert g is not None and g.evidence["not_in_optimizer"] == ["head (10,)"]


def test_stalled_optimizer_quiet_when_weights_move():
    assert StalledOptimizerDetector()(History(checks=[_check(0, [0.1], updates=[1e-4])])) is None


def test_plateau_rule_rejects_bad_mode():
    with pytest.raises(ValueError, match="threshold_mode"):
        plateau_indices([1.0], threshold_mode="relative")


def test_incremental_detectors_agree_with_a_fresh_pass():
    # detectors remember how far they have read; feeding a run piece by piece must give the
    # same finding as one pass over the whole run
    g = torch.Generator().manual_seed(1)
    xs = [2.3 - 0.01 * i + 0.05 * float(torch.rand(1, generator=g)) for i in range(120)]
    xs += [2.0] * 700 + [3.0, 9.0, 40.0, 200.0]
    for make in (DivergenceDetector, PlateauDetector, NonFiniteDetector):
        live, h = make(), History()
        found = None
        for i, v in enumerate(xs + [float("nan")]):
            h.steps.append(i)
            h.losses.append(v)
            found = live(h) or found
        fresh = make()(h)
        assert found is not None and fresh is not None
        assert (found.step, found.message) == (fresh.step, fresh.message), make.__name__


def test_monitor_keeps_only_the_latest_checks():
    from torch import nn

    from descentlab.diagnostics.monitor import TrainingMonitor

    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = TrainingMonitor(model, opt, interval=1, keep_checks=5)
    for _ in range(23):
        loss = model(torch.ones(2, 3)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.record_loss(loss)
    assert 5 <= len(mon.history.checks) <= 10 and mon.history.checks[-1].step == 22
    assert len(mon.history.losses) == 23
