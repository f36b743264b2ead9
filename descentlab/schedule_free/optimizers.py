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
their real view. The ``foreach`` argument is accepted and ignored: steps
always run on ``torch._foreach_*`` ops per device and dtype.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from descentlab.optim.validation import check_betas, check_nonnegative
from descentlab.schedule_free.base import ScheduleFreeOptimizer

__all__ = ["SGDScheduleFree", "AdamWScheduleFree", "RAdamScheduleFree"]

#: mean elements per tensor from which the Adam direction is divided tensor by tensor in place
_LARGE = 1 << 16


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

    Call ``optimizer.train()`` before training and ``optimizer.eval()`` before
    evaluating or saving (see :mod:`descentlab.schedule_free.base`).
    """

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
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                        foreach=foreach)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters."""
        super().check_group(group)
        self._check_beta("momentum", group["momentum"])

    def momentum_of(self, group: dict[str, Any]) -> float:
        """β = ``momentum``."""
        return group["momentum"]

    def direction(
        self,
        group: dict[str, Any],
        step: int,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
    ) -> list[torch.Tensor]:
        """The gradients themselves (weight decay is added by the base)."""
        return grads


class _AdamFamily(ScheduleFreeOptimizer):
    """What Schedule-Free AdamW and RAdam share: ``betas``, ``eps`` and the ``exp_avg_sq`` state."""

    state_keys = ("exp_avg_sq",)

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate the group's hyperparameters."""
        super().check_group(group)
        check_betas(group["betas"])
        self._check_beta("betas[0]", group["betas"][0])
        check_nonnegative("eps", group["eps"])

    def momentum_of(self, group: dict[str, Any]) -> float:
        """β = ``betas[0]``."""
        return group["betas"][0]


class AdamWScheduleFree(_AdamFamily):
    r"""Schedule-Free AdamW (Defazio et al. 2024; AlgoPerf 2024 self-tuning winner).

    .. math::

        v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2,\qquad
        d_t = \frac{g_t}{\sqrt{v_t / (1 - \beta_2^t)} + \epsilon} + \lambda y_t,

    no first moment (the averaging with :math:`\beta = \beta_1` plays its
    part), then the Schedule-Free recursion of
    :mod:`descentlab.schedule_free.base` with the learning rate warmed up
    linearly over ``warmup_steps`` steps. State: ``z`` and ``exp_avg_sq``.

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

    Call ``optimizer.train()`` before training and ``optimizer.eval()`` before
    evaluating or saving (see :mod:`descentlab.schedule_free.base`).
    """

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
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                        foreach=foreach)
        super().__init__(params, defaults)

    def direction(
        self,
        group: dict[str, Any],
        step: int,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
    ) -> list[torch.Tensor]:
        """The Adam-normalised gradients (new tensors); updates ``exp_avg_sq``."""
        return _adam_direction(group, step, grads, states)


def _second_moment(
    group: dict[str, Any], grads: list[torch.Tensor], states: list[dict[str, Any]]
) -> list[torch.Tensor]:
    """``v ← β₂ v + (1 − β₂) g²`` in place; returns the ``exp_avg_sq`` tensors."""
    beta2 = group["betas"][1]
    exp_avg_sq = [s["exp_avg_sq"] for s in states]
    torch._foreach_mul_(exp_avg_sq, beta2)
    torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
    return exp_avg_sq


def _adam_direction(
    group: dict[str, Any], step: int, grads: list[torch.Tensor], states: list[dict[str, Any]]
) -> list[torch.Tensor]:
    """Update ``exp_avg_sq`` and return ``g / (sqrt(v / (1 − β₂ᵗ)) + eps)`` (new tensors)."""
    beta2 = group["betas"][1]
    exp_avg_sq = _second_moment(group, grads, states)
    denom = torch._foreach_div(exp_avg_sq, 1 - beta2**step)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, group["eps"])
    if sum(g.numel() for g in grads) >= _LARGE * len(grads):
        # large tensors: g / denom written over denom, one temporary instead of two (one call
        # per tensor, which costs little next to the arithmetic at this size)
        for g, d in zip(grads, denom, strict=True):
            torch.div(g, d, out=d)
        return list(denom)
    return list(torch._foreach_div(grads, denom))


class RAdamScheduleFree(_AdamFamily):
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
    """

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
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, r=r,
                        weight_lr_power=weight_lr_power, foreach=foreach,
                        silent_sgd_phase=bool(silent_sgd_phase))
        super().__init__(params, defaults)

    @staticmethod
    def _rho(group: dict[str, Any], step: int) -> tuple[float, float]:
        beta2 = group["betas"][1]
        rho_inf = 2 / (1 - beta2) - 1
        beta2_t = beta2**step
        return rho_inf, rho_inf - 2 * step * beta2_t / (1 - beta2_t)

    def scheduled_lr(self, group: dict[str, Any], step: int) -> float:
        """``lr`` times the rectification (0 or 1 before it starts; see the class docstring)."""
        rho_inf, rho_t = self._rho(group, step)
        if rho_t > 4.0:
            rect = (
                (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
            ) ** 0.5
        else:
            rect = float(not group["silent_sgd_phase"])
        return group["lr"] * rect

    def direction(
        self,
        group: dict[str, Any],
        step: int,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
    ) -> list[torch.Tensor]:
        """Adam-normalised once rectified, the raw gradients before; updates ``exp_avg_sq``."""
        if self._rho(group, step)[1] > 4.0:
            return _adam_direction(group, step, grads, states)
        _second_moment(group, grads, states)
        return grads
