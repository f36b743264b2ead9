"""Newer Adam variants: ADOPT and AdEMAMix, with the cautious mask as an option.

Both follow ``pytorch_optimizer`` 4.1 (its argument names, defaults and
arithmetic). They are tensor rules: ADOPT's first step differs from the
others (a branch on the step), and the cautious mask (Liang et al. 2024,
"Cautious Optimizers") rescales by the fraction of a *tensor's* entries it
keeps, a per-tensor reduction:

    mask = 1[u ⊙ g > 0],   u ← u ⊙ mask · n / (Σ mask + 1)     (n entries of the tensor)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.rules.cautious import CAUTIOUS, cautious
from descentlab.validation import check_betas, check_nonnegative

__all__ = ["ADOPTRule", "AdEMAMixRule", "cautious", "fourth_root"]


def fourth_root(step: int) -> float:
    """ADOPT's default clipping bound step^¼ (Taniguchi et al. 2024)."""
    return math.pow(step, 0.25)


# a checkpoint holding the default clip bound loads with torch.load(weights_only=True)
torch.serialization.add_safe_globals([fourth_root])


def _check_clip(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function of the step or None, got {value!r}")
    return value


def _zeros(p: Tensor) -> Tensor:
    return torch.zeros_like(p, memory_format=torch.preserve_format)


WEIGHT_DECAY = HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ")
DECOUPLE = HParam("weight_decouple", False, STRUCTURAL, doc="decay θ directly (AdamW)")
FIXED = HParam("fixed_decay", False, STRUCTURAL, doc="decoupled decay not scaled by lr")


def _weight_decay(param: Tensor, grad: Tensor, group: Mapping[str, Any], h: Mapping[str, float]
                  ) -> Tensor:
    """pytorch_optimizer's decay: θ ← θ(1 − λ·(1 or η)) when decoupled, else g + λθ."""
    decay = h["weight_decay"]
    if decay == 0:
        return grad
    if group["weight_decouple"]:
        param.mul_(1.0 - decay * (1.0 if group["fixed_decay"] else h["lr"]))
        return grad
    return grad + decay * param


class ADOPTRule(TensorRule):
    """ADOPT (Taniguchi et al. 2024): normalise g by the *previous* second moment, then average."""

    name = "adopt"
    hparams = (
        HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("betas", (0.9, 0.9999), check=lambda n, v: check_betas(v, n), doc="(β₁, β₂)",
               split=("beta1", "beta2")),
        HParam("clip_lambda", fourth_root, STRUCTURAL, check=_check_clip,
               doc="bound c(t) of the normalised gradient (None: no clipping)"),
        WEIGHT_DECAY, DECOUPLE, FIXED,
        HParam("eps", 1e-6, check=check_nonnegative, doc="floor of √v"),
        CAUTIOUS,
    )

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"exp_avg": _zeros(param), "exp_avg_sq": _zeros(param)}

    def update(self, param, grad, state, h, step, flags) -> None:
        g = _weight_decay(param, grad, flags, h)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if step == 1:
            v.addcmul_(g, g)
            return
        normed = g / v.sqrt().clamp_(min=h["eps"])
        if flags["clip_lambda"] is not None:
            bound = flags["clip_lambda"](step)
            normed.clamp_(-bound, bound)
        m.lerp_(normed, 1.0 - h["beta1"])
        param.add_(cautious(m, normed) if flags["cautious"] else m, alpha=-h["lr"])
        v.mul_(h["beta2"]).addcmul_(g, g, value=1.0 - h["beta2"])


class AdEMAMixRule(TensorRule):
    """AdEMAMix (Pagliardini et al. 2024): Adam plus a slow momentum weighted by α."""

    name = "ademamix"
    hparams = (
        HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("betas", (0.9, 0.999, 0.9999), check=lambda n, v: check_betas(v, n, 3),
               doc="(β₁, β₂, β₃): fast, second and slow moment", split=("beta1", "beta2", "beta3")),
        WEIGHT_DECAY, DECOUPLE, FIXED,
        HParam("alpha", 5.0, check=check_nonnegative, doc="weight α of the slow momentum"),
        HParam("t_alpha_beta3", None, STRUCTURAL,
               check=lambda n, v: v if v is None else check_nonnegative(n, v),
               doc="warm-up steps of α and β₃ (None: none)"),
        HParam("eps", 1e-8, check=check_nonnegative, doc="ε added to the denominator"),
        CAUTIOUS,
    )

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"exp_avg": _zeros(param), "exp_avg_sq": _zeros(param),
                "exp_avg_slow": _zeros(param)}

    @staticmethod
    def schedules(h: Mapping[str, float], step: int, warmup: float | None) -> tuple[float, float]:
        """(αₜ, β₃ₜ): α ramps linearly, β₃ so that its half-life grows linearly, over ``warmup``."""
        alpha, beta1, beta3 = h["alpha"], h["beta1"], h["beta3"]
        if warmup is None:
            return alpha, beta3
        f = step / warmup
        log1, log3 = math.log(beta1), math.log(beta3)
        beta3_t = min(math.exp(log1 * log3 / ((1.0 - f) * log3 + f * log1)), beta3)
        return min(step * alpha / warmup, alpha), beta3_t

    def update(self, param, grad, state, h, step, flags) -> None:
        g = _weight_decay(param, grad, flags, h)
        alpha_t, beta3_t = self.schedules(h, step, flags["t_alpha_beta3"])
        m, v, slow = state["exp_avg"], state["exp_avg_sq"], state["exp_avg_slow"]
        m.lerp_(g, 1.0 - h["beta1"])
        v.mul_(h["beta2"]).addcmul_(g, g, value=1.0 - h["beta2"])
        slow.lerp_(g, 1.0 - beta3_t)
        denom = v.sqrt().div_(math.sqrt(1.0 - math.pow(h["beta2"], step))).add_(h["eps"])
        bias1 = 1.0 - math.pow(h["beta1"], step)
        update = cautious(m, g).div_(bias1) if flags["cautious"] else m.div(bias1)
        update.add_(slow, alpha=alpha_t)
        if param.dtype in (torch.float16, torch.bfloat16):
            param.add_(update.div_(denom), alpha=-h["lr"])
        else:
            param.addcdiv_(update, denom, value=-h["lr"])

