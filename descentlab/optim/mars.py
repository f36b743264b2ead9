"""MARS (Yuan et al., 2024): variance-reduced momentum with an AdamW, Lion or Shampoo step."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from descentlab.optim.base import RuleOptimizer
from descentlab.rules import get_rule
from descentlab.validation import check_nonnegative, check_positive

__all__ = ["MARS"]


class MARS(RuleOptimizer):
    r"""MARS: momentum on a variance-reduced gradient, with an AdamW, Lion or Shampoo step.

    With the previous gradient g₋ (kept in state):

        c = g + γ β₁/(1 − β₁)(g − g₋)   (scaled to norm 1 if longer)
        m ← β₁m + (1 − β₁)c,   v ← β₂v + (1 − β₂)c²
        θ ← θ(1 − ηλ) − η m̂/(√v̂ + ε)        (``mars_type="adamw"``)

    or θ ← θ − η sign(m) (``"lion"``), or θ ← θ − η √max(1, r/c) NS₅(m/(1 − β₁))
    (``"shampoo"``: Newton–Schulz orthogonalisation, in bfloat16 as the
    reference). Tensors that are not matrices take AdamW on g with
    ``betas_1d``, ``weight_decay_1d`` and ``lr_1d`` unless ``optimize_1d``.
    See :mod:`descentlab.rules.mars`.

    Arguments, defaults and arithmetic are ``pytorch_optimizer.MARS``'s (float64
    runs agree with it to rounding), including its quirks: ``lr_1d`` is kept
    as the factor ``lr_1d / lr`` (group key ``lr_1d_factor``), so schedulers
    move both rates, and coupled decay (``weight_decouple=False``) reaches the
    step only through g₋. Differences: the step is counted per parameter, and
    ``maximize`` leaves ``param.grad`` alone (``foreach`` is accepted and ignored).

    Args:
        lr: η (default 3e-3). betas: (β₁, β₂) (default (0.95, 0.99)).
        gamma: γ (default 0.025). mars_type: ``"adamw"``, ``"lion"`` or ``"shampoo"``.
        optimize_1d: MARS on 1-D tensors too (default False).
        lr_1d: 1-D learning rate (default 3e-3). betas_1d: (default (0.9, 0.95)).
        weight_decay: λ (default 0). weight_decay_1d: (default 0.1).
        weight_decouple: decoupled decay (default True). fixed_decay: λ not scaled by η.
        ams_bound: running maximum of v (default False). cautious: the cautious mask.
        eps: ε (default 1e-8). maximize: maximise instead.
        engine, torch_options: see :class:`~descentlab.optim.base.RuleOptimizer`.
    """

    rule = get_rule("mars")
    #: declared hyperparameters computed from the arguments rather than given
    derived_hyperparameters: ClassVar[tuple[str, ...]] = ("lr_1d_factor",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.99),
        gamma: float = 0.025,
        mars_type: str = "adamw",
        optimize_1d: bool = False,
        lr_1d: float = 3e-3,
        betas_1d: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
        weight_decay_1d: float = 1e-1,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        ams_bound: bool = False,
        cautious: bool = False,
        eps: float = 1e-8,
        maximize: bool = False,
        *,
        engine: str = "auto",
        **torch_options: Any,
    ) -> None:
        # the 1-D rate is kept as its ratio to lr (the reference's lr_1d_factor), so lr > 0
        lr_1d_factor = check_nonnegative("lr_1d", lr_1d) / check_positive("lr", lr)
        super().__init__(params, locals(), engine=engine, **torch_options)
