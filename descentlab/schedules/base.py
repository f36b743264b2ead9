"""The schedule protocol and the ways to combine schedules.

A :class:`Schedule` maps a step index ``t = 0, 1, 2, ...`` to a value in
closed form: ``value(t)`` depends on ``t`` (and, for the one stateful
schedule, :class:`~descentlab.schedules.plateau.ReduceOnPlateau`, on the
metrics it has observed), never on the value at ``t - 1``. A resumed run
therefore reproduces an uninterrupted run exactly, which torch's chainable
schedulers (``lr = lr * gamma`` on every ``step()``) do not guarantee.

Step ``0`` is the value used for the *first* optimizer step, as in
``torch.optim.lr_scheduler`` (a scheduler writes ``value(0)`` when it is
created and ``value(t + 1)`` on its ``t``-th ``step()``).

Combinators defined here: :class:`Constant`, :class:`LambdaSchedule`,
:class:`Product` (also ``a * b`` and ``2.0 * a``), :class:`Join` (one
schedule after another at step boundaries, like ``SequentialLR``) and
:class:`PiecewiseConstant`.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from descentlab.optim.validation import check_int, check_nonnegative

__all__ = [
    "Schedule",
    "Constant",
    "LambdaSchedule",
    "MultiplicativeSchedule",
    "Product",
    "Join",
    "PiecewiseConstant",
    "as_schedule",
]


def check_step(step: Any) -> int:
    """Check that ``step`` is an integer ``>= 0`` (numpy integers allowed); return it as ``int``."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an integer, got {step!r} ({type(step).__name__})")
    if step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    return int(step)


def check_period(name: str, value: Any) -> int:
    """Check a period or step count: an integer ``>= 1``."""
    return check_int(name, value, minimum=1)


class Schedule:
    """A hyperparameter value as a closed-form function of the step.

    Subclasses implement :meth:`value`; calling the schedule checks the step
    and calls it. ``schedule.values(n)`` lists the first ``n`` values (handy
    for plots). Schedules multiply with numbers and with each other
    (``0.5 * cosine``, ``warmup * decay``), and are combined in time with
    :class:`Join`.

    A schedule holds no step counter; the object that drives it
    (:class:`~descentlab.schedules.controller.ScheduleController`) does.
    Stateful schedules override :meth:`observe`, :meth:`state_dict` and
    :meth:`load_state_dict`; combinators forward these to their children.
    """

    def value(self, step: int) -> float:
        """Return the value at ``step`` (an ``int >= 0``, already checked)."""
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        return self.value(check_step(step))

    def values(self, steps: int) -> list[float]:
        """Return ``[self(0), ..., self(steps - 1)]``."""
        return [self.value(t) for t in range(check_int("steps", steps))]

    def children(self) -> list[Schedule]:
        """Sub-schedules this schedule is built from (empty for a leaf)."""
        return []

    def observe(self, metric: float, step: int) -> None:
        """Feed a validation metric measured at ``step``; only stateful schedules react.

        Combinators forward the metric to the children that are active at
        ``step`` (with the step translated to the child's own clock).
        """
        for child in self.children():
            child.observe(metric, step)

    def state_dict(self) -> dict[str, Any]:
        """Return the mutable state (empty for closed-form schedules)."""
        kids = [c.state_dict() for c in self.children()]
        return {"children": kids} if any(kids) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state produced by :meth:`state_dict`."""
        kids = state.get("children")
        if kids is None:
            return
        children = self.children()
        if len(kids) != len(children):
            raise ValueError(
                f"state_dict has {len(kids)} child schedules, this schedule has {len(children)}"
            )
        for child, st in zip(children, kids, strict=True):
            child.load_state_dict(st)

    def __mul__(self, other: Schedule | float) -> Product:
        return Product(self, other)

    def __rmul__(self, other: Schedule | float) -> Product:
        return Product(other, self)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_")
        )
        return f"{type(self).__name__}({fields})"


def as_schedule(value: Schedule | float, name: str = "schedule") -> Schedule:
    """Return ``value`` if it is a :class:`Schedule`, or a :class:`Constant` for a plain number."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a Schedule or a number, got {value!r} ({type(value).__name__})"
        )
    return Constant(float(value))


class Constant(Schedule):
    """``value(t) = value`` for every step (torch: ``LambdaLR(lambda t: 1)``)."""

    def __init__(self, value: float) -> None:
        self.value_ = check_nonnegative("value", value)

    def value(self, step: int) -> float:
        return self.value_

    def __repr__(self) -> str:
        return f"Constant({self.value_!r})"


class LambdaSchedule(Schedule):
    """``value(t) = scale * fn(t)`` for a user function, like ``torch.optim.lr_scheduler.LambdaLR``.

    With ``scale`` set to the optimizer's base learning rate this is exactly
    ``LambdaLR(optimizer, fn)``. ``fn`` must be a pure function of the step
    for resume to be exact.
    """

    def __init__(self, fn: Callable[[int], float], scale: float = 1.0) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.scale = check_nonnegative("scale", scale)

    def value(self, step: int) -> float:
        return self.scale * float(self.fn(step))


class MultiplicativeSchedule(Schedule):
    """``value(t) = init_value * fn(1) * fn(2) * ... * fn(t)``, like torch's ``MultiplicativeLR``.

    torch multiplies the optimizer's current lr by ``fn(t)`` on every
    ``step()``; this is the same product as a function of ``t``, so it
    resumes exactly and ignores outside changes to the lr. The running
    products are cached (one float per step reached; the cache is a pure
    function of ``fn`` and is not part of any state). The multiplication
    order is torch's, so values agree bit for bit. ``fn`` must be a pure
    function of the step.
    """

    def __init__(self, fn: Callable[[int], float], init_value: float = 1.0) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self.fn = fn
        self.init_value = check_nonnegative("init_value", init_value)
        self._products = [self.init_value]

    def value(self, step: int) -> float:
        products = self._products
        while len(products) <= step:
            products.append(products[-1] * float(self.fn(len(products))))
        return products[step]


class Product(Schedule):
    """Pointwise product of schedules and numbers: ``value(t) = prod_i s_i(t)``.

    ``a * b`` and ``0.1 * a`` build one. Useful to scale a shape (a schedule
    with peak 1) by a base value, or to put a multiplicative warm-up factor
    on top of a decay, like torch's ``ChainedScheduler`` over
    ``LinearLR`` and ``ExponentialLR`` but in closed form.
    """

    def __init__(self, *factors: Schedule | float) -> None:
        if not factors:
            raise ValueError("Product needs at least one factor, got none")
        self.factors = [as_schedule(f, f"factors[{i}]") for i, f in enumerate(factors)]

    def value(self, step: int) -> float:
        out = 1.0
        for f in self.factors:
            out *= f.value(step)
        return out

    def children(self) -> list[Schedule]:
        return list(self.factors)


class Join(Schedule):
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, and so on.

    Each schedule restarts its own clock at its boundary:
    ``value(t) = schedules[i](t - boundaries[i - 1])`` where ``i`` is the
    number of boundaries ``<= t``. This is what
    ``torch.optim.lr_scheduler.SequentialLR(schedulers, milestones)`` does
    (it restarts the active scheduler at 0 at each milestone), in closed
    form. ``boundaries`` must be strictly increasing integers ``>= 1`` and
    there must be one fewer than schedules.
    """

    def __init__(self, schedules: Sequence[Schedule | float], boundaries: Sequence[int]) -> None:
        self.schedules = [as_schedule(s, f"schedules[{i}]") for i, s in enumerate(schedules)]
        if not self.schedules:
            raise ValueError("schedules must contain at least one schedule, got an empty list")
        self.boundaries = [check_period(f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        if len(self.boundaries) != len(self.schedules) - 1:
            raise ValueError(
                f"boundaries must have one entry fewer than schedules: got {len(self.schedules)} "
                f"schedules and {len(self.boundaries)} boundaries {list(boundaries)!r}"
            )
        for a, b in zip(self.boundaries, self.boundaries[1:], strict=False):
            if b <= a:
                raise ValueError(
                    f"boundaries must be strictly increasing, got {list(boundaries)!r}"
                )

    def _locate(self, step: int) -> tuple[int, int]:
        i = bisect.bisect_right(self.boundaries, step)
        start = self.boundaries[i - 1] if i > 0 else 0
        return i, step - start

    def value(self, step: int) -> float:
        i, local = self._locate(step)
        return self.schedules[i].value(local)

    def children(self) -> list[Schedule]:
        return list(self.schedules)

    def observe(self, metric: float, step: int) -> None:
        i, local = self._locate(step)
        self.schedules[i].observe(metric, local)


class PiecewiseConstant(Schedule):
    """``values[i]`` for ``boundaries[i-1] <= t < boundaries[i]`` (optax's piecewise constant).

    ``torch.optim.lr_scheduler.ConstantLR(factor, total_iters)`` is
    ``PiecewiseConstant([base * factor, base], [total_iters])``.
    """

    def __init__(self, values: Sequence[float], boundaries: Sequence[int]) -> None:
        self.values_ = [check_nonnegative(f"values[{i}]", v) for i, v in enumerate(values)]
        self._join = Join([Constant(v) for v in self.values_], boundaries)
        self.boundaries = self._join.boundaries

    def value(self, step: int) -> float:
        return self._join.value(step)


def cosine_interp(start: float, end: float, frac: float) -> float:
    """Half-cosine from ``start`` (``frac = 0``) to ``end`` (``frac = 1``).

    Written as ``end + (start - end) * (1 + cos(pi * frac)) / 2``, the form
    torch's ``CosineAnnealingLR`` closed form and ``OneCycleLR`` use.
    """
    return end + (start - end) / 2.0 * (math.cos(math.pi * frac) + 1)
