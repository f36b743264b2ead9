"""MARS: variance-reduced momentum with an AdamW, Lion or Shampoo step (Yuan et al., 2024).

For a matrix (or every tensor with ``optimize_1d``), with the previous
gradient g₋ kept in state (zero at the first step):

    c = g + γ β₁/(1 − β₁) (g − g₋),     c ← c / ‖c‖ if ‖c‖ > 1
    m ← β₁ m + (1 − β₁) c
    u = m / ((√(v + 10⁻¹⁵) + ε) · (1 − β₁ᵗ)/√(1 − β₂ᵗ)),  v ← β₂ v + (1 − β₂) c²   (``"adamw"``)
    u = sign m                                                                 (``"lion"``)
    u = √max(1, rows/cols) · NS₅(m / (1 − β₁))   (``"shampoo"``: Newton–Schulz in bfloat16)
    θ ← θ (1 − ηλ),   θ ← θ − η u

(``ams_bound``: v's running maximum in the denominator; ``cautious``: u
masked where it disagrees in sign with g and rescaled, per tensor). Other
tensors (1-D unless ``optimize_1d``; 0-D) take plain AdamW on g with
``betas_1d``, ``weight_decay_1d`` and the learning rate η·``lr_1d_factor``,
where the factor is ``lr_1d / lr`` at construction (so a learning-rate
schedule moves both rates together, as in the reference).

As in ``pytorch_optimizer.MARS``: without ``weight_decouple`` the term λθ is
added to the gradient *after* the update is computed, so it enters the step
only through g₋ in the next correction; ``fixed_decay`` decays by λ instead
of ηλ. The Shampoo form orthogonalises in bfloat16 as the reference does
(:func:`newton_schulz_5`), so it is not a float64 computation.

Reference: H. Yuan, Y. Liu, S. Wu, X. Zhou, Q. Gu, "MARS: Unleashing the Power
of Variance Reduction for Training Large Models", arXiv:2411.10438 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.rules.cautious import cautious
from descentlab.validation import check_decay_rates, check_nonnegative, one_of

__all__ = ["MARSRule", "newton_schulz_5"]

#: Keller Jordan's quintic Newton–Schulz coefficients (as pytorch_optimizer's default).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz_5(g: Tensor, steps: int = 5, eps: float = 1e-7,
                    dtype: torch.dtype = torch.bfloat16) -> Tensor:
    """Five quintic Newton–Schulz steps towards the polar factor of a matrix, in ``dtype``.

    X = G/‖G‖_F (transposed if tall); X ← aX + (bA + cA²)X with A = XXᵀ, each
    product fused as ``addmm`` the way pytorch_optimizer's
    ``zero_power_via_newton_schulz_5`` computes it, so the bits agree.
    """
    tall = g.size(-2) > g.size(-1)
    x = (g.mT if tall else g).to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)
    x.div_(x.norm(2, dim=(-2, -1), keepdim=True).clamp_min_(eps))
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = torch.mm(x, x.mT)
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a, alpha=1.0)
    return x.mT if tall else x


class MARSRule(TensorRule):
    """The MARS update (see the module docstring); state per parameter.

    State: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``last_grad`` (g₋) and, with
    ``ams_bound``, ``max_exp_avg_sq`` — the reference's names.
    """

    name = "mars"
    hparams = (
        HParam("lr", 3e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("betas", (0.95, 0.99), check=check_decay_rates, doc="(β₁, β₂)",
               split=("beta1", "beta2")),
        HParam("gamma", 0.025, check=check_nonnegative, doc="strength γ of the correction"),
        HParam("mars_type", "adamw", STRUCTURAL, check=one_of(("adamw", "lion", "shampoo")),
               doc="the step: adamw, lion or shampoo"),
        HParam("optimize_1d", False, STRUCTURAL, doc="MARS on 1-D tensors too"),
        HParam("lr_1d", 3e-3, check=check_nonnegative, doc="AdamW's learning rate for 1-D tensors"),
        HParam("betas_1d", (0.9, 0.95), check=check_decay_rates, doc="(β₁, β₂) for 1-D tensors",
               split=("beta1_1d", "beta2_1d")),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ"),
        HParam("weight_decay_1d", 0.1, check=check_nonnegative, doc="λ for 1-D tensors"),
        HParam("weight_decouple", True, STRUCTURAL, doc="θ ← θ(1 − ηλ) (else λθ into g₋)"),
        HParam("fixed_decay", False, STRUCTURAL, doc="decoupled decay not scaled by η"),
        HParam("ams_bound", False, STRUCTURAL, doc="v's running maximum in the denominator"),
        HParam("cautious", False, STRUCTURAL, doc="update only where it agrees with g"),
        HParam("eps", 1e-8, check=check_nonnegative, doc="ε of the denominator"),
        HParam("lr_1d_factor", 1.0, check=check_nonnegative,
               doc="1-D learning rate over lr (lr_1d / lr at construction)"),
    )

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {k: torch.zeros_like(param) for k in ("exp_avg", "exp_avg_sq", "last_grad")}
        if flags["ams_bound"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    @staticmethod
    def _adam_direction(m: Tensor, v: Tensor, state: dict[str, Tensor], update: Tensor,
                        beta1: float, beta2: float, step: int, flags: Flags, eps: float) -> Tensor:
        """update / ((√(v̂ + 10⁻¹⁵) + ε)(1 − β₁ᵗ)/√(1 − β₂ᵗ)), v̂ = v or its running maximum."""
        if flags["ams_bound"]:
            peak = state["max_exp_avg_sq"]
            torch.maximum(peak, v, out=peak)
            v = peak
        denom = v.add(1e-15).sqrt_().add_(eps)
        denom.div_(math.sqrt(1.0 - math.pow(beta2, step))).mul_(1.0 - math.pow(beta1, step))
        return update.div_(denom)

    def update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: Scalar,
        flags: Flags,
    ) -> None:
        """One MARS step (see the module docstring)."""
        t = int(step)
        m, v, last = state["exp_avg"], state["exp_avg_sq"], state["last_grad"]
        matrix = grad.dim() >= 2
        if flags["optimize_1d"] or matrix:
            beta1, beta2 = h["beta1"], h["beta2"]
            lr, decay = h["lr"], h["weight_decay"]
            c = (grad - last).mul_(h["gamma"] * (beta1 / (1.0 - beta1))).add_(grad)
            norm = torch.linalg.norm(c)
            if norm > 1.0:
                c.div_(norm)
            m.lerp_(c, weight=1.0 - beta1)
            update = cautious(m, grad) if flags["cautious"] else m.clone()
            kind = flags["mars_type"]
            if kind == "adamw" or (kind == "shampoo" and not matrix):
                v.mul_(beta2).addcmul_(c, c, value=1.0 - beta2)
                update = self._adam_direction(m, v, state, update, beta1, beta2, t, flags,
                                              h["eps"])
            elif kind == "lion":
                update.sign_()
            else:
                scale = math.sqrt(max(1.0, grad.size(0) / grad.size(1)))
                rows = update.view(update.size(0), -1).mul_(1.0 / (1.0 - beta1))
                update = newton_schulz_5(rows, eps=h["eps"]).mul_(scale).view_as(grad)
        else:
            beta1, beta2 = h["beta1_1d"], h["beta2_1d"]
            lr, decay = h["lr"] * h["lr_1d_factor"], h["weight_decay_1d"]
            m.lerp_(grad, weight=1.0 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            update = cautious(m, grad) if flags["cautious"] else m.clone()
            update = self._adam_direction(m, v, state, update, beta1, beta2, t, flags, h["eps"])
        last.copy_(grad)
        if decay != 0.0:
            if flags["weight_decouple"]:
                param.mul_(1.0 - decay * (1.0 if flags["fixed_decay"] else lr))
            elif decay > 0.0:  # the reference's late L2 term: into g₋ only
                last.add_(param, alpha=decay)
        param.add_(update, alpha=-lr)
