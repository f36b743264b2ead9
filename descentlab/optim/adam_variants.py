"""Newer Adam variants with ``pytorch_optimizer``'s arguments: ADOPT and AdEMAMix.

Each takes ``cautious=True`` for the cautious mask (see
:mod:`descentlab.rules.adam_variants`). Float64 parity with
``pytorch_optimizer`` 4.1 is tested with and without the mask (README).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule
from descentlab.rules.adam_variants import fourth_root

__all__ = ["ADOPT", "AdEMAMix"]


class ADOPT(RuleOptimizer):
    r"""ADOPT: Adam that normalises by the previous second moment (Taniguchi et al., 2024).

    With g the gradient (plus λθ unless ``weight_decouple``; decoupled decay
    θ ← θ(1 − λη), or θ(1 − λ) with ``fixed_decay``):

        t = 1:   v ← g²                                   (no step)
        t > 1:   n = clip(g / max(√v, ε), ±c(t)),   m ← β₁m + (1 − β₁) n
                 θ ← θ − η m,   v ← β₂v + (1 − β₂) g²

    The second moment in the normaliser is the one *before* g (so g and its
    scale are independent), and the momentum comes after normalising. c(t)
    is ``clip_lambda(t)`` (default t^¼, None: no clipping); with ``cautious``
    the step uses m masked where m·n ≤ 0 and rescaled (Liang et al., 2024).

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂) (default (0.9, 0.9999)).
        clip_lambda: c(t), a function of the step (default t^¼) or None.
        weight_decay: λ (default 0). weight_decouple: decoupled decay (default False).
        fixed_decay: decoupled decay not scaled by η. eps: ε (default 1e-6).
        maximize: maximise instead. cautious: the cautious mask (default False).
        engine: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("adopt")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        clip_lambda: Callable[[int], float] | None = fourth_root,
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        eps: float = 1e-6,
        maximize: bool = False,
        *,
        cautious: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)


class AdEMAMix(RuleOptimizer):
    r"""AdEMAMix: Adam with a mixture of a fast and a slow momentum (Pagliardini et al., 2024).

    With g as for :class:`ADOPT` and the warm-up schedules αₜ (linear to α)
    and β₃ₜ (half-life linear in t) over ``t_alpha_beta3`` steps (none by default):

        m₁ ← β₁m₁ + (1 − β₁) g,   v ← β₂v + (1 − β₂) g²,   m₂ ← β₃ₜm₂ + (1 − β₃ₜ) g
        θ ← θ − η (m₁/(1 − β₁ᵗ) + αₜ m₂) / (√v/√(1 − β₂ᵗ) + ε)

    With ``cautious`` the fast momentum m₁ is masked where m₁·g ≤ 0 and
    rescaled (Liang et al., 2024). Complex parameters are refused.

    Args:
        lr: η (default 1e-3). betas: (β₁, β₂, β₃) (default (0.9, 0.999, 0.9999)).
        weight_decay: λ (default 0). weight_decouple: decoupled decay (default False).
        fixed_decay: decoupled decay not scaled by η. alpha: α (default 5.0).
        t_alpha_beta3: warm-up steps of α and β₃ (default None). eps: ε (default 1e-8).
        maximize: maximise instead. cautious: the cautious mask (default False).
        engine: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("ademamix")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        weight_decay: float = 0.0,
        weight_decouple: bool = False,
        fixed_decay: bool = False,
        alpha: float = 5.0,
        t_alpha_beta3: float | None = None,
        eps: float = 1e-8,
        maximize: bool = False,
        *,
        cautious: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)
