"""Shampoo in its 2018 form: one full statistic per dimension, no blocks, no grafting.

For a tensor G of order k (after momentum and weight decay),

    G ← G + μ (M − G)           (M: the previous preconditioned direction, G at step 1)
    L_i ← L_i + G₍ᵢ₎ G₍ᵢ₎ᵀ        (L_i starts at ε I; a sum, not a moving average)
    P_i = L_i^(−1/2k)            (by SVD, every ``preconditioning_compute_steps``;
                                  zero until the first computation)
    D = G ×₁ P_1 ×₂ … ×ₖ P_k,   M ← D,   θ ← θ − η D

with weight decay λ added to G (or θ ← θ(1 − λη), ``weight_decouple``; λ
alone with ``fixed_decay``). This is ``pytorch_optimizer.Shampoo``'s
arithmetic, operation for operation (its mode products by transposes and
matrix products, the roots by SVD). Note that, as there, the roots start at
zero: with ``preconditioning_compute_steps`` > 1 the first steps do not
move the parameter.

Reference: V. Gupta, T. Koren, Y. Singer, "Shampoo: Preconditioned Stochastic
Tensor Optimization", ICML 2018 (Algorithm 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from descentlab.rules.base import STRUCTURAL, Flags, HParam, Scalar, TensorRule
from descentlab.rules.matrix_roots import inverse_root_svd
from descentlab.validation import check_int, check_interval, check_nonnegative

__all__ = ["PlainShampooRule"]


def _check_count(name: str, value: Any) -> int:
    return check_int(name, value, minimum=1)


class PlainShampooRule(TensorRule):
    """The 2018 Shampoo update (see the module docstring); state per parameter.

    State: ``momentum_buffer`` (M) and, for each dimension i,
    ``pre_cond_{i}`` (L_i) and ``inv_pre_cond_{i}`` (P_i) — the reference's names.
    """

    name = "plain_shampoo"
    hparams = (
        HParam("lr", 1e-3, check=check_nonnegative, doc="learning rate η"),
        HParam("momentum", 0.0, check=lambda n, v: check_interval(n, v, 0.0, 1.0),
               doc="momentum μ"),
        HParam("weight_decay", 0.0, check=check_nonnegative, doc="weight decay λ"),
        HParam("weight_decouple", False, STRUCTURAL, doc="θ ← θ(1 − ηλ) instead of L2"),
        HParam("fixed_decay", False, STRUCTURAL, doc="decoupled decay not scaled by η"),
        HParam("preconditioning_compute_steps", 1, STRUCTURAL, check=_check_count,
               doc="steps between inverse-root computations"),
        HParam("matrix_eps", 1e-6, check=check_nonnegative, doc="ε of the initial statistics"),
    )

    def init_state(self, param: Tensor, flags: Flags, h: Mapping[str, Scalar]) -> dict[str, Tensor]:
        state = {"momentum_buffer": torch.zeros_like(param)}
        for i, d in enumerate(param.shape):
            state[f"pre_cond_{i}"] = torch.eye(d, dtype=param.dtype,
                                               device=param.device).mul_(h["matrix_eps"])
            state[f"inv_pre_cond_{i}"] = param.new_zeros(d, d)
        return state

    def update(
        self,
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        h: Mapping[str, Scalar],
        step: Scalar,
        flags: Flags,
    ) -> None:
        """One step (see the module docstring)."""
        t = int(step)
        buffer = state["momentum_buffer"]
        # at step 1 the reference's buffer is G itself, and G + μ(G − G) = G exactly
        g = grad.lerp(buffer, h["momentum"]) if t > 1 and h["momentum"] > 0.0 else grad.clone()
        decay = h["weight_decay"]
        if decay != 0.0:
            if flags["weight_decouple"]:
                param.mul_(1.0 - decay * (1.0 if flags["fixed_decay"] else h["lr"]))
            elif decay > 0.0:
                g.add_(param, alpha=decay)
        order, shape = g.dim(), g.shape
        refresh = t % flags["preconditioning_compute_steps"] == 0
        direction = g
        for i, d in enumerate(shape):
            unfolded = g.movedim(i, 0).reshape(d, -1)
            state[f"pre_cond_{i}"].addmm_(unfolded, unfolded.t())
            inverse = state[f"inv_pre_cond_{i}"]
            if refresh:
                inverse.copy_(inverse_root_svd(state[f"pre_cond_{i}"], 2 * order))
            direction = direction.transpose(0, i).contiguous()
            moved = direction.shape
            matrix = direction.view(d, -1)
            if i == order - 1:
                direction = (matrix.t() @ inverse).view(shape)
            else:
                direction = (inverse @ matrix).view(moved)
        buffer.copy_(direction)
        param.add_(direction, alpha=-h["lr"])
