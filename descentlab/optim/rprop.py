"""Rprop: resilient backpropagation, a step size per coordinate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["Rprop"]


class Rprop(RuleOptimizer):
    r"""Rprop (Riedmiller & Braun, 1993), as torch.optim.Rprop computes it.

    Each coordinate keeps a step size Δ (starting at ``lr``) and the previous
    gradient g_prev. At each step, with s = sign(g · g_prev):

        Δ ← clamp(Δ · η⁺, Δ_min, Δ_max)     where s > 0 (same sign: grow)
        Δ ← clamp(Δ · η⁻, Δ_min, Δ_max)     where s < 0 (sign flipped: shrink)
        g̃ = 0 where s < 0, else g
        θ ← θ − sign(g̃) · Δ;   g_prev ← g̃

    Only the sign of the gradient is used, so Rprop suits full-batch training;
    ``lr`` only sets the initial step size (a scheduler changing it later has
    no effect, as with torch). This is the "Rprop−" variant without weight
    backtracking, torch's and most libraries' (the paper's original reverts the
    last step of a coordinate whose sign flipped; iRprop+ does so only when the
    loss rose). Complex parameters are treated as pairs of reals.

    Args:
        lr: initial step size Δ₀ (default 1e-2).
        etas: (η⁻, η⁺), 0 < η⁻ < 1 < η⁺ (default (0.5, 1.2)).
        step_sizes: (Δ_min, Δ_max) (default (1e-6, 50)).
        maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("rprop")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)
