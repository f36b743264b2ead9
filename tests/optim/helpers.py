"""A small deterministic training problem shared by the conformance tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def make_params(dtype: torch.dtype = torch.float64, seed: int = 0) -> list[torch.Tensor]:
    """Weights (5×3), bias (3) and a scale (1) of a tiny tanh regression model."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (3,), (1,)]
    return [
        torch.randn(s, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
        for s in shapes
    ]


def batch(step: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The mini-batch of a step: a fresh (8×5 inputs, 8×3 targets) draw per step."""
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64).to(dtype)
    y = torch.randn(8, 3, generator=gen, dtype=torch.float64).to(dtype)
    return x, y


def loss_fn(params: list[torch.Tensor], step: int, sign: float = 1.0) -> torch.Tensor:
    """Mean squared error of ``scale * tanh(x W + b)`` on the step's batch (times ``sign``)."""
    w, b, scale = params
    x, y = batch(step, w.dtype)
    return sign * ((scale * torch.tanh(x @ w + b) - y) ** 2).mean()


def run_steps(
    opt: torch.optim.Optimizer,
    params: list[torch.Tensor],
    start: int,
    count: int,
    sign: float = 1.0,
) -> None:
    """``count`` training steps of ``opt`` on the batches ``start … start + count - 1``."""
    for t in range(start, start + count):
        opt.zero_grad()
        loss_fn(params, t, sign).backward()
        opt.step()


def sign_of(setting: dict[str, Any]) -> float:
    """-1 under ``maximize=True`` (the objective is the negated loss), else 1."""
    return -1.0 if setting.get("maximize") else 1.0


def clones(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """Fresh leaf copies of ``params`` (same values, no shared storage)."""
    return [p.detach().clone().requires_grad_() for p in params]


@contextlib.contextmanager
def float64_default() -> Iterator[None]:
    """torch.optim keeps bookkeeping scalars (NAdam's mu_product) in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def train(
    opt_cls: type,
    setting: dict[str, Any],
    steps: int = 120,
    dtype: torch.dtype = torch.float64,
    **extra: Any,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Run ``steps`` steps of ``opt_cls(**setting, **extra)``; return the parameters and optimizer.

    Under ``maximize=True`` the objective is the negated loss, so maximising it
    trains the model just like minimising the loss.
    """
    params = make_params(dtype)
    opt = opt_cls(params, **setting, **extra)
    run_steps(opt, params, 0, steps, sign_of(setting))
    return params, opt


def max_rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest per-tensor relative difference max|a − b| / max|b| (in float64).

    Scaling by the tensor's largest entry rather than entry by entry keeps an
    entry that happens to pass near zero from dominating the measure.
    """
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = x.detach().double(), y.detach().double()
        rel = ((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item()
        worst = max(worst, rel)
    return worst
