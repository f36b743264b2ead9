"""EMA with a scheduled decay, on torch.optim.swa_utils.AveragedModel."""

from __future__ import annotations

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import descentlab
from descentlab.averaging import ema_model, ema_warmup
from descentlab.schedules import LambdaSchedule


def train_steps(model, opt, n, on_step):
    torch.manual_seed(0)
    for _ in range(n):
        x = torch.randn(8, 3, dtype=torch.float64)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        on_step()


def test_constant_decay_equals_torch_ema():
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2).double()
    ours = ema_model(model, 0.9, use_buffers=False)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    opt = descentlab.SGD(model.parameters(), lr=0.1)
    train_steps(model, opt, 6, lambda: (ours.update_parameters(model),
                                        ref.update_parameters(model)))
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-15, atol=0)


def test_scheduled_decay_hand_computed():
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    module = torch.nn.ParameterList([w])
    ema = ema_model(module, LambdaSchedule(lambda t: 0.5 ** (t + 1)))
    values = [1.0, 2.0, 4.0, 8.0]
    expected = []
    avg = None
    for t, v in enumerate(values):
        with torch.no_grad():
            w.fill_(v)
        ema.update_parameters(module)
        # first update copies; the k-th later one (t = k - 1) uses decay 0.5 ** k
        avg = v if avg is None else 0.5 ** t * avg + (1 - 0.5 ** t) * v
        expected.append(avg)
        assert next(ema.parameters()).item() == pytest.approx(avg, rel=1e-15)
    assert expected == [1.0, 1.5, 0.25 * 1.5 + 0.75 * 4, 0.125 * 3.375 + 0.875 * 8]


def test_ema_warmup_values_and_errors():
    s = ema_warmup(0.99, offset=10)
    assert [s(t) for t in (0, 1, 2)] == [0.1, 2 / 11, 0.25]
    assert s(10_000) == 0.99
    with pytest.raises(ValueError, match="max_decay must be in"):
        ema_warmup(1.5)
    with pytest.raises(ValueError, match="decay must be in"):
        ema_model(torch.nn.Linear(1, 1), 1.2)
    bad = ema_model(torch.nn.Linear(1, 1), LambdaSchedule(lambda t: 2.0))
    bad.update_parameters(torch.nn.Linear(1, 1))
    with pytest.raises(ValueError, match="decay at update 0 must be in"):
        bad.update_parameters(torch.nn.Linear(1, 1))


def test_buffers_are_averaged_by_default():
    model = torch.nn.BatchNorm1d(2).double()
    ema = ema_model(model, 0.5)
    ema.update_parameters(model)
    model.running_mean.fill_(2.0)
    ema.update_parameters(model)
    assert ema.module.running_mean.tolist() == [1.0, 1.0]
