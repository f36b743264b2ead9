"""Warm-up in front of any schedule, warmup-stable-decay (WSD), warm-up + cosine.

Convention shared with the decays: a ramp of ``n`` steps reaches its target
at step ``n`` (``LinearLR(total_iters=n)`` in torch does the same).
"""

from __future__ import annotations

import math
from typing import Literal

from descentlab.optim.validation import check_int, check_nonnegative
from descentlab.schedules.base import Schedule, as_schedule, check_period
from descentlab.schedules.decay import CosineDecay

__all__ = ["Warmup", "WarmupStableDecay", "warmup_cosine"]


class Warmup(Schedule):
    """Linear warm-up from ``start_value`` in front of ``schedule``.

    With ``shift=True`` (default) the wrapped schedule starts its own clock
    after the warm-up: ``v(t) = start + (s(0) - start) t / W`` for
    ``t < W`` and ``v(t) = s(t - W)`` afterwards. This is
    ``SequentialLR([LinearLR, s], milestones=[W])`` in torch and the usual
    "warm-up then cosine" of transformer training.

    With ``shift=False`` the warm-up *replaces* the first ``W`` steps of the
    schedule and ramps to ``s(W)``: ``v(t) = s(t)`` for ``t >= W`` (timm's
    convention). Then ``W`` may not exceed the schedule's ``total_steps``.

    Metrics given to :meth:`observe` during the warm-up are not passed on,
    so a wrapped :class:`~descentlab.schedules.plateau.ReduceOnPlateau`
    starts counting after the warm-up.
    """

    def __init__(
        self,
        schedule: Schedule | float,
        warmup_steps: int,
        start_value: float = 0.0,
        shift: bool = True,
    ) -> None:
        self.schedule = as_schedule(schedule, "schedule")
        self.warmup_steps = check_period("warmup_steps", warmup_steps)
        self.start_value = check_nonnegative("start_value", start_value)
        self.shift = bool(shift)
        total = getattr(self.schedule, "total_steps", None)
        if not shift and isinstance(total, int) and self.warmup_steps > total:
            raise ValueError(
                f"warmup_steps={warmup_steps!r} is longer than the schedule's "
                f"total_steps={total!r}"
            )

    def _inner_step(self, step: int) -> int:
        return step - self.warmup_steps if self.shift else step

    def value(self, step: int) -> float:
        w = self.warmup_steps
        if step >= w:
            return self.schedule.value(self._inner_step(step))
        target = self.schedule.value(0 if self.shift else w)
        return self.start_value + (target - self.start_value) * (step / w)

    def children(self) -> list[Schedule]:
        return [self.schedule]

    def observe(self, metric: float, step: int) -> None:
        if step >= self.warmup_steps:
            self.schedule.observe(metric, self._inner_step(step))


def warmup_cosine(
    peak_value: float,
    warmup_steps: int,
    total_steps: int,
    final_value: float = 0.0,
    start_value: float = 0.0,
) -> Warmup:
    """Linear warm-up to ``peak_value``, then cosine decay to ``final_value`` at ``total_steps``.

    The AlgoPerf baseline schedule, and Hugging Face's
    ``get_cosine_schedule_with_warmup`` (with ``start_value=0``,
    ``final_value=0``). ``warmup_steps`` must be shorter than ``total_steps``.
    """
    total_steps = check_period("total_steps", total_steps)
    warmup_steps = check_period("warmup_steps", warmup_steps)
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps={warmup_steps!r} must be shorter than total_steps={total_steps!r}"
        )
    decay = CosineDecay(peak_value, total_steps - warmup_steps, final_value)
    return Warmup(decay, warmup_steps, start_value=start_value)


class WarmupStableDecay(Schedule):
    r"""Warmup-stable-decay ("trapezoidal"): ramp up, hold the peak, cool down at the end.

    Over ``T = total_steps`` with ``W = warmup_steps`` and ``D = decay_steps``:

    * ``t < W``: linear from ``start_value`` to ``peak_value``;
    * ``W <= t < T - D``: ``peak_value``;
    * ``t >= T - D``: from ``peak_value`` to ``final_value`` (reached at
      ``t = T`` and held), with ``f = (t - T + D) / D`` and shape
      ``"linear"`` (``1 - f``), ``"cosine"`` (``(1 + cos(pi f)) / 2``) or
      ``"1-sqrt"`` (``1 - sqrt(f)``).

    References: Hu et al., "MiniCPM" (2024) for WSD; Hägele et al.,
    "Scaling Laws and Compute-Optimal Training beyond Fixed Training
    Durations" (NeurIPS 2024) for the ``1-sqrt`` cool-down. The stable phase
    makes it easy to branch a cool-down off any checkpoint. ``W + D`` may
    not exceed ``T``.
    """

    def __init__(
        self,
        peak_value: float,
        total_steps: int,
        warmup_steps: int,
        decay_steps: int,
        start_value: float = 0.0,
        final_value: float = 0.0,
        decay_shape: Literal["linear", "cosine", "1-sqrt"] = "linear",
    ) -> None:
        self.peak_value = check_nonnegative("peak_value", peak_value)
        self.total_steps = check_period("total_steps", total_steps)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, minimum=0)
        self.decay_steps = check_period("decay_steps", decay_steps)
        if self.warmup_steps + self.decay_steps > self.total_steps:
            raise ValueError(
                f"warmup_steps + decay_steps must not exceed total_steps: got "
                f"warmup_steps={warmup_steps!r} + decay_steps={decay_steps!r} > "
                f"total_steps={total_steps!r}"
            )
        self.start_value = check_nonnegative("start_value", start_value)
        self.final_value = check_nonnegative("final_value", final_value)
        if decay_shape not in ("linear", "cosine", "1-sqrt"):
            raise ValueError(
                f"decay_shape must be 'linear', 'cosine' or '1-sqrt', got {decay_shape!r}"
            )
        self.decay_shape = decay_shape

    def value(self, step: int) -> float:
        w, d, t_total = self.warmup_steps, self.decay_steps, self.total_steps
        if step < w:
            return self.start_value + (self.peak_value - self.start_value) * (step / w)
        decay_start = t_total - d
        if step < decay_start:
            return self.peak_value
        f = min(step - decay_start, d) / d
        if self.decay_shape == "linear":
            keep = 1.0 - f
        elif self.decay_shape == "cosine":
            keep = (1.0 + math.cos(math.pi * f)) / 2.0
        else:
            keep = 1.0 - math.sqrt(f)
        return self.final_value + (self.peak_value - self.final_value) * keep
