"""Reduce a scheduled value when a validation metric stops improving."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from descentlab.optim.validation import check_int, check_interval, check_nonnegative
from descentlab.schedules.base import Schedule, as_schedule

__all__ = ["PlateauRule", "ReduceOnPlateau"]


@dataclasses.dataclass
class PlateauRule:
    r"""``torch.optim.lr_scheduler.ReduceLROnPlateau``'s decision rule, fed one metric at a time.

    A metric is an improvement if it beats ``best`` by more than
    ``threshold``: for ``mode="min"`` it must be below ``best * (1 - threshold)``
    (``threshold_mode="rel"``) or ``best - threshold`` (``"abs"``); for
    ``mode="max"`` above ``best * (1 + threshold)`` or ``best + threshold``.
    After more than ``patience`` metrics without improvement the rule fires
    (the scheduler would reduce its value), resets its count and ignores the
    next ``cooldown`` metrics. Arguments and defaults are torch's.

    Used by :class:`ReduceOnPlateau` (which also applies torch's ``eps``
    test before reducing) and by the diagnostics' plateau detector.
    """

    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: int = 0
    mode: Literal["min", "max"] = "min"
    best: float = dataclasses.field(init=False)
    num_bad: int = dataclasses.field(init=False)
    cooldown_counter: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.threshold_mode not in ("rel", "abs"):
            raise ValueError(
                f"threshold_mode must be 'rel' or 'abs', got {self.threshold_mode!r}"
            )
        self.patience = check_int("patience", self.patience, minimum=0)
        self.threshold = check_nonnegative("threshold", self.threshold)
        self.cooldown = check_int("cooldown", self.cooldown, minimum=0)
        self.reset()

    def reset(self) -> None:
        """Forget all metrics seen."""
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_counter = 0

    def is_better(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            bound = best * (1.0 - self.threshold) if self.threshold_mode == "rel" else (
                best - self.threshold
            )
            return current < bound
        bound = best * (1.0 + self.threshold) if self.threshold_mode == "rel" else (
            best + self.threshold
        )
        return current > bound

    def step(self, metric: float) -> bool:
        """Feed one metric; return whether the rule fires on it."""
        current = float(metric)
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad = 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0
        if self.num_bad > self.patience:
            self.cooldown_counter = self.cooldown
            self.num_bad = 0
            return True
        return False


def _rule_field(name: str) -> property:
    """A property of :class:`ReduceOnPlateau` that reads and writes its rule's ``name``."""

    def get(self: ReduceOnPlateau) -> Any:
        return getattr(self.rule, name)

    def set_(self: ReduceOnPlateau, value: Any) -> None:
        setattr(self.rule, name, value)

    return property(get, set_, doc=f"The plateau rule's ``{name}`` (see :class:`PlateauRule`).")


class ReduceOnPlateau(Schedule):
    r"""Multiply ``base`` by ``factor`` each time the observed metric plateaus.

    ``value(t) = min(b, max(b * factor**n, min_value))`` with ``b = base(t)``
    and ``n`` the number of reductions so far. ``base`` is any schedule (or a
    number), so the plateau rule composes with closed-form ones:
    ``Warmup(ReduceOnPlateau(0.1), 500)`` warms up, then lets the metric
    decide; ``ReduceOnPlateau(CosineDecay(...))`` lowers a cosine by
    ``factor`` on each plateau. The outer ``min(b, ...)`` keeps ``min_value``
    from *raising* a base that is already below it (e.g. during a warm-up).

    The plateau rule (:class:`PlateauRule`, kept in :attr:`rule`) is
    ``torch.optim.lr_scheduler.ReduceLROnPlateau``'s,
    with the same arguments and defaults: feed one metric per evaluation
    through :meth:`observe` (``ScheduleController.step(metric)`` or
    ``.observe(metric)`` does it). A metric is an improvement if it beats
    ``best`` by more than ``threshold`` (``rel``: ``best * (1 -+ threshold)``,
    ``abs``: ``best -+ threshold``, for ``mode`` ``"min"``/``"max"``). After
    more than ``patience`` non-improving observations the value is reduced,
    then ``cooldown`` observations are ignored. A reduction that would change
    the value by no more than ``eps`` is skipped. With a constant ``base``
    equal to the optimizer's lr, the sequence of values equals torch's.

    Where it differs from torch: torch rewrites ``group["lr"]`` in place and
    so fights any other scheduler on the same optimizer; here the reduction
    count is state that multiplies a closed-form base, and is saved by
    :meth:`state_dict` so a resumed run continues exactly.
    """

    def __init__(
        self,
        base: Schedule | float,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_value: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.base = as_schedule(base, "base")
        self.factor = check_interval(
            "factor", factor, 0.0, 1.0, low_closed=False, high_closed=False
        )
        self.rule = PlateauRule(patience, threshold, threshold_mode, cooldown, mode)
        self.min_value = check_nonnegative("min_value", min_value)
        self.eps = check_nonnegative("eps", eps)
        self.num_reductions = 0

    mode = _rule_field("mode")
    threshold_mode = _rule_field("threshold_mode")
    patience = _rule_field("patience")
    threshold = _rule_field("threshold")
    cooldown = _rule_field("cooldown")
    best = _rule_field("best")
    num_bad = _rule_field("num_bad")
    cooldown_counter = _rule_field("cooldown_counter")

    def reset(self) -> None:
        """Forget all observations and reductions."""
        self.rule.reset()
        self.num_reductions = 0

    def _value(self, step: int, n: int) -> float:
        b = self.base.value(step)
        if n == 0:
            return b
        return min(b, max(b * self.factor**n, self.min_value))

    def value(self, step: int) -> float:
        return self._value(step, self.num_reductions)

    def is_better(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` by more than the threshold."""
        return self.rule.is_better(current, best)

    def observe(self, metric: float, step: int) -> None:
        """Record one metric measured at ``step``; maybe reduce from the next value on."""
        if self.rule.step(metric):
            old = self._value(step, self.num_reductions)
            new = self._value(step, self.num_reductions + 1)
            if old - new > self.eps:
                self.num_reductions += 1
        self.base.observe(metric, step)

    def children(self) -> list[Schedule]:
        return [self.base]

    def state_dict(self) -> dict[str, Any]:
        state = {
            "best": self.best,
            "num_bad": self.num_bad,
            "cooldown_counter": self.cooldown_counter,
            "num_reductions": self.num_reductions,
        }
        inner = self.base.state_dict()
        if inner:
            state["base"] = inner
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("best", "num_bad", "cooldown_counter", "num_reductions"):
            if key not in state:
                raise KeyError(f"ReduceOnPlateau state_dict is missing {key!r}")
        self.best = float(state["best"])
        self.num_bad = int(state["num_bad"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.num_reductions = int(state["num_reductions"])
        if "base" in state:
            self.base.load_state_dict(state["base"])
