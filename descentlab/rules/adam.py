"""The Adam family: Adam/AdamW (AMSGrad), NAdam, RAdam and Adamax.

These are the specifications of the optimizer classes of the same names;
their docstrings give the equations with references and defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import (
    STRUCTURAL,
    Flags,
    HParam,
    Scalar,
    apply_weight_decay,
    at_entries,
    weight_decay_mode,
    where,
)
from descentlab.rules.cautious import CAUTIOUS, DirectionRule
from descentlab.rules.low_precision import STATE_PRECISION
from descentlab.validation import check_decay_rates, check_nonnegative

__all__ = [
    "AdamRule",
    "NAdamRule",
    "RAdamRule",
    "AdamaxRule",
    "SparseAdamRule",
    "ADAMW",
    "LR",
    "BETAS",
    "EPS",
    "WEIGHT_DECAY",
    "DECOUPLED",
]

#: The declarations the Adam family shares (each rule lists its own, in torch's order).
LR = HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η")
BETAS = HParam(
    "betas", (0.9, 0.999), check=check_decay_rates, doc="decay rates (β₁, β₂)",
    split=("beta1", "beta2"),
)
EPS = HParam("eps", 1e-8, check=check_nonnegative, doc="ε added to the denominator")
WEIGHT_DECAY = HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ")
DECOUPLED = HParam(
    "decoupled_weight_decay", False, STRUCTURAL, doc="decay θ directly (AdamW) instead of g += λθ"
)


def _zeros(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


class _MomentsRule(DirectionRule):
    """Shared reading of the Adam family's groups: lr, betas, eps, weight decay (coupled or not)."""

    nonnegative_state = ("exp_avg_sq", "max_exp_avg_sq")

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        decoupled = group.get("decoupled_weight_decay", False)
        return {"weight_decay": weight_decay_mode(group, decoupled)}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"exp_avg": _zeros(param), "exp_avg_sq": _zeros(param)}

    @staticmethod
    def _moments(
        g: Tensor, state: dict[str, Tensor], h: Mapping[str, Scalar]
    ) -> tuple[Tensor, Tensor]:
        """m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²."""
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.add_((g - m) * (1 - h["beta1"]))
        v.mul_(h["beta2"]).add_(g * g * (1 - h["beta2"]))
        return m, v


class AdamRule(_MomentsRule):
    """θ ← θ − η m̂/(√v̂ + ε), m̂ = m/(1−β₁ᵗ), v̂ = v/(1−β₂ᵗ); AMSGrad uses max over time of v."""

    name = "adam"
    hparams = (
        LR, BETAS, EPS, WEIGHT_DECAY,
        HParam("amsgrad", False, STRUCTURAL, doc="AMSGrad's running maximum of v"),
        DECOUPLED, CAUTIOUS, STATE_PRECISION,
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().flags(group), "amsgrad": bool(group["amsgrad"])}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = super().init_state(param, flags, h)
        if flags["amsgrad"]:
            state["max_exp_avg_sq"] = _zeros(param)
        return state

    def step_direction(self, param, grad, state, h, step, flags) -> tuple[Tensor, Tensor]:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        m, v = self._moments(g, state, h)
        if flags["amsgrad"]:
            v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
        bias1 = 1 - h["beta1"] ** step
        bias2_sqrt = (1 - h["beta2"] ** step) ** 0.5
        denom = v.sqrt() / bias2_sqrt + h["eps"]
        return g, m / denom * (h["lr"] / bias1)


class NAdamRule(_MomentsRule):
    """Nesterov-accelerated Adam with Dozat's momentum schedule μₜ = β₁(1 − ½·0.96^(t·ψ))."""

    name = "nadam"
    hparams = (
        HParam("lr", 2e-3, check=check_nonnegative, doc="learning rate η"),
        BETAS, EPS, WEIGHT_DECAY,
        HParam("momentum_decay", 4e-3, check=check_nonnegative, doc="ψ of μₜ's schedule"),
        DECOUPLED, CAUTIOUS, STATE_PRECISION,
    )
    scalar_state = ("mu_product",)

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = super().init_state(param, flags, h)
        state["mu_product"] = torch.ones((), dtype=torch.float64, device=param.device)
        return state

    def step_direction(self, param, grad, state, h, step, flags) -> tuple[Tensor, Tensor]:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        beta1, psi = h["beta1"], h["momentum_decay"]
        mu = beta1 * (1 - 0.5 * 0.96 ** (step * psi))
        mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * psi))
        mu_product = state["mu_product"]
        mu_product.mul_(mu)
        m, v = self._moments(g, state, h)
        denom = (v / (1 - h["beta2"] ** step)).sqrt() + h["eps"]
        grad_coef = h["lr"] * (1 - mu) / (1 - mu_product)
        moment_coef = h["lr"] * mu_next / (1 - mu_product * mu_next)
        return g, g / denom * grad_coef + m / denom * moment_coef


class RAdamRule(_MomentsRule):
    """Rectified Adam: Adam with variance rectification rₜ once ρₜ > 5, momentum SGD before."""

    name = "radam"
    hparams = (LR, BETAS, EPS, WEIGHT_DECAY, DECOUPLED, CAUTIOUS, STATE_PRECISION)

    def step_direction(self, param, grad, state, h, step, flags) -> tuple[Tensor, Tensor]:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        beta2 = h["beta2"]
        m, v = self._moments(g, state, h)
        bias1 = 1 - h["beta1"] ** step
        bias2 = 1 - beta2**step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * beta2**step / bias2
        rectified = rho_t > 5
        m_hat = m * (h["lr"] / bias1)
        if not isinstance(rectified, Tensor) and not rectified:
            return g, m_hat  # variance not yet tractable: momentum SGD
        # on the branch not taken, 1.0 keeps the square root real (tensor scalars compute both)
        rect = where(
            rectified,
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t),
            1.0,
        )
        adaptive = where(rectified, (rect * bias2) ** 0.5, 0.0)
        plain = where(rectified, 0.0, 1.0)
        return g, m_hat * (adaptive / (v.sqrt() + h["eps"]) + plain)


class AdamaxRule(_MomentsRule):
    """u ← max(β₂u, |g| + ε);  θ ← θ − η/(1−β₁ᵗ) · m/u  (Adam in the infinity norm)."""

    name = "adamax"
    hparams = (HParam("lr", 2e-3, check=check_nonnegative, doc="learning rate η"), BETAS, EPS,
               HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ (coupled)"),
               CAUTIOUS)

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"weight_decay": weight_decay_mode(group)}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"exp_avg": _zeros(param), "exp_inf": _zeros(param)}

    def step_direction(self, param, grad, state, h, step, flags) -> tuple[Tensor, Tensor]:
        g = apply_weight_decay(param, grad, h, flags["weight_decay"])
        m, u = state["exp_avg"], state["exp_inf"]
        m.add_((g - m) * (1 - h["beta1"]))
        torch.maximum(u * h["beta2"], g.abs() + h["eps"], out=u)
        return g, m / u * (h["lr"] / (1 - h["beta1"] ** step))


class SparseAdamRule(_MomentsRule):
    """Adam on the entries a sparse gradient holds; the other entries and their moments stay.

    With the gradient's entries g at the positions it holds (duplicates summed):

        m ← m + (1 − β₁)(g − m),   v ← v + (1 − β₂)(g² − v)      (at those positions)
        θ ← θ − η √(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε)              (at those positions)

    t counts the steps of the parameter, with or without entries. This is
    torch.optim.SparseAdam's masked Adam (ε outside the square root, before
    the √(1 − β₂ᵗ) correction is applied); it takes sparse gradients only.
    """

    name = "sparse_adam"
    hparams = (LR, BETAS, EPS)
    sparse = True

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    def check_dense(self) -> None:
        raise RuntimeError(
            "SparseAdam does not support dense gradients, please consider Adam instead"
        )

    def update(self, param, grad, state, h, step, flags) -> None:
        self.check_dense()

    def sparse_update(self, param, grad, state, h, step, flags) -> None:
        grad = grad.coalesce()  # the update is not linear: duplicate indices are summed first
        values = grad._values()
        if values.numel() == 0:
            return
        beta1, beta2 = h["beta1"], h["beta2"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        old_m = m.sparse_mask(grad)._values()
        m_step = values.sub(old_m).mul_(1 - beta1)
        m.add_(at_entries(grad, m_step))
        old_v = v.sparse_mask(grad)._values()
        v_step = values.pow(2).sub_(old_v).mul_(1 - beta2)
        v.add_(at_entries(grad, v_step))
        numer = m_step.add_(old_m)
        denom = v_step.add_(old_v).sqrt_().add_(h["eps"])
        step_size = h["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        param.add_(at_entries(grad, numer.div_(denom).mul_(-step_size)))


#: AdamW is Adam with decoupled weight decay on by default (and λ = 1e-2), as torch.optim.AdamW.
ADAMW = AdamRule().variant("adamw", weight_decay=1e-2, decoupled_weight_decay=True)
