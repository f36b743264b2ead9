"""descentlab.init: schemes against their variance formulas, LSUV, init_model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from descentlab.init import SCHEMES, init_model, lecun_normal_, lecun_uniform_, lsuv_


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _std(t: torch.Tensor) -> float:
    return float(t.detach().std())


@pytest.mark.parametrize(
    ("scheme", "std"),
    [
        ("lecun_normal", lambda fi, fo: math.sqrt(1 / fi)),
        ("lecun_uniform", lambda fi, fo: math.sqrt(1 / fi)),
        ("xavier_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("xavier_uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("kaiming_normal", lambda fi, fo: math.sqrt(2 / fi)),
        ("kaiming_uniform", lambda fi, fo: math.sqrt(2 / fi)),
        ("normal", lambda fi, fo: 0.01),
    ],
)
def test_weight_std_matches_formula(scheme, std):
    # Linear(fan_in=400, fan_out=300): 120,000 samples, std known to ~0.3%
    model = nn.Linear(400, 300)
    init_model(model, scheme, nonlinearity="relu" if "kaiming" in scheme else "linear")
    assert _std(model.weight) == pytest.approx(std(400, 300), rel=0.02)
    assert float(model.bias.detach().abs().max()) == 0.0


def test_lecun_helpers_match_keras_free_definition():
    w = torch.empty(500, 200)
    assert _std(lecun_normal_(w)) == pytest.approx(math.sqrt(1 / 200), rel=0.02)
    bound = math.sqrt(3 / 200)
    assert float(lecun_uniform_(w).abs().max()) <= bound


def test_xavier_gain_follows_nonlinearity():
    model = nn.Linear(300, 300)
    init_model(model, "xavier_normal", nonlinearity="tanh")
    assert _std(model.weight) == pytest.approx(5 / 3 * math.sqrt(2 / 600), rel=0.02)


def test_orthogonal_rows_are_orthonormal():
    model = nn.Linear(64, 32)
    init_model(model, "orthogonal", nonlinearity="linear")
    w = model.weight.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)


def test_sparse_and_zeros():
    model = nn.Sequential(nn.Linear(100, 50), nn.Conv2d(3, 8, 3))
    init_model(model, "sparse", sparsity=0.9)
    w = model[0].weight
    zero_per_column = (w == 0).sum(0)
    assert torch.all(zero_per_column == math.ceil(0.9 * 50))
    conv_zero = (model[1].weight.view(8, -1) == 0).sum(0)
    assert torch.all(conv_zero == math.ceil(0.9 * 8))
    init_model(model, "zeros", bias=0.5)
    assert float(model[0].weight.detach().abs().sum()) == 0.0 and torch.all(model[0].bias == 0.5)


def test_lsuv_gives_unit_output_variance_per_layer():
    model = nn.Sequential(
        nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    )
    x = torch.randn(256, 20) * 5 + 3
    lsuv_(model, x, tol=0.01)
    h = x
    for layer in model:
        h = layer(h)
        if isinstance(layer, nn.Linear):
            assert float(h.detach().var()) == pytest.approx(1.0, abs=0.011)


def test_lsuv_via_init_model_and_default():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    init_model(model, "lsuv", data=torch.randn(64, 8))
    assert float(model(torch.randn(64, 8)).detach().var()) == pytest.approx(1.0, rel=0.3)
    init_model(model, "default")
    assert float(model[0].weight.detach().abs().max()) <= 1 / math.sqrt(8)


def test_callable_scheme_and_every_name_runs():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Conv1d(16, 4, 1))
    init_model(model, lambda w: nn.init.constant_(w, 0.25))
    assert torch.all(model[0].weight == 0.25)
    for name in SCHEMES:
        init_model(model, name)


def test_errors_name_the_argument():
    model = nn.Linear(3, 3)
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_model(model, "he")
    with pytest.raises(ValueError, match="data"):
        init_model(model, "lsuv")
    with pytest.raises(ValueError, match="sparsity"):
        init_model(model, "sparse", sparsity=1.5)
    with pytest.raises(ValueError, match="std"):
        init_model(model, "normal", std=-1.0)
    with pytest.raises(ValueError, match="no layer"):
        init_model(nn.ReLU(), "xavier_normal")
    with pytest.raises(TypeError, match="data"):
        lsuv_(model, [1, 2, 3])
