"""Adafactor: Adam-like steps with factored second moments and relative step sizes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["Adafactor"]


class Adafactor(RuleOptimizer):
    r"""Adafactor (Shazeer & Stern, 2018), as torch.optim.Adafactor computes it.

    At step t = 1, 2, … with gradient G (negated under ``maximize``):

        β̂₂ = 1 − t^τ                     (τ = beta2_decay)
        ρ = min(lr, 1/√t),   α = max(ε₂, RMS(θ)) · ρ
        θ ← θ · (1 − lr · λ)             (decoupled weight decay)
        matrices (≥ 2-D, over the last two dimensions, rows i and columns j):
            R ← β̂₂ R + (1 − β̂₂) · mean_j G²ᵢⱼ,   C ← β̂₂ C + (1 − β̂₂) · mean_i G²ᵢⱼ
            V̂ = R Cᵀ / max(mean(R), ε₁)
        vectors and scalars:  V̂ ← β̂₂ V̂ + (1 − β̂₂) G²
        U = G / max(√V̂, ε₁),   θ ← θ − α · U / max(1, RMS(U)/d)

    ε₁ = None means the parameter dtype's machine epsilon. The state holds
    ``row_var`` ([..., m, 1]) and ``col_var`` ([..., 1, n]) for a tensor of
    two or more dimensions — O(m + n) memory per matrix instead of Adam's
    O(mn) — and ``variance`` for a vector or scalar, exactly torch's layout.

    Where implementations disagree: the paper (and Fairseq, HF Transformers,
    T5) has no learning rate and uses ρ = min(0.01, 1/√t); torch.optim (and
    this class) cap ρ by ``lr`` and use it for decoupled weight decay. The
    paper adds ε₁ = 1e-30 to G² before the row/column means; torch.optim (and
    this class) instead clamp mean(R) and √V̂ by ε₁. The means are means, not
    sums (equivalent, better conditioned). No first moment (the paper's
    optional β₁) and no update clipping by anything else.

    Complex parameters are refused when the optimizer is built (torch.optim
    refuses them at the first step). Same-shape parameters are stepped as one
    stack (batched norms and matmul), which is what makes this faster than
    torch's per-tensor loop on models of many matrices.

    Args:
        lr: cap of the relative step size ρ, and weight decay's factor (default 1e-2).
        beta2_decay: τ ≤ 0 (default -0.8). eps: (ε₁ or None, ε₂) (default (None, 1e-3)).
        d: clipping threshold ≥ 1 (default 1.0). weight_decay: λ (default 0).
        maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("adafactor")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)
