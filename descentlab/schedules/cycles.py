"""Cyclical schedules: CLR (triangular, triangular2, exp_range) and one-cycle.

Both were introduced by L. N. Smith: "Cyclical Learning Rates for Training
Neural Networks" (WACV 2017) and "Super-Convergence" (2018, with Topin).
The formulas follow ``torch.optim.lr_scheduler.CyclicLR`` and ``OneCycleLR``
operation for operation, so values agree with torch to the last bit or two.

Momentum is cycled *inversely* to the learning rate in both papers. Here a
schedule is a single value, so the momentum cycle is simply another
schedule: :class:`Cyclic` with the bounds swapped
(``Cyclic(max_momentum, base_momentum, ...)``), or :func:`one_cycle_momentum`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from descentlab.optim.validation import check_interval, check_nonnegative, check_positive
from descentlab.schedules.base import Schedule, check_period

__all__ = ["Cyclic", "AnnealCycle", "OneCycle", "one_cycle_momentum"]

_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


class Cyclic(Schedule):
    r"""Cyclical schedule between ``base_value`` and ``max_value`` (CLR).

    With ``c = floor(1 + t / (up + down))`` the cycle number and
    ``x = 1 + t / (up + down) - c`` the position in it,

    .. math:: v(t) = v_\text{base} + (v_\max - v_\text{base})\, h(x)\, s,

    where ``h`` rises linearly from 0 to 1 over ``step_size_up`` steps and
    falls back over ``step_size_down`` (default: ``step_size_up``), and the
    amplitude scale ``s`` is ``1`` (``"triangular"``), ``2**(1 - c)``
    (``"triangular2"``) or ``gamma**t`` (``"exp_range"``), or
    ``scale_fn(c)`` / ``scale_fn(t)`` for a custom ``scale_fn`` with
    ``scale_mode`` ``"cycle"`` / ``"iterations"``.

    Same as ``torch.optim.lr_scheduler.CyclicLR(base_lr, max_lr, ...)`` for
    the learning rate. torch's ``cycle_momentum`` (momentum from
    ``max_momentum`` down to ``base_momentum`` as the lr rises) is
    ``Cyclic(max_momentum, base_momentum, ...)``: ``max_value`` may be below
    ``base_value``. Defaults follow torch (``step_size_up=2000``,
    ``mode="triangular"``, ``gamma=1``).
    """

    def __init__(
        self,
        base_value: float,
        max_value: float,
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
    ) -> None:
        self.base_value = check_nonnegative("base_value", base_value)
        self.max_value = check_nonnegative("max_value", max_value)
        up = check_period("step_size_up", step_size_up)
        down = up if step_size_down is None else check_period("step_size_down", step_size_down)
        self.step_size_up, self.step_size_down = up, down
        if scale_fn is None and mode not in _CYCLIC_MODES:
            raise ValueError(f"mode must be one of {_CYCLIC_MODES}, got {mode!r}")
        if scale_fn is not None and not callable(scale_fn):
            raise TypeError(f"scale_fn must be callable, got {scale_fn!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        self.mode = mode
        self.gamma = check_positive("gamma", gamma)
        self.scale_fn = scale_fn
        if scale_fn is None:
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.scale_mode = scale_mode
        self._total = float(up) + float(down)
        self._ratio = float(up) / self._total

    def _scale(self, x: float) -> float:
        if self.scale_fn is not None:
            return float(self.scale_fn(x))
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return self.gamma**x

    def value(self, step: int) -> float:
        cycle = math.floor(1 + step / self._total)
        x = 1.0 + step / self._total - cycle
        if x <= self._ratio:
            h = x / self._ratio
        else:
            h = (x - 1) / (self._ratio - 1)
        height = (self.max_value - self.base_value) * h
        arg = cycle if self.scale_mode == "cycle" else step
        return self.base_value + height * self._scale(arg)


class AnnealCycle(Schedule):
    """Anneal ``start -> peak -> end`` in two phases, or ``start -> peak -> start -> end`` in three.

    Phase boundaries (as in torch's ``OneCycleLR``): the first phase ends at
    step ``pct_start * total_steps - 1``; in three-phase mode the second ends
    at ``2 * pct_start * total_steps - 2``; the last ends at
    ``total_steps - 1``. Within a phase from ``a`` to ``b`` at fraction
    ``p`` the value is ``b + (a - b) / 2 * (1 + cos(pi p))`` (``"cos"``) or
    ``a + (b - a) p`` (``"linear"``). Steps at or beyond ``total_steps - 1``
    give ``end_value`` (torch raises past ``total_steps`` and extrapolates
    at ``total_steps``, a value no optimizer step uses).

    :class:`OneCycle` and :func:`one_cycle_momentum` build the usual cases.
    """

    def __init__(
        self,
        start_value: float,
        peak_value: float,
        end_value: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        three_phase: bool = False,
    ) -> None:
        self.start_value = check_nonnegative("start_value", start_value)
        self.peak_value = check_nonnegative("peak_value", peak_value)
        self.end_value = check_nonnegative("end_value", end_value)
        self.total_steps = check_period("total_steps", total_steps)
        self.pct_start = check_interval("pct_start", pct_start, 0.0, 1.0)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        self.three_phase = bool(three_phase)
        up_end = float(self.pct_start * self.total_steps) - 1
        if three_phase:
            phases = [
                (up_end, self.start_value, self.peak_value),
                (
                    float(2 * self.pct_start * self.total_steps) - 2,
                    self.peak_value,
                    self.start_value,
                ),
                (self.total_steps - 1, self.start_value, self.end_value),
            ]
        else:
            phases = [
                (up_end, self.start_value, self.peak_value),
                (self.total_steps - 1, self.peak_value, self.end_value),
            ]
        previous = 0.0
        for end, _, _ in phases:
            if not end > previous:
                raise ValueError(
                    "pct_start * total_steps must be > 1 and leave room for the later phases "
                    f"(phase ends must increase), got pct_start={pct_start!r}, "
                    f"total_steps={total_steps!r}, three_phase={three_phase!r}"
                )
            previous = end
        self._phases = phases

    def _anneal(self, a: float, b: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (b - a) * pct + a

    def value(self, step: int) -> float:
        if step >= self.total_steps - 1:
            return self.end_value
        start = 0.0
        for end, a, b in self._phases:
            if step <= end:
                return self._anneal(a, b, (step - start) / (end - start))
            start = end
        return self.end_value  # pragma: no cover - the last phase ends at total_steps - 1


class OneCycle(AnnealCycle):
    """The 1cycle learning-rate policy (Smith & Topin 2018), as torch's ``OneCycleLR``.

    Starts at ``max_value / div_factor``, rises to ``max_value`` over the
    first ``pct_start`` of ``total_steps``, then anneals to
    ``start / final_div_factor``. ``three_phase=True`` is the paper's
    version (back down to the start value symmetrically, then a final
    annihilation phase); the default two-phase form is fastai's. Defaults
    as torch: ``pct_start=0.3``, ``anneal_strategy="cos"``,
    ``div_factor=25``, ``final_div_factor=1e4``. Pair with
    :func:`one_cycle_momentum` for torch's ``cycle_momentum=True``.
    """

    def __init__(
        self,
        max_value: float,
        total_steps: int,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
    ) -> None:
        max_value = check_nonnegative("max_value", max_value)
        start = max_value / check_positive("div_factor", div_factor)
        end = start / check_positive("final_div_factor", final_div_factor)
        super().__init__(
            start, max_value, end, total_steps, pct_start, anneal_strategy, three_phase
        )


def one_cycle_momentum(
    total_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal_strategy: Literal["cos", "linear"] = "cos",
    three_phase: bool = False,
) -> AnnealCycle:
    """Momentum (or Adam's β1) for the 1cycle policy: ``max -> base -> max``, inverse to the lr.

    Matches the momentum ``torch.optim.lr_scheduler.OneCycleLR`` writes with
    ``cycle_momentum=True`` (defaults 0.85 and 0.95 as torch). Attach it to
    ``"momentum"`` for SGD or ``"beta1"`` for Adam-type optimizers.
    """
    return AnnealCycle(
        max_momentum, base_momentum, max_momentum, total_steps, pct_start, anneal_strategy,
        three_phase,
    )
