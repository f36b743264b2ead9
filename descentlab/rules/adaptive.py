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

from descentlab.rules.base import (
    STRUCTURAL,
    Flags,
    HParam,
    Rule,
    Scalar,
    apply_weight_decay,
    at_entries,
    weight_decay_mode,
)
from descentlab.validation import check_nonnegative, interval

__all__ = ["AdagradRule", "RMSpropRule", "AdadeltaRule"]


def _nonnegative(name: str, default: float, doc: str) -> HParam:
    return HParam(name, default, check=check_nonnegative, doc=doc)


def _zeros(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


class AdagradRule(Rule):
    """s ← s + g²;  θ ← θ − η_t g / (√s + ε),  η_t = η / (1 + (t − 1)·lr_decay).

    Complex parameters start s at s₀ + i·s₀ (each real coordinate at s₀), as
    torch.optim does. Sparse gradients: duplicate indices are summed first
    (the update is not linear), then only the entries the gradient holds are
    updated, exactly as torch.optim's sparse path; weight decay is refused
    with them, as torch.optim refuses it.
    """

    name = "adagrad"
    hparams = (
        _nonnegative("lr", 1e-2, "learning rate η"),
        _nonnegative("lr_decay", 0.0, "time-based decay of η"),
        _nonnegative("weight_decay", 0.0, "weight decay λ (coupled)"),
        _nonnegative("initial_accumulator_value", 0.0, "s₀"),
        _nonnegative("eps", 1e-10, "ε added to √s"),
    )
    sparse = True

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": weight_decay_mode(group)}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        s0 = h["initial_accumulator_value"]
        return {"sum": torch.full_like(param, complex(s0, s0) if param.is_complex() else s0)}

    def update(self, param, grad, state, h, step, flags) -> None:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        s = state["sum"]
        s.add_(g * g)
        lr_t = h["lr"] / (1 + (step - 1) * h["lr_decay"])
        param.sub_(g / (s.sqrt() + h["eps"]) * lr_t)

    def check_sparse(self, flags: Flags) -> None:
        if flags["weight_decay"]:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")

    def sparse_update(self, param, grad, state, h, step, flags) -> None:
        grad = grad.coalesce()
        values = grad._values()
        s = state["sum"]
        s.add_(at_entries(grad, values.pow(2)))
        std = s.sparse_mask(grad)._values().sqrt_().add_(h["eps"])
        lr_t = h["lr"] / (1 + (step - 1) * h["lr_decay"])
        param.add_(at_entries(grad, values / std), alpha=-lr_t)


class RMSpropRule(Rule):
    """s ← αs + (1−α)g²; centered: m ← αm + (1−α)g, s̃ = s − m²; θ ← θ − η g/(√s̃ + ε)."""

    name = "rmsprop"
    hparams = (
        _nonnegative("lr", 1e-2, "learning rate η"),
        HParam("alpha", 0.99, check=interval(0.0, 1.0), doc="smoothing α of s"),
        _nonnegative("eps", 1e-8, "ε added to √s"),
        _nonnegative("weight_decay", 0.0, "weight decay λ (coupled)"),
        _nonnegative("momentum", 0.0, "momentum μ"),
        HParam("centered", False, STRUCTURAL, doc="subtract the squared mean gradient"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "weight_decay": weight_decay_mode(group),
            "centered": bool(group["centered"]),
            "momentum": float(group["momentum"]) != 0.0,
        }

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
    hparams = (
        _nonnegative("lr", 1.0, "multiplier η on the step"),
        HParam("rho", 0.9, check=interval(0.0, 1.0), doc="smoothing ρ"),
        _nonnegative("eps", 1e-6, "ε inside both square roots"),
        _nonnegative("weight_decay", 0.0, "weight decay λ (coupled)"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": weight_decay_mode(group)}

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
