"""Stochastic gradient descent with optional momentum: the specification of SGD."""

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
    weight_decay_mode,
)
from descentlab.rules.low_precision import STATE_PRECISION
from descentlab.validation import check_nonnegative, one_of

__all__ = ["SGDRule", "MOMENTUM_FORMS"]

#: The two ways of writing momentum: ``v ← βv + (1−τ)g`` and ``v ← βv + (1−β)g``.
MOMENTUM_FORMS = ("heavy_ball", "averaged")


class SGDRule(Rule):
    """θ ← θ − η d, d = g, a momentum buffer v (heavy-ball or averaged), or a Nesterov look-ahead.

    heavy_ball:  v₁ = g₁,  v ← β v + (1 − τ) g        (τ = dampening; torch.optim's form)
    averaged:    v₀ = 0,   v ← β v + (1 − β) g        (exponential average of gradients)
    Nesterov:    d = g + β v (heavy_ball)   or   d = (1 − β) g + β v (averaged)

    Sparse gradients: the same update, with g a sparse tensor (only the
    parameter entries it holds move; the momentum buffer stays dense, where
    torch.optim keeps a sparse one with the same values). Weight decay would
    make g dense and is refused, as torch.optim refuses it.
    """

    name = "sgd"
    hparams = (
        HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("momentum", 0.0, check=check_nonnegative, doc="momentum β"),
        HParam("dampening", 0.0, check=check_nonnegative, doc="dampening τ (heavy-ball form)"),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ (coupled)"),
        HParam("nesterov", False, STRUCTURAL, doc="Nesterov momentum"),
        HParam("momentum_form", "heavy_ball", STRUCTURAL, check=one_of(MOMENTUM_FORMS),
               doc="heavy_ball (torch) or averaged"),
        STATE_PRECISION,
    )
    sparse = True

    def check(self, group: Mapping[str, Any]) -> None:
        """The declared checks, then the momentum form's and Nesterov's joint conditions."""
        super().check(group)
        momentum, dampening = float(group["momentum"]), float(group["dampening"])
        if group["momentum_form"] == "averaged":
            if momentum >= 1:
                raise ValueError(f"momentum must be < 1 in the averaged form, got {momentum!r}")
            if dampening != 0:
                raise ValueError(
                    f"dampening must be 0 with momentum_form='averaged' (the form already "
                    f"weights g by 1 - momentum), got {dampening!r}"
                )
        if group["nesterov"] and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "nesterov=True requires momentum > 0 and dampening = 0, got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "weight_decay": weight_decay_mode(group),
            "momentum": float(group["momentum"]) != 0.0,
            "nesterov": bool(group["nesterov"]),
            "form": group["momentum_form"],
        }

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        if not flags["momentum"]:
            return {}
        return {"momentum_buffer": torch.zeros_like(param, memory_format=torch.preserve_format)}

    def update(self, param, grad, state, h, step, flags) -> None:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        if flags["momentum"]:
            v = state["momentum_buffer"]
            beta = h["momentum"]
            if flags["form"] == "averaged":
                v.mul_(beta).add_(g * (1 - beta))
                d = g * (1 - beta) + v * beta if flags["nesterov"] else v
            else:
                # the first step stores g itself (v₁ = g₁), as torch.optim does
                first = step == 1
                damp = 1 - h["dampening"]
                if isinstance(first, Tensor):
                    v.copy_(torch.where(first, g, v * beta + g * damp))
                elif first:
                    v.copy_(g)
                else:
                    v.mul_(beta).add_(g * damp)
                d = g + v * beta if flags["nesterov"] else v
        else:
            d = g
        param.sub_(d * h["lr"])

    def check_sparse(self, flags: Flags) -> None:
        if flags["weight_decay"]:
            raise RuntimeError(
                "SGD: weight_decay is not compatible with sparse gradients (the decayed gradient "
                "g + λθ is dense); set weight_decay=0 for the sparse parameters' group"
            )

    def sparse_update(self, param, grad, state, h, step, flags) -> None:
        if not flags["momentum"]:
            param.add_(grad, alpha=-h["lr"])
            return
        v, beta = state["momentum_buffer"], h["momentum"]
        if flags["form"] == "averaged":
            v.mul_(beta).add_(grad, alpha=1 - beta)
            d = (v * beta).add_(grad, alpha=1 - beta) if flags["nesterov"] else v
        else:
            if step == 1:
                v.zero_().add_(grad)
            else:
                v.mul_(beta).add_(grad, alpha=1 - h["dampening"])
            d = (v * beta).add_(grad) if flags["nesterov"] else v
        param.add_(d, alpha=-h["lr"])
