"""SwitchableNorm against torch's BatchNorm, InstanceNorm and layer_norm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from descentlab.nn import SwitchableNorm, SwitchableNorm1d, SwitchableNorm2d, SwitchableNorm3d


def _one_hot(sn: SwitchableNorm, mode: str) -> SwitchableNorm:
    with torch.no_grad():
        for logits in (sn.mean_logits, sn.var_logits):
            logits.fill_(-1e4)
            logits[sn.modes.index(mode)] = 0.0
    return sn


def _x(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 1


def test_batch_mode_equals_batchnorm_train_running_stats_and_eval():
    sn = _one_hot(SwitchableNorm2d(4).double(), "batch")
    bn = nn.BatchNorm2d(4).double()
    for seed in range(3):
        x = _x(8, 4, 5, 5, seed=seed)
        torch.testing.assert_close(sn(x), bn(x))
    torch.testing.assert_close(sn.running_mean, bn.running_mean)
    torch.testing.assert_close(sn.running_var, bn.running_var)
    sn.eval(), bn.eval()
    x = _x(2, 4, 5, 5, seed=9)
    torch.testing.assert_close(sn(x), bn(x))


def test_instance_and_layer_modes_equal_torch():
    x = _x(3, 4, 6, 6)
    sn = _one_hot(SwitchableNorm2d(4).double(), "instance")
    torch.testing.assert_close(sn(x), nn.functional.instance_norm(x, eps=1e-5))
    sn = _one_hot(SwitchableNorm2d(4).double(), "layer")
    torch.testing.assert_close(sn(x), nn.functional.layer_norm(x, x.shape[1:], eps=1e-5))


def test_mixture_matches_independent_formula_and_affine():
    x = _x(5, 3, 4, 4)
    sn = SwitchableNorm2d(3).double()
    with torch.no_grad():
        sn.mean_logits.copy_(torch.tensor([0.3, -0.2, 0.5]))
        sn.var_logits.copy_(torch.tensor([-1.0, 0.4, 0.1]))
        sn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        sn.bias.copy_(torch.tensor([0.1, -0.3, 0.0]))
    v_in, m_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
    v_ln, m_ln = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)
    v_bn, m_bn = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=0)
    wm = torch.softmax(sn.mean_logits.detach(), 0)
    wv = torch.softmax(sn.var_logits.detach(), 0)
    mu = wm[0] * m_in + wm[1] * m_ln + wm[2] * m_bn
    var = wv[0] * v_in + wv[1] * v_ln + wv[2] * v_bn
    want = (x - mu) / torch.sqrt(var + 1e-5) * sn.weight.view(1, 3, 1, 1) + sn.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(sn(x), want.detach())


def test_logits_learn():
    sn = SwitchableNorm2d(3)
    x = torch.randn(4, 3, 5, 5)
    (sn(x) * torch.randn_like(x)).sum().backward()
    assert float(sn.mean_logits.grad.abs().sum()) > 0
    assert float(sn.var_logits.grad.abs().sum()) > 0
    imp = sn.importance()
    assert set(imp) == {"instance", "layer", "batch"}
    assert sum(m for m, _ in imp.values()) == pytest.approx(1.0)


def test_1d_on_features_equals_batchnorm1d_and_3d_runs():
    sn = _one_hot(SwitchableNorm1d(6).double(), "batch")
    bn = nn.BatchNorm1d(6).double()
    x = _x(16, 6)
    torch.testing.assert_close(sn(x), bn(x))
    sn = _one_hot(SwitchableNorm1d(6).double(), "layer")
    torch.testing.assert_close(sn(x), nn.functional.layer_norm(x, (6,), eps=1e-5))
    assert SwitchableNorm3d(2)(torch.randn(2, 2, 3, 3, 3)).shape == (2, 2, 3, 3, 3)


def test_without_running_stats_uses_batch_in_eval():
    sn = _one_hot(SwitchableNorm2d(2, track_running_stats=False).double(), "batch").eval()
    x = _x(4, 2, 3, 3)
    torch.testing.assert_close(sn(x), nn.functional.batch_norm(x, None, None, training=True))


def test_errors():
    with pytest.raises(ValueError, match="modes"):
        SwitchableNorm(3, modes=("group",))
    with pytest.raises(ValueError, match="num_features"):
        SwitchableNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        SwitchableNorm(3, momentum=2.0)
    with pytest.raises(ValueError, match="spatial"):
        SwitchableNorm(3)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="4-D"):
        SwitchableNorm2d(3)(torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match=r"\(N, 3"):
        SwitchableNorm2d(3)(torch.randn(4, 2, 2, 2))
