"""TrainingMonitor end to end: measurements against hand-computed values, traces, findings."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from descentlab.diagnostics.findings import FindingKind
from descentlab.diagnostics.monitor import TrainingMonitor, trace_non_finite


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(seed=0, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def _train(model, opt, monitor, steps, x=None, y=None):
    if x is None:
        x, y = _data()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.record_loss(loss)


def test_layer_norms_and_effective_lr_of_sgd():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt, interval=1)
    x, y = _data()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    w0 = [p.detach().clone() for p in model[0].parameters()]
    g0 = [p.grad.clone() for p in model[0].parameters()]
    opt.step()
    st = mon.history.checks[0].layers["0"]
    assert st.param_norm == pytest.approx(math.sqrt(sum(float((w**2).sum()) for w in w0)), rel=1e-5)
    assert st.grad_norm == pytest.approx(math.sqrt(sum(float((g**2).sum()) for g in g0)), rel=1e-5)
    assert st.effective_lr == pytest.approx(0.1, rel=1e-4)
    assert st.update_ratio == pytest.approx(0.1 * st.grad_norm / st.param_norm, rel=1e-4)
    assert set(mon.history.checks[0].layers) == {"0", "2"}


def test_effective_lr_of_adam_first_step_matches_torch():
    # Adam's first update is lr·g/(|g|+eps) elementwise: norm lr·sqrt(#nonzero grads).
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = TrainingMonitor(model, opt, interval=1)
    _train(model, opt, mon, 1)
    st = mon.history.checks[0].layers["2"]
    nonzero = sum(int((p.grad != 0).sum()) for p in model[2].parameters())
    assert st.update_norm == pytest.approx(1e-3 * math.sqrt(nonzero), rel=1e-3)
    assert st.effective_lr == pytest.approx(st.update_norm / st.grad_norm)


def test_interval_controls_checks_and_hooks_are_transient():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt, interval=4)
    _train(model, opt, mon, 10)
    assert [c.step for c in mon.history.checks] == [0, 4, 8]
    assert len(mon.history.losses) == 10
    # tracing hooks exist only for the forward of a monitored step (step 11 is not monitored);
    # the root keeps the hook that remembers the last input and output
    _train(model, opt, mon, 1)
    assert all(not m._forward_hooks for m in model.modules() if m is not model)
    assert len(model._forward_hooks) == 1
    mon.detach()
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_validation_forward_does_not_pollute_activation_stats():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt, interval=1)
    with torch.no_grad():
        model(torch.full((4, 5), -1e6))  # would kill every unit if it were counted
    _train(model, opt, mon, 1)
    assert mon.history.checks[0].activations["1"].dead_fraction < 0.5


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x)


def test_non_finite_traced_to_producing_module():
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), _Log(), nn.Linear(8, 3))
    trace = trace_non_finite(model, torch.randn(16, 5))
    assert trace is not None and trace.module == "2" and trace.module_type == "_Log"
    assert trace.parameters_finite


def test_non_finite_from_blown_up_parameters_names_that_layer():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt, interval=100)
    _train(model, opt, mon, 2)
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    _train(model, opt, mon, 3)
    f = next(f for f in mon.findings if f.kind is FindingKind.NON_FINITE)
    assert f.evidence["module"] == "2" and f.evidence["parameters_finite"] is False
    assert mon.has(FindingKind.DIVERGENCE)


def test_trace_reports_non_finite_input_and_clean_models():
    model = _mlp()
    assert trace_non_finite(model, torch.randn(4, 5)) is None
    bad = torch.randn(4, 5)
    bad[0, 0] = float("nan")
    assert trace_non_finite(model, bad).module == "<input>"


def test_stalled_optimizer_when_params_missing_or_lr_zero():
    model = _mlp()
    opt = torch.optim.SGD(model[0].parameters(), lr=0.1)  # forgot the head
    mon = TrainingMonitor(model, opt, interval=1)
    _train(model, opt, mon, 1)
    assert mon.has(FindingKind.STALLED_OPTIMIZER)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = TrainingMonitor(model, opt, interval=1)
    _train(model, opt, mon, 1)
    assert mon.has("stalled_optimizer")


def test_dead_relu_from_negative_bias_and_healthy_net_is_quiet():
    model = _mlp()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = TrainingMonitor(model, opt, interval=1)
    _train(model, opt, mon, 3)
    assert mon.has(FindingKind.DEAD_RELU)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = TrainingMonitor(model, opt, interval=1)
    _train(model, opt, mon, 5)
    assert mon.findings == []


def test_curvature_check_reports_saddle_of_zero_initialised_linear_net():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False))
    for p in model.parameters():
        nn.init.zeros_(p)
    x = torch.linspace(-1, 1, 16)[:, None]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt)
    made = mon.check_curvature(lambda: nn.functional.mse_loss(model(x), x))
    assert [f.kind for f in made] == [FindingKind.SADDLE_POINT]
    assert made[0].evidence["lambda_min"] < 0


def test_findings_kept_once_per_kind_and_serialisable():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    seen = []
    mon = TrainingMonitor(model, opt, interval=1, on_finding=seen.append)
    _train(model, opt, mon, 3)
    assert len(seen) == 1 and mon.counts[FindingKind.STALLED_OPTIMIZER] == 3
    json.dumps(mon.to_dict())
    assert "stalled_optimizer" in mon.summary()


def test_bad_arguments():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="interval"):
        TrainingMonitor(model, opt, interval=0)
    with pytest.raises(TypeError, match="optimizer"):
        TrainingMonitor(model, "sgd")
    with pytest.raises(TypeError, match="model"):
        TrainingMonitor(opt, opt)


def test_non_finite_loss_with_finite_output_is_blamed_on_the_loss():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = TrainingMonitor(model, opt, interval=100)
    x, _ = _data()
    for _ in range(2):
        loss = torch.log(model(x) - 1e6).mean()  # log of negatives: NaN made by the loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.record_loss(loss)
    assert mon.history.non_finite.module == "<loss>"


@pytest.mark.parametrize("name", ["sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw"])
def test_works_with_descentlab_optimizers(name):
    import descentlab

    model = _mlp()
    opt = descentlab.make_optimizer(name, model.parameters(), lr=0.01)
    mon = TrainingMonitor(model, opt, interval=1)
    _train(model, opt, mon, 3)
    st = mon.history.checks[-1].layers["0"]
    assert st.update_norm > 0 and math.isfinite(st.effective_lr)
    if name == "sgd":
        assert st.effective_lr == pytest.approx(0.01, rel=1e-4)
    assert not mon.has(FindingKind.STALLED_OPTIMIZER)


def test_exploding_gradients_end_to_end_and_quiet_with_kaiming():
    from descentlab.init import init_model

    def run(scheme, **kw):
        torch.manual_seed(0)
        model = nn.Sequential(*[nn.Linear(16, 16) for _ in range(12)], nn.Linear(16, 3))
        init_model(model, scheme, **kw)
        opt = torch.optim.SGD(model.parameters(), lr=1e-6)
        mon = TrainingMonitor(model, opt, interval=1)
        x, y = torch.randn(32, 16), torch.randint(0, 3, (32,))
        _train(model, opt, mon, 2, x, y)
        return mon

    # a deep linear net with gain 3 per layer: gradients grow by ~3^12 relative to the weights
    assert run(lambda w: nn.init.orthogonal_(w, gain=3.0)).has(FindingKind.EXPLODING_GRADIENTS)
    assert not run("orthogonal", nonlinearity="linear").has(FindingKind.EXPLODING_GRADIENTS)
