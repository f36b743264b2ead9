"""Schedule-Free RAdam against the paper's three sequences written out (no reference class).

``schedulefree`` ships reference classes (explicit ``x``, ``y``, ``z``) for SGD
and AdamW only; this is the AdamW reference's recursion with RAdam's
rectified learning rate, written here from the equations.
"""

from __future__ import annotations

import math

import pytest
import torch

import descentlab
from tests.optim.helpers import loss_fn, make_params, max_rel_diff


def three_sequences(setting, steps):
    lr0, (b1, b2) = setting["lr"], setting.get("betas", (0.9, 0.999))
    eps, wd = setting.get("eps", 1e-8), setting.get("weight_decay", 0.0)
    r, power = setting.get("r", 0.0), setting.get("weight_lr_power", 2.0)
    silent = setting.get("silent_sgd_phase", True)
    y = [p.detach().clone() for p in make_params()]
    x = [t.clone() for t in y]
    z = [t.clone() for t in y]
    v = [torch.zeros_like(t) for t in y]
    lr_max, weight_sum = -1.0, 0.0
    for t in range(1, steps + 1):
        params = [t_.clone().requires_grad_() for t_ in y]
        grads = torch.autograd.grad(loss_fn(params, t - 1), params)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        rect = (math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                if rho > 4 else float(not silent))
        lr = lr0 * rect
        lr_max = max(lr_max, lr)
        weight = t**r * lr_max**power
        weight_sum += weight
        c = weight / weight_sum if weight_sum else 0.0
        for i, g in enumerate(grads):
            v[i] = b2 * v[i] + (1 - b2) * g * g
            d = g / ((v[i] / (1 - b2**t)).sqrt() + eps) if rho > 4 else g
            z[i] = z[i] - lr * (d + wd * y[i])
            x[i] = (1 - c) * x[i] + c * z[i]
            y[i] = b1 * x[i] + (1 - b1) * z[i]
    return x, y


@pytest.mark.parametrize(
    "setting",
    [
        {"lr": 0.01},
        {"lr": 0.01, "weight_decay": 0.1, "silent_sgd_phase": False},
        {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6, "r": 0.5, "weight_lr_power": 1.0},
    ],
)
def test_radam_schedulefree_follows_the_three_sequences(setting):
    x_ref, y_ref = three_sequences(setting, 100)
    params = make_params()
    opt = descentlab.RAdamScheduleFree(params, **setting)
    opt.train()
    for t in range(100):
        opt.zero_grad()
        loss_fn(params, t).backward()
        opt.step()
    assert max_rel_diff(params, y_ref) <= 1e-10
    opt.eval()
    assert max_rel_diff(params, x_ref) <= 1e-10
