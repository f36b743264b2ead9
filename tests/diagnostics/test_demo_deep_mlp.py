"""The demonstration (seed 000/004): a 30-layer MLP on the digits data.

* naive small constant-variance init (N(0, 0.01²)) → vanishing gradients reported;
* Kaiming or LSUV init → no such finding, and the network trains;
* a too-large learning rate → divergence reported;
* a saddle point of a small problem (a zero-initialised deep linear network) → reported
  from negative curvature.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from descentlab.diagnostics.findings import FindingKind
from descentlab.diagnostics.problems import batches, deep_mlp, load_digits_data
from descentlab.diagnostics.run import diagnose, make_optimizer
from descentlab.init import init_model


@pytest.fixture(scope="module")
def digits():
    return load_digits_data(seed=0)


@pytest.fixture(autouse=True)
def _flush_denormals():
    # the naive init produces denormal floats, which are very slow on CPUs
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


def _run(digits, scheme, optimizer="adam", lr=1e-3, steps=80):
    torch.manual_seed(0)
    model = deep_mlp(30, width=64)
    init_model(model, scheme, data=digits.x_train[:256] if scheme == "lsuv" else None)
    opt = make_optimizer(optimizer, model.parameters(), lr=lr)
    mon = diagnose(
        model,
        opt,
        nn.functional.cross_entropy,
        batches(digits.x_train, digits.y_train, 32, seed=0),
        steps=steps,
        validation=(digits.x_val, digits.y_val),
        validate_every=40,
        interval=5,
    )
    with torch.no_grad():
        acc = float((model(digits.x_val).argmax(1) == digits.y_val).float().mean())
    return mon, acc


def test_naive_init_reports_vanishing_gradients(digits):
    mon, acc = _run(digits, "normal")
    assert mon.has(FindingKind.VANISHING_GRADIENTS)
    f = next(f for f in mon.findings if f.kind is FindingKind.VANISHING_GRADIENTS)
    assert "0" in f.evidence["layers"]  # the first layer is among those cut off
    assert acc < 0.3


@pytest.mark.parametrize("scheme", ["kaiming_normal", "lsuv"])
def test_kaiming_and_lsuv_have_no_vanishing_gradients_and_train(digits, scheme):
    mon, acc = _run(digits, scheme)
    assert not mon.has(FindingKind.VANISHING_GRADIENTS)
    assert not mon.has(FindingKind.DIVERGENCE)
    losses = mon.history.losses
    assert sum(losses[-10:]) / 10 < 0.8 * losses[0]
    assert acc > 0.3  # chance is 0.1


def test_too_large_learning_rate_is_reported_as_divergence(digits):
    mon, _ = _run(digits, "kaiming_normal", optimizer="sgd", lr=1.0, steps=40)
    assert mon.has(FindingKind.DIVERGENCE)
    assert mon.step < 40  # stopped at the error


def test_saddle_of_zero_initialised_linear_network_is_reported():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    target = x @ torch.randn(4, 4)
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    init_model(model, "zeros")
    opt = make_optimizer("sgd", model.parameters(), lr=0.1)
    mon = diagnose(model, opt, nn.functional.mse_loss, [(x, target)], steps=20, curvature=True)
    f = next(f for f in mon.findings if f.kind is FindingKind.SADDLE_POINT)
    assert f.evidence["lambda_min"] < 0 and f.evidence["grad_norm"] < 1e-6
    # and a healthy start on the same problem is not called a saddle
    init_model(model, "orthogonal", nonlinearity="linear")
    opt = make_optimizer("sgd", model.parameters(), lr=0.05)
    mon = diagnose(model, opt, nn.functional.mse_loss, [(x, target)], steps=300, curvature=True)
    assert not mon.has(FindingKind.SADDLE_POINT)
