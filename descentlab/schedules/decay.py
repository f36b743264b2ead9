"""Decaying schedules in closed form: time-based, step, multi-step, exponential,
polynomial, linear, cosine and cosine with warm restarts.

Every class takes absolute values (``init_value``, ``final_value``) rather
than factors of an optimizer's base learning rate, so the same object can
schedule a learning rate, a momentum or a weight decay. To reproduce a torch
scheduler, pass the optimizer's base learning rate as ``init_value``; each
docstring names the torch (and optax/Keras) equivalent and where they
differ.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from descentlab.optim.validation import check_nonnegative, check_positive
from descentlab.schedules.base import Schedule, check_period

__all__ = [
    "InverseTimeDecay",
    "StepDecay",
    "MultiStepDecay",
    "ExponentialDecay",
    "PolynomialDecay",
    "LinearSchedule",
    "CosineDecay",
    "CosineWarmRestarts",
]


class InverseTimeDecay(Schedule):
    """Time-based decay ``value(t) = init_value / (1 + decay_rate * t / decay_steps)``.

    With ``staircase=True`` the ratio ``t / decay_steps`` is floored, so the
    value changes every ``decay_steps`` steps. Same as Keras
    ``InverseTimeDecay``; with ``decay_steps=1`` it is the classic
    ``lr0 / (1 + k t)`` (torch has no class for it; ``LambdaLR`` can express
    it). Defaults: ``decay_steps=1``, ``staircase=False``.
    """

    def __init__(
        self,
        init_value: float,
        decay_rate: float,
        decay_steps: int = 1,
        staircase: bool = False,
    ) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.decay_rate = check_nonnegative("decay_rate", decay_rate)
        self.decay_steps = check_period("decay_steps", decay_steps)
        self.staircase = bool(staircase)

    def value(self, step: int) -> float:
        ratio = step // self.decay_steps if self.staircase else step / self.decay_steps
        return self.init_value / (1.0 + self.decay_rate * ratio)


class StepDecay(Schedule):
    """``value(t) = init_value * gamma ** floor(t / step_size)``.

    ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` with
    ``init_value`` = the base lr. torch multiplies the previous lr by
    ``gamma`` at each boundary; this is the closed form it also documents.
    Default ``gamma=0.1`` (as torch).
    """

    def __init__(self, init_value: float, step_size: int, gamma: float = 0.1) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.step_size = check_period("step_size", step_size)
        self.gamma = check_nonnegative("gamma", gamma)

    def value(self, step: int) -> float:
        return self.init_value * self.gamma ** (step // self.step_size)


class MultiStepDecay(Schedule):
    """``value(t) = init_value * gamma ** (number of milestones <= t)``.

    ``torch.optim.lr_scheduler.MultiStepLR(milestones, gamma)``. Milestones
    must be non-decreasing integers ``>= 1``; a repeated milestone applies
    ``gamma`` once per repetition, as in torch. Default ``gamma=0.1``.
    """

    def __init__(self, init_value: float, milestones: Sequence[int], gamma: float = 0.1) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.milestones = [check_period(f"milestones[{i}]", m) for i, m in enumerate(milestones)]
        if self.milestones != sorted(self.milestones):
            raise ValueError(f"milestones must be non-decreasing, got {list(milestones)!r}")
        self.gamma = check_nonnegative("gamma", gamma)

    def value(self, step: int) -> float:
        return self.init_value * self.gamma ** bisect.bisect_right(self.milestones, step)


class ExponentialDecay(Schedule):
    """``value(t) = init_value * gamma ** (t / transition_steps)``.

    With ``transition_steps=1`` this is ``torch.optim.lr_scheduler.ExponentialLR(gamma)``
    (torch multiplies by ``gamma`` every step; rounding in that product
    grows like ``t`` ulps, about ``1e-13`` relative after 1,000 steps).
    ``staircase=True`` floors the exponent (Keras/optax). ``gamma > 1``
    grows the value, as in a learning-rate range test.
    """

    def __init__(
        self,
        init_value: float,
        gamma: float,
        transition_steps: int = 1,
        staircase: bool = False,
    ) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.gamma = check_positive("gamma", gamma)
        self.transition_steps = check_period("transition_steps", transition_steps)
        self.staircase = bool(staircase)

    def value(self, step: int) -> float:
        if self.transition_steps == 1:
            return self.init_value * self.gamma**step
        p = step // self.transition_steps if self.staircase else step / self.transition_steps
        return self.init_value * self.gamma**p


class PolynomialDecay(Schedule):
    """``value(t) = end + (init - end) * (1 - min(t, total_steps) / total_steps) ** power``.

    With ``end_value=0`` this is ``torch.optim.lr_scheduler.PolynomialLR(total_iters,
    power)``; with an ``end_value`` it is optax's ``polynomial_schedule``.
    Held at ``end_value`` after ``total_steps``. Defaults: ``power=1``,
    ``end_value=0``.
    """

    def __init__(
        self,
        init_value: float,
        total_steps: int,
        power: float = 1.0,
        end_value: float = 0.0,
    ) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.total_steps = check_period("total_steps", total_steps)
        self.power = check_positive("power", power)
        self.end_value = check_nonnegative("end_value", end_value)

    def value(self, step: int) -> float:
        frac = 1.0 - min(self.total_steps, step) / self.total_steps
        return (self.init_value - self.end_value) * frac**self.power + self.end_value


class LinearSchedule(Schedule):
    """``value(t) = start + (end - start) * min(t, total_steps) / total_steps``.

    ``torch.optim.lr_scheduler.LinearLR(start_factor, end_factor, total_iters)``
    is ``LinearSchedule(base * start_factor, base * end_factor, total_iters)``.
    Used as a warm-up (``start < end``) or a linear decay (``start > end``);
    held at ``end_value`` after ``total_steps``.
    """

    def __init__(self, start_value: float, end_value: float, total_steps: int) -> None:
        self.start_value = check_nonnegative("start_value", start_value)
        self.end_value = check_nonnegative("end_value", end_value)
        self.total_steps = check_period("total_steps", total_steps)

    def value(self, step: int) -> float:
        frac = min(self.total_steps, step) / self.total_steps
        return self.start_value + (self.end_value - self.start_value) * frac


class CosineDecay(Schedule):
    r"""Cosine annealing from ``init_value`` to ``final_value`` over ``total_steps``.

    .. math:: v(t) = v_\text{final} + (v_\text{init} - v_\text{final})
              \frac{1 + \cos(\pi \min(t, T) / T)}{2}

    (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts.) Held at
    ``final_value`` after ``T = total_steps``.

    Where libraries disagree:

    * ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max, eta_min)`` updates
      the lr *recursively* from the previous lr on every ``step()``. That
      recursion drifts from the closed form it documents (measured: up to
      6e-13 relative over 2,000 steps with ``T_max=10``, growing with the
      number of steps), and once anything else changes the lr it never
      returns to the closed form. We compute the closed form
      (``CosineAnnealingLR._get_closed_form_lr``), and the parity tests
      compare against that.
    * torch keeps following the cosine after ``T_max`` (the lr rises again,
      period ``2 T_max``); by default we hold ``final_value``, like optax's
      ``cosine_decay_schedule``. ``periodic=True`` follows torch. For
      restarts use :class:`CosineWarmRestarts`.
    """

    def __init__(
        self,
        init_value: float,
        total_steps: int,
        final_value: float = 0.0,
        periodic: bool = False,
    ) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.total_steps = check_period("total_steps", total_steps)
        self.final_value = check_nonnegative("final_value", final_value)
        self.periodic = bool(periodic)

    def value(self, step: int) -> float:
        t = step if self.periodic else min(step, self.total_steps)
        lo = self.final_value
        return lo + (self.init_value - lo) * (1 + math.cos(math.pi * t / self.total_steps)) / 2


class CosineWarmRestarts(Schedule):
    r"""Cosine annealing with warm restarts (SGDR, Loshchilov & Hutter 2017).

    The first cycle lasts ``period`` steps, each later one ``period_mult``
    times longer. Within a cycle of length :math:`T_i`, at :math:`T_{cur}`
    steps since its restart,

    .. math:: v = v_\min + (v_i - v_\min)\,\frac{1 + \cos(\pi T_{cur}/T_i)}{2},
              \qquad v_i = \text{init\_value}\cdot\text{peak\_decay}^{i}.

    ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)``
    is ``CosineWarmRestarts(base_lr, T_0, T_mult, eta_min)`` with the default
    ``peak_decay=1`` (timm calls ``peak_decay`` ``cycle_decay``). The cycle is
    found with exact integer arithmetic, so there is no ``log``-rounding at
    cycle boundaries.
    """

    def __init__(
        self,
        init_value: float,
        period: int,
        period_mult: int = 1,
        min_value: float = 0.0,
        peak_decay: float = 1.0,
    ) -> None:
        self.init_value = check_nonnegative("init_value", init_value)
        self.period = check_period("period", period)
        self.period_mult = check_period("period_mult", period_mult)
        self.min_value = check_nonnegative("min_value", min_value)
        self.peak_decay = check_positive("peak_decay", peak_decay)

    def cycle(self, step: int) -> tuple[int, int, int]:
        """Return ``(cycle index i, steps since the restart T_cur, cycle length T_i)``."""
        if self.period_mult == 1:
            return step // self.period, step % self.period, self.period
        i, t_cur, t_i = 0, step, self.period
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= self.period_mult
            i += 1
        return i, t_cur, t_i

    def value(self, step: int) -> float:
        i, t_cur, t_i = self.cycle(step)
        peak = self.init_value if self.peak_decay == 1.0 else self.init_value * self.peak_decay**i
        lo = self.min_value
        return lo + (peak - lo) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
