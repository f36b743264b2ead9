"""Gradient clipping against torch.nn.utils and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from descentlab.clipping import (
    adaptive_clip_grad_,
    clip_grad_norm_,
    clip_grad_value_,
    unitwise_norm,
)


def with_grads(*pairs):
    out = []
    for value, grad in pairs:
        p = torch.nn.Parameter(torch.tensor(value, dtype=torch.float64))
        p.grad = torch.tensor(grad, dtype=torch.float64)
        out.append(p)
    return out


def test_global_norm_hand_computed():
    ps = with_grads(([0.0], [3.0]), ([0.0, 0.0], [0.0, 4.0]))
    norm = clip_grad_norm_(ps, 1.0)
    assert norm.item() == 5.0
    scale = 1.0 / (5.0 + 1e-6)
    assert ps[0].grad.tolist() == pytest.approx([3 * scale], rel=1e-15)
    assert ps[1].grad.tolist() == pytest.approx([0.0, 4 * scale], rel=1e-15)
    # below the threshold nothing changes
    ps = with_grads(([0.0], [0.3]))
    assert clip_grad_norm_(ps, 1.0).item() == pytest.approx(0.3)
    assert ps[0].grad.item() == 0.3


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf])
@pytest.mark.parametrize("nonfinite", ["propagate", "skip", "error"])
def test_global_norm_matches_torch(norm_type, nonfinite):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(5, 4)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for p, q in zip(a, b, strict=True):
        p.grad = torch.randn_like(p) * 3
        q.grad = p.grad.clone()
    mine = clip_grad_norm_(a, 0.7, norm_type, nonfinite=nonfinite)
    ref = torch.nn.utils.clip_grad_norm_(b, 0.7, norm_type)
    torch.testing.assert_close(mine, ref, rtol=0, atol=0)
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0)


def test_nonfinite_options():
    ps = with_grads(([0.0, 0.0], [1.0, math.inf]))
    assert math.isinf(clip_grad_norm_(ps, 1.0, nonfinite="skip").item())
    assert ps[0].grad.tolist() == [1.0, math.inf]  # untouched
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(ps, 1.0, nonfinite="error")
    clip_grad_norm_(ps, 1.0, nonfinite="propagate")
    assert math.isnan(ps[0].grad[1].item())  # torch's behaviour: inf * 0
    ps = with_grads(([0.0], [math.nan]))
    assert math.isnan(clip_grad_norm_(ps, 1.0, nonfinite="skip").item())
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        clip_grad_norm_(ps, 1.0, nonfinite="zero")
    with pytest.raises(ValueError, match="max_norm must be a finite number > 0, got 0"):
        clip_grad_norm_(ps, 0)


def test_no_grads_and_single_tensor():
    p = torch.nn.Parameter(torch.ones(2))
    assert clip_grad_norm_([p], 1.0, nonfinite="skip").item() == 0.0
    p.grad = torch.tensor([0.0, 2.0])
    clip_grad_norm_(p, 1.0)
    assert p.grad[1].item() == pytest.approx(1.0, rel=1e-6)


def test_clip_by_value():
    ps = with_grads(([0.0] * 4, [-3.0, -0.5, 0.2, 9.0]))
    clip_grad_value_(ps, 1.0)
    assert ps[0].grad.tolist() == [-1.0, -0.5, 0.2, 1.0]
    with pytest.raises(ValueError, match="clip_value must be a finite number > 0, got -1"):
        clip_grad_value_(ps, -1)


def test_agc_hand_computed():
    # rows of W have norms 5 and 0.0005 (-> eps = 1e-3); rows of G have norms 0.5 and 1
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0], [0.0, 0.0005]], dtype=torch.float64))
    w.grad = torch.tensor([[0.3, 0.4], [1.0, 0.0]], dtype=torch.float64)
    # a bias is one unit: norm 1 (W), 0.02 (G): ratio 0.02 < 0.05, not clipped
    b = torch.nn.Parameter(torch.tensor([0.6, 0.8], dtype=torch.float64))
    b.grad = torch.tensor([0.0, 0.02], dtype=torch.float64)
    frac = adaptive_clip_grad_([w, b], clipping=0.05)
    # row 0: max 0.05 * 5 = 0.25 < 0.5 -> scale 0.5; row 1: max 0.05 * 1e-3 = 5e-5
    torch.testing.assert_close(
        w.grad, torch.tensor([[0.15, 0.2], [5e-5, 0.0]], dtype=torch.float64), rtol=1e-12,
        atol=0,
    )
    assert b.grad.tolist() == [0.0, 0.02]
    assert frac.item() == pytest.approx(2 / 3)


def test_agc_conv_matches_per_channel_loop():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 6, 3).double()
    for p in conv.parameters():
        p.grad = torch.randn_like(p) * torch.logspace(-3, 1, p.shape[0], dtype=p.dtype).view(
            -1, *([1] * (p.ndim - 1))
        )
    w, g = conv.weight.detach().clone(), conv.weight.grad.clone()
    adaptive_clip_grad_([conv.weight], clipping=0.02, eps=1e-3)
    for i in range(6):  # each output channel on its own, with plain Python arithmetic
        wn = max(math.sqrt(sum(v * v for v in w[i].flatten().tolist())), 1e-3)
        gn = math.sqrt(sum(v * v for v in g[i].flatten().tolist()))
        factor = 0.02 * wn / gn if gn / wn > 0.02 else 1.0
        torch.testing.assert_close(conv.weight.grad[i], g[i] * factor, rtol=1e-12, atol=0)
    assert unitwise_norm(w).shape == (6, 1, 1, 1)


def test_agc_bad_arguments():
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="clipping must be a finite number > 0, got 0"):
        adaptive_clip_grad_([p], clipping=0)
    with pytest.raises(ValueError, match="eps"):
        adaptive_clip_grad_([p], eps=-1.0)
