"""Per-coordinate adaptive step sizes without a first moment: Adagrad, RMSprop, Adadelta.

These are the specifications of :class:`descentlab.Adagrad`,
:class:`descentlab.RMSprop` and :class:`descentlab.Adadelta`; the optimizer
classes' docstrings give the equations with references.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import Flags, Rule, Scalar, apply_weight_decay, weight_decay_mode

__all__ = ["AdagradRule", "RMSpropRule", "AdadeltaRule"]


def _zeros(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


class AdagradRule(Rule):
    """s ← s + g²;  θ ← θ − η_t g / (√s + ε),  η_t = η / (1 + (t − 1)·lr_decay)."""

    name = "adagrad"

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": weight_decay_mode(group)}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        keys = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")
        return {k: float(group[k]) for k in keys}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"sum": torch.full_like(param, h["initial_accumulator_value"])}

    def update(self, param, grad, state, h, step, flags) -> None:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        s = state["sum"]
        s.add_(g * g)
        lr_t = h["lr"] / (1 + (step - 1) * h["lr_decay"])
        param.sub_(g / (s.sqrt() + h["eps"]) * lr_t)


class RMSpropRule(Rule):
    """s ← αs + (1−α)g²; centered: m ← αm + (1−α)g, s̃ = s − m²; θ ← θ − η g/(√s̃ + ε)."""

    name = "rmsprop"

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "weight_decay": weight_decay_mode(group),
            "centered": bool(group["centered"]),
            "momentum": float(group["momentum"]) != 0.0,
        }

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(group[k]) for k in ("lr", "alpha", "eps", "weight_decay", "momentum")}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {"square_avg": _zeros(param)}
        if flags["momentum"]:
            state["momentum_buffer"] = _zeros(param)
        if flags["centered"]:
            state["grad_avg"] = _zeros(param)
        return state

    def update(self, param, grad, state, h, step, flags) -> None:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        alpha = h["alpha"]
        s = state["square_avg"]
        s.mul_(alpha).add_(g * g * (1 - alpha))
        if flags["centered"]:
            m = state["grad_avg"]
            m.mul_(alpha).add_(g * (1 - alpha))
            denom = (s - m * m).sqrt() + h["eps"]
        else:
            denom = s.sqrt() + h["eps"]
        if flags["momentum"]:
            buf = state["momentum_buffer"]
            buf.mul_(h["momentum"]).add_(g / denom)
            param.sub_(buf * h["lr"])
        else:
            param.sub_(g / denom * h["lr"])


class AdadeltaRule(Rule):
    """s ← ρs + (1−ρ)g²;  Δ = √(u + ε)/√(s + ε) · g;  u ← ρu + (1−ρ)Δ²;  θ ← θ − η Δ."""

    name = "adadelta"

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": weight_decay_mode(group)}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {k: float(group[k]) for k in ("lr", "rho", "eps", "weight_decay")}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"square_avg": _zeros(param), "acc_delta": _zeros(param)}

    def update(self, param, grad, state, h, step, flags) -> None:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        rho, eps = h["rho"], h["eps"]
        s, u = state["square_avg"], state["acc_delta"]
        s.mul_(rho).add_(g * g * (1 - rho))
        delta = (u + eps).sqrt() / (s + eps).sqrt() * g
        u.mul_(rho).add_(delta * delta * (1 - rho))
        param.sub_(delta * h["lr"])
