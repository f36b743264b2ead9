"""A tiny model and training loops that exercise every way gradients reach an optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import descentlab

#: One setting per optimizer that switches on its richest structure.
RICH: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    "adagrad": {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.5},
    "rmsprop": {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
    "adadelta": {"lr": 0.5, "weight_decay": 0.1},
    "adam": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1},
    "adamw": {"lr": 0.01, "maximize": True},
    "nadam": {"lr": 0.01, "weight_decay": 0.1},
    "radam": {"lr": 0.01},
    "adamax": {"lr": 0.01, "weight_decay": 0.1},
}


class Net(nn.Module):
    """Two linear layers and a scalar gain; ``idle`` is a parameter used only on even steps."""

    def __init__(self, dtype: torch.dtype = torch.float64, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Linear(6, 5).to(dtype)
        self.b = nn.Linear(5, 2).to(dtype)
        self.idle = nn.Parameter(torch.randn(3, dtype=dtype))
        self.gain = nn.Parameter(torch.tensor(1.5, dtype=dtype))

    def forward(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """Output; ``idle`` takes part only on even steps, so odd steps leave it without grad."""
        out = self.b(torch.tanh(self.a(x))) * self.gain
        if step % 2 == 0:
            out = out + self.idle.sum()
        return out


def loss(net: Net, step: int) -> torch.Tensor:
    """Squared error on a fresh deterministic batch."""
    gen = torch.Generator().manual_seed(step)
    dtype = net.gain.dtype
    x = torch.randn(8, 6, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 2, generator=gen, dtype=torch.float64).to(dtype)
    return ((net(x, step) - y) ** 2).mean()


ZeroGrad = Callable[[Net, torch.optim.Optimizer], None]

ZERO_GRADS: dict[str, ZeroGrad] = {
    "optimizer": lambda net, opt: opt.zero_grad(),
    "model": lambda net, opt: net.zero_grad(),
    "keep_buffers": lambda net, opt: opt.zero_grad(set_to_none=False),
}


def train(
    name: str,
    engine: str,
    steps: int = 30,
    zero_grad: str = "optimizer",
    dtype: torch.dtype = torch.float64,
    setting: dict[str, Any] | None = None,
) -> tuple[Net, torch.optim.Optimizer]:
    """Train :class:`Net` with optimizer ``name`` on ``engine``, changing lr every step.

    ``zero_grad`` names how gradients are cleared (see :data:`ZERO_GRADS`) or
    ``"assign"``: gradients computed with ``torch.autograd.grad`` and assigned
    to ``p.grad`` directly (``None`` for parameters without one).
    """
    net = Net(dtype)
    setting = dict(RICH[name] if setting is None else setting)
    opt = descentlab.make_optimizer(name, net.parameters(), engine=engine, **setting)
    base_lr = setting["lr"]
    params = list(net.parameters())
    for t in range(steps):
        opt.param_groups[0]["lr"] = base_lr * (1 + 0.5 * (t % 3))  # a schedule: lr changes
        if zero_grad == "assign":
            grads = torch.autograd.grad(loss(net, t), params, allow_unused=True)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
        else:
            ZERO_GRADS[zero_grad](net, opt)
            loss(net, t).backward()
        opt.step()
    return net, opt


def rel_diff(a: Net, b: Net) -> float:
    """Largest relative difference between two models' parameters."""
    worst = 0.0
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        scale = q.detach().abs().max().clamp_min(1e-30)
        worst = max(worst, float((p.detach() - q.detach()).abs().max() / scale))
    return worst
