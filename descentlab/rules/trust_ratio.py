"""LARS and LAMB: a step per tensor scaled by a trust ratio ‖θ‖/‖u‖ (You et al. 2017, 2019).

Tensor rules (each sees one parameter whole, for its norms); the
specifications of :class:`descentlab.LARS` and :class:`descentlab.LAMB`,
whose docstrings give the equations and where the reference and the papers
disagree. The reference is ``pytorch_optimizer``'s ``LARS`` and ``Lamb``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.validation import check_decay_rates, check_nonnegative, interval

__all__ = ["LARSRule", "LAMBRule", "LAMB_WEIGHT_NORM_CLAMP", "GRAD_SCALE_KEY"]

#: LAMB clips ‖θ‖ to at most this before the trust ratio (pytorch_optimizer's ``Lamb.clamp``).
LAMB_WEIGHT_NORM_CLAMP = 10.0

#: The group key :class:`descentlab.LAMB` sets for the length of one step under ``pre_norm``:
#: the factor min(1, max_grad_norm/(‖g‖ + ε)) of the global gradient norm (never saved).
GRAD_SCALE_KEY = "_pre_norm_scale"

_UNIT = interval(0.0, 1.0)
_LR = HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η")
_WEIGHT_DECAY = HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ")


def _zeros(param: Tensor) -> Tensor:
    return torch.zeros_like(param, memory_format=torch.preserve_format)


class LARSRule(TensorRule):
    """Matrices: u = r(g + λθ), r = κ‖θ‖/(‖g‖ + λ‖θ‖); vectors: u = g; then momentum SGD on u."""

    name = "lars"
    hparams = (
        _LR,
        _WEIGHT_DECAY,
        HParam("momentum", 0.9, check=_UNIT, doc="momentum β"),
        HParam("dampening", 0.0, check=_UNIT, doc="dampening τ"),
        HParam("trust_coefficient", 1e-3, check=check_nonnegative, doc="trust coefficient κ"),
        HParam("nesterov", False, STRUCTURAL, doc="Nesterov momentum"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        return {"momentum": float(group["momentum"]) > 0.0, "nesterov": bool(group["nesterov"])}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"momentum_buffer": _zeros(param)} if flags["momentum"] else {}

    def update(self, param, grad, state, h, step, flags) -> None:
        u = grad
        if param.ndim > 1:  # vectors and scalars (biases, norms) take plain SGD steps
            param_norm = torch.linalg.vector_norm(param)
            denom = torch.linalg.vector_norm(grad) + h["weight_decay"] * param_norm
            ratio = torch.where(
                (param_norm > 0) & (denom > 0), h["trust_coefficient"] * param_norm / denom, 1.0
            )
            u = (grad + param * h["weight_decay"]) * ratio
        if flags["momentum"]:
            buf = state["momentum_buffer"]
            buf.mul_(h["momentum"]).add_(u * (1 - h["dampening"]))
            u = u + buf * h["momentum"] if flags["nesterov"] else buf
        param.sub_(u * h["lr"])


class LAMBRule(TensorRule):
    """Adam's direction per tensor, scaled by the trust ratio min(‖θ‖, 10)/(‖u‖ + ε)."""

    name = "lamb"
    hparams = (
        _LR,
        HParam("betas", (0.9, 0.999), check=check_decay_rates, split=("beta1", "beta2"),
               doc="decay rates (β₁, β₂)"),
        _WEIGHT_DECAY,
        HParam("weight_decouple", True, STRUCTURAL, doc="decay θ directly (θ ← θ(1 − ηλ))"),
        HParam("fixed_decay", False, STRUCTURAL, doc="decoupled decay without η: θ ← θ(1 − λ)"),
        HParam("rectify", False, STRUCTURAL, doc="RAdam's rectified step"),
        HParam("degenerated_to_sgd", False, STRUCTURAL,
               doc="rectify: momentum steps before the threshold (else none)"),
        HParam("n_sma_threshold", 5, STRUCTURAL, check=check_nonnegative,
               doc="rectify: the ρₜ from which the adaptive step is taken"),
        HParam("grad_averaging", True, STRUCTURAL, doc="m gains (1 − β₁)g (else g)"),
        HParam("max_grad_norm", 1.0, check=check_nonnegative,
               doc="pre_norm: rescale gradients to this global norm at most (0: off)"),
        HParam("adam", False, STRUCTURAL, doc="trust ratio 1 (plain Adam-style steps)"),
        HParam("pre_norm", False, STRUCTURAL, doc="rescale by the global gradient norm first"),
        HParam("eps", 1e-6, check=check_nonnegative, doc="ε of the denominator and ratio"),
    )

    def flags(self, group: Mapping[str, Any]) -> dict[str, Any]:
        names = ("weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd",
                 "n_sma_threshold", "grad_averaging", "adam")
        return {**{k: group[k] for k in names}, "decay": float(group["weight_decay"]) > 0.0}

    def scalars(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {**super().scalars(group), "grad_scale": float(group.get(GRAD_SCALE_KEY, 1.0))}

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        return {"exp_avg": _zeros(param), "exp_avg_sq": _zeros(param)}

    @staticmethod
    def _rectified(step: int, beta2: float, flags: Flags) -> tuple[float, bool]:
        """RAdam's factor rₜ (−1: no step) and whether ρₜ reached the threshold."""
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        beta2_t = beta2**step
        rho = rho_inf - 2 * step * beta2_t / (1.0 - beta2_t)
        if rho >= flags["n_sma_threshold"]:
            return math.sqrt((1.0 - beta2_t) * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho
                             * rho_inf / (rho_inf - 2)), True
        return (1.0 if flags["degenerated_to_sgd"] else -1.0), False

    def update(self, param, grad, state, h, step, flags) -> None:
        beta1, beta2, eps, lr = h["beta1"], h["beta2"], h["eps"], h["lr"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if h["grad_scale"] != 1.0:
            grad = grad * h["grad_scale"]
        m.mul_(beta1).add_(grad * (1.0 - beta1 if flags["grad_averaging"] else 1.0))
        v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        if flags["decay"] and flags["weight_decouple"]:
            param.mul_(1.0 - h["weight_decay"] * (1.0 if flags["fixed_decay"] else lr))
        step_size, adaptive = lr, True
        if flags["rectify"]:
            factor, adaptive = self._rectified(step, beta2, flags)
            step_size *= factor
        step_size /= 1.0 - math.pow(beta1, step)
        if flags["rectify"] and step_size <= 0:
            return
        direction = m / (v.sqrt() + eps) if adaptive else m
        if flags["rectify"]:  # the reference measures the stepped parameter, not the step
            measured = param - direction * step_size
        else:
            measured = direction
            if flags["decay"] and not flags["weight_decouple"]:
                direction = measured = direction + param * h["weight_decay"]
        weight_norm = torch.linalg.vector_norm(param).clamp(max=LAMB_WEIGHT_NORM_CLAMP)
        step_norm = torch.linalg.vector_norm(measured)
        if flags["adam"]:
            param.sub_(direction * step_size)
            return
        ratio = torch.where((weight_norm != 0) & (step_norm != 0),
                            weight_norm / (step_norm + eps), 1.0)
        param.sub_(direction * (ratio * step_size))
