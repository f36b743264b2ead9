"""ASGD: averaged stochastic gradient descent."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule

__all__ = ["ASGD"]


class ASGD(RuleOptimizer):
    r"""Averaged SGD (Polyak & Juditsky, 1992), as torch.optim.ASGD computes it.

    With g ← g + λ_wd θ (coupled weight decay) at step t = 1, 2, …:

        θ ← θ · (1 − λ η_t) − η_t g
        ā ← θ                     while μ_t = 1 (t ≤ t₀ + 1)
        ā ← ā + μ_t (θ − ā)       after, a running mean of the iterates
        η_{t+1} = lr / (1 + λ · lr · t)^α,    μ_{t+1} = 1 / max(1, t − t₀)

    with η₁ = lr and μ₁ = 1. The averaged iterate ā is kept in the state as
    ``ax`` (the parameters themselves are the plain SGD iterates; copy ``ax``
    into them to evaluate the average). η and μ are per-parameter state
    (``eta``, ``mu``) as in torch.optim, so a learning rate changed by a
    scheduler takes effect one step late, exactly as there. The state dict has
    torch's layout (``step``, ``eta``, ``mu``, ``ax``); η and μ are kept in
    float64 (torch keeps them in the default dtype).

    Args:
        lr: η₀ (default 1e-2). lambd: decay term λ (default 1e-4).
        alpha: power α of η's decay (default 0.75).
        t0: step at which averaging starts (default 1e6).
        weight_decay: λ_wd (default 0). maximize: maximise instead of minimise.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("asgd")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        super().__init__(params, locals(), engine=engine, **torch_options)
