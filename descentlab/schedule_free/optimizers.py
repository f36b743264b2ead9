r"""Schedule-Free SGD, AdamW and RAdam, with the ``schedulefree`` package's arguments.

The shared method (the three sequences, modes and checkpoints) is in
:mod:`descentlab.schedule_free.base`; each class here gives the base
direction :math:`d_t` and the learning rate of a step. Weight decay is
:math:`\lambda y_t` added to the direction (decay at the gradient point
``y``, the reference's default), so it is scaled by the learning rate and,
for the Adam forms, not by the preconditioner.

Differences from the ``schedulefree`` package (1.4): the gradients are left
as they are (the package divides ``p.grad`` in place by the Adam
denominator and adds the weight decay into it); every group's mode is
checked before a step (the package looks at the first group only); a bad
argument is refused with a message naming it (``momentum`` and ``betas[0]``
must lie in (0, 1): ``eval()`` divides by them); complex parameters step as
their real view. The ``foreach`` argument is accepted and ignored: the
``engine`` runs the steps (``"auto"``, ``"flat"``, ``"compiled"`` or
``"reference"``, as for every descentlab optimizer); the eager engines give
the package's bits, the compiled one agrees to rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from descentlab.rules import RULES
from descentlab.schedule_free.base import ScheduleFreeOptimizer

__all__ = ["SGDScheduleFree", "AdamWScheduleFree", "RAdamScheduleFree"]

class SGDScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-Free SGD (Defazio et al. 2024): SGD with primal averaging in place of a schedule.

    Direction :math:`d_t = g_t + \lambda y_t`; then the Schedule-Free
    recursion of :mod:`descentlab.schedule_free.base` with
    :math:`\beta` = ``momentum`` and the learning rate warmed up linearly over
    ``warmup_steps`` steps.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of groups.
        lr: learning rate (default 1.0; Schedule-Free SGD takes larger rates
            than SGD: 10–50× a tuned SGD's is typical).
        momentum: β in (0, 1) (default 0.9).
        weight_decay: λ, decay at ``y`` (default 0).
        warmup_steps: linear warm-up steps (default 0).
        r: polynomial weighting power of the average (default 0).
        weight_lr_power: the average's weights are ``lr_max ** weight_lr_power`` (default 2).
        foreach: accepted for compatibility; ignored.
        maximize: maximise the objective instead (default False; not in the package).
        engine: how steps run (``"auto"``, ``"flat"``, ``"compiled"``, ``"reference"``;
            see :class:`descentlab.optim.base.RuleOptimizer`).

    Call ``optimizer.train()`` before training and ``optimizer.eval()`` before
    evaluating or saving (see :mod:`descentlab.schedule_free.base`).
    """

    rule = RULES["sgd_schedulefree"]

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)


class AdamWScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-Free AdamW (Defazio et al. 2024; AlgoPerf 2024 self-tuning winner).

    .. math::

        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,\qquad
        d_t = \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} + \lambda y_t,

    no first moment (the averaging with :math:`\beta = \beta_1` plays its
    part), then the Schedule-Free recursion of
    :mod:`descentlab.schedule_free.base` with the learning rate warmed up
    linearly over ``warmup_steps`` steps. State: ``z`` and ``exp_avg_sq``
    (and the engines' ``step``; :math:`t` is the group's step count, as in
    the package).

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of groups.
        lr: learning rate (default 0.0025).
        betas: (β₁ in (0, 1), β₂ in [0, 1)) (default (0.9, 0.999)).
        eps: added to the denominator outside the square root (default 1e-8).
        weight_decay: λ, decay at ``y`` (default 0).
        warmup_steps: linear warm-up steps (default 0).
        r: polynomial weighting power of the average (default 0).
        weight_lr_power: the average's weights are ``lr_max ** weight_lr_power`` (default 2).
        foreach: accepted for compatibility; ignored.
        maximize: maximise the objective instead (default False; not in the package).
        engine: how steps run (``"auto"``, ``"flat"``, ``"compiled"``, ``"reference"``;
            see :class:`descentlab.optim.base.RuleOptimizer`).

    Call ``optimizer.train()`` before training and ``optimizer.eval()`` before
    evaluating or saving (see :mod:`descentlab.schedule_free.base`).
    """

    rule = RULES["adamw_schedulefree"]

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)


class RAdamScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-Free RAdam: Schedule-Free AdamW with RAdam's rectification instead of warm-up.

    With :math:`\rho_\infty = 2/(1-\beta_2) - 1` and
    :math:`\rho_t = \rho_\infty - 2t\beta_2^t/(1-\beta_2^t)`, the step's
    learning rate is ``lr`` times the rectification
    :math:`r_t = \sqrt{(\rho_t-4)(\rho_t-2)\rho_\infty / ((\rho_\infty-4)(\rho_\infty-2)\rho_t)}`
    while :math:`\rho_t > 4` (the Adam direction of :class:`AdamWScheduleFree`).
    Before that (the first 5 steps at β₂ = 0.999) the direction is the raw
    gradient and the learning rate is 0 with ``silent_sgd_phase=True`` (only
    ``exp_avg_sq`` moves; the default) or ``lr`` otherwise (an SGD phase).
    No ``warmup_steps``: the rectification is the warm-up.

    Args:
        params: an iterable of tensors, of ``(name, tensor)`` pairs, or of groups.
        lr: learning rate (default 0.0025).
        betas: (β₁ in (0, 1), β₂ in [0, 1)) (default (0.9, 0.999)).
        eps: added to the denominator outside the square root (default 1e-8).
        weight_decay: λ, decay at ``y`` (default 0).
        r: polynomial weighting power of the average (default 0).
        weight_lr_power: the average's weights are ``lr_max ** weight_lr_power`` (default 2).
        foreach: accepted for compatibility; ignored.
        silent_sgd_phase: no parameter moves before the rectification starts (default True).
        maximize: maximise the objective instead (default False; not in the package).
        engine: how steps run (``"auto"``, ``"flat"``, ``"compiled"``, ``"reference"``;
            see :class:`descentlab.optim.base.RuleOptimizer`).
    """

    rule = RULES["radam_schedulefree"]

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        foreach: bool | None = None,
        silent_sgd_phase: bool = True,
        *,
        maximize: bool = False,
        engine: str = "auto",
    ) -> None:
        super().__init__(params, locals(), engine=engine)
