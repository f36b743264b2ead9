"""Lion: the sign of an interpolated momentum (Chen et al. 2023), an elementwise rule.

The specification of :class:`descentlab.Lion`; see its docstring for the
equations, the defaults and where implementations disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar
from descentlab.rules.cautious import CAUTIOUS, DirectionRule
from descentlab.rules.low_precision import STATE_PRECISION
from descentlab.validation import check_betas, check_interval, check_nonnegative, check_positive

__all__ = ["LionRule"]


def _check_lion_betas(name: str, value: Any) -> tuple[float, ...]:
    """Two rates in the closed interval [0, 1] (lion-pytorch accepts both ends)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        check_betas(value, name)  # raises with the usual message
    return tuple(check_interval(f"{name}[{i}]", b, 0.0, 1.0) for i, b in enumerate(value))


def _check_init_lr(name: str, value: Any) -> float | None:
    return None if value is None else check_positive(name, value)


class LionRule(DirectionRule):
    """c = β₁m + (1−β₁)g;  θ ← θ(1 − ηλ′) − η·sign(c);  m ← β₂m + (1−β₂)g."""

    name = "lion"
    hparams = (
        HParam("lr", 1e-4, check=check_positive, doc="learning rate η"),
        HParam("betas", (0.9, 0.99), check=_check_lion_betas, split=("beta1", "beta2"),
               doc="interpolation β₁ and momentum decay β₂"),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ"),
        HParam("decoupled_weight_decay", False, STRUCTURAL,
               doc="decay by λ·η/η₀ (independent of η's size) instead of λ·η"),
        HParam("init_lr", None, check=_check_init_lr,
               doc="η₀ of the decoupled decay (default: the constructor's lr)"),
        CAUTIOUS, STATE_PRECISION,
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": float(group["weight_decay"]) != 0.0}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        lr, (beta1, beta2) = float(group["lr"]), group["betas"]
        decay = float(group["weight_decay"])
        if group["decoupled_weight_decay"]:
            init_lr = group["init_lr"]
            decay /= lr if init_lr is None else float(init_lr)
        return {"lr": lr, "beta1": float(beta1), "beta2": float(beta2),
                "decay": 1.0 - lr * decay}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def step_direction(self, param, grad, state, h, step, flags) -> tuple[Tensor, Tensor]:
        if flags["weight_decay"]:
            param.mul_(h["decay"])
        m = state["exp_avg"]
        direction = (m * h["beta1"] + grad * (1 - h["beta1"])).sign_()
        m.mul_(h["beta2"]).add_(grad * (1 - h["beta2"]))
        return grad, direction * h["lr"]
