"""Rprop: a step size per coordinate, grown or shrunk by the sign agreement of gradients.

The specification of :class:`descentlab.Rprop` (whose docstring gives the
equations and the reference). Every coordinate's step size, previous gradient
and update depend on that coordinate alone, so the rule is elementwise and runs
under every engine (flat buffers, fused compiled kernels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import Flags, HParam, Rule, Scalar
from descentlab.validation import check_interval, check_nonnegative

__all__ = ["RpropRule"]


def _check_etas(name: str, value: Any) -> tuple[float, float]:
    """(η⁻, η⁺) with 0 < η⁻ < 1 < η⁺, as torch.optim requires."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a tuple (etaminus, etaplus), got {value!r}")
    minus = check_interval(f"{name}[0]", value[0], 0.0, 1.0, low_closed=False, high_closed=False)
    plus = check_interval(f"{name}[1]", value[1], 1.0, math.inf, low_closed=False)
    return minus, plus


def _check_step_sizes(name: str, value: Any) -> tuple[float, float]:
    """(Δ_min, Δ_max) with 0 ≤ Δ_min ≤ Δ_max (torch.optim does not check them)."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a tuple (min, max), got {value!r}")
    low = check_nonnegative(f"{name}[0]", value[0])
    high = check_interval(f"{name}[1]", value[1], low, math.inf)
    return low, high


class RpropRule(Rule):
    """s = sign(g·g_prev); Δ ← clamp(Δ·{η⁺, η⁻, 1}[s], Δ_min, Δ_max); θ ← θ − sign(g̃)·Δ.

    g̃ is g with the coordinates where the sign flipped (s < 0) set to zero, and
    g_prev ← g̃ (so the step after a flip neither grows nor shrinks Δ). Δ starts
    at the learning rate of the step that creates the state. As in torch.optim,
    a NaN gradient coordinate is skipped (torch.sign(nan) is 0: Δ and θ stay,
    and the next step neither grows nor shrinks Δ).
    """

    name = "rprop"
    hparams = (
        HParam("lr", 1e-2, check=check_nonnegative, doc="initial step size Δ₀"),
        HParam("etas", (0.5, 1.2), check=_check_etas, doc="(η⁻, η⁺): shrink and growth factors",
               split=("etaminus", "etaplus")),
        HParam("step_sizes", (1e-6, 50), check=_check_step_sizes, doc="(Δ_min, Δ_max)",
               split=("step_size_min", "step_size_max")),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        lr = float(h["lr"])
        return {
            "prev": torch.zeros_like(param, memory_format=torch.preserve_format),
            "step_size": torch.full_like(param, complex(lr, lr) if param.is_complex() else lr),
        }

    def update(self, param, grad, state, h, step, flags) -> None:
        prev, size = state["prev"], state["step_size"]
        s = (grad * prev).sign()
        ones = torch.ones_like(s)
        factor = torch.where(s > 0, h["etaplus"], torch.where(s < 0, h["etaminus"], ones))
        size.mul_(factor).clamp_(h["step_size_min"], h["step_size_max"])
        g = torch.where(s < 0, 0.0, grad)
        param.sub_(g.sign() * size)
        prev.copy_(g)
