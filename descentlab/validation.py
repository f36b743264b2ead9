"""Argument checks shared by every optimizer.

Each check raises a ``ValueError`` (bad value) or ``TypeError`` (bad type)
whose message names the argument and repeats the offending value, e.g.
``ValueError: lr must be >= 0, got -0.1``. Optimizers call these from their
constructors and from ``add_param_group`` so that a bad value never reaches
a step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

__all__ = [
    "check_nonnegative",
    "check_positive",
    "check_interval",
    "check_betas",
    "check_learning_rate",
    "check_int",
    "check_params",
    "interval",
    "one_of",
    "check_decay_rates",
]


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} as a tensor must have exactly one element, got shape {tuple(value.shape)}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    """Check ``value >= 0`` and finite; return it as a float."""
    v = _as_float(name, value)
    if not (v >= 0.0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def check_positive(name: str, value: Any) -> float:
    """Check ``value > 0`` and finite; return it as a float."""
    v = _as_float(name, value)
    if not (v > 0.0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def check_interval(
    name: str,
    value: Any,
    low: float,
    high: float,
    *,
    low_closed: bool = True,
    high_closed: bool = True,
) -> float:
    """Check that ``value`` lies in the interval from ``low`` to ``high``.

    ``low_closed``/``high_closed`` say whether the ends are included; the
    message writes the interval in the usual bracket notation.
    """
    v = _as_float(name, value)
    ok_low = v >= low if low_closed else v > low
    ok_high = v <= high if high_closed else v < high
    if not (ok_low and ok_high):
        lb = "[" if low_closed else "("
        rb = "]" if high_closed else ")"
        raise ValueError(f"{name} must be in {lb}{low}, {high}{rb}, got {value!r}")
    return v


def check_betas(value: Any, name: str = "betas", count: int = 2) -> tuple[float, ...]:
    """Check a tuple of ``count`` decay rates, each in ``[0, 1)``; say which index is bad.

    As in torch.optim, the rates are all numbers or all one-element tensors, not a mix.
    """
    if not isinstance(value, (tuple, list)) or len(value) != count:
        raise ValueError(f"{name} must be a tuple of {count} numbers, got {value!r}")
    if len({isinstance(b, torch.Tensor) for b in value}) > 1:
        raise ValueError(f"{name} must be either all floats or all tensors, got {value!r}")
    return tuple(
        check_interval(f"{name}[{i}]", b, 0.0, 1.0, high_closed=False) for i, b in enumerate(value)
    )


def check_learning_rate(value: Any, name: str = "lr") -> float:
    """Check a learning rate: a number or one-element tensor, ``>= 0`` and finite."""
    return check_nonnegative(name, value)


def check_int(name: str, value: Any, minimum: int = 0) -> int:
    """Check an integer ``>= minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_params(params: Any) -> list[Any]:
    """Materialise ``params`` and check it is a non-empty collection of leaf tensors.

    Accepts what ``torch.optim.Optimizer`` accepts: an iterable of tensors, of
    ``(name, tensor)`` pairs, or of parameter-group dicts whose ``"params"`` is
    a tensor or any iterable of them (a generator such as
    ``model.layer.parameters()`` included). Returns the same structure with
    every iterable turned into a list (groups as new dicts), so that nothing
    is consumed twice.

    Raises, with a message that names the offending entry, on an empty list,
    a non-tensor, a non-leaf tensor (one that does not retain its gradient),
    a set of parameters inside a group (its order is not reproducible) and
    the same tensor in two groups. The same tensor twice within one group is
    allowed, as torch.optim allows it (``Optimizer.add_param_group`` warns).
    """
    if isinstance(params, torch.Tensor):
        raise TypeError(
            "params must be an iterable of tensors or dicts, got a single tensor; "
            "wrap it in a list: [tensor]"
        )
    if not isinstance(params, Iterable):
        raise TypeError(f"params must be an iterable of tensors or dicts, got {params!r}")
    items = list(params)
    if not items:
        raise ValueError("params is an empty list: the optimizer got no parameters")
    as_groups = isinstance(items[0], dict)
    groups = items if as_groups else [{"params": items}]
    seen: dict[int, str] = {}
    checked = []
    for gi, group in enumerate(groups):
        if not isinstance(group, dict):
            raise TypeError(
                f"params mixes parameter groups (dicts) with other entries: entry {gi} is "
                f"{type(group).__name__}"
            )
        if "params" not in group:
            raise ValueError(f"parameter group {gi} has no 'params' key")
        plist = group["params"]
        if isinstance(plist, set):
            raise TypeError(
                f"parameter group {gi} gives its params as a set, whose order changes between "
                "runs; use a list"
            )
        plist = [plist] if isinstance(plist, torch.Tensor) else list(plist)
        if not plist:
            raise ValueError(f"parameter group {gi} has an empty 'params' list")
        mine: set[int] = set()
        for pi, p in enumerate(plist):
            where = f"params[{pi}]" if len(groups) == 1 else f"param group {gi}, params[{pi}]"
            if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
                where, p = f"{where} ({p[0]!r})", p[1]
            if not isinstance(p, torch.Tensor):
                raise TypeError(f"{where} must be a torch.Tensor, got {type(p).__name__}")
            if not (p.is_leaf or p.retains_grad):
                raise ValueError(
                    f"{where} is not a leaf tensor (it was computed from other tensors); "
                    "optimize the leaf, e.g. pass x.detach().requires_grad_()"
                )
            if id(p) in seen and id(p) not in mine:
                raise ValueError(
                    f"{where} is the same tensor as {seen[id(p)]}: some parameters appear in "
                    "more than one parameter group"
                )
            seen.setdefault(id(p), where)
            mine.add(id(p))
        checked.append({**group, "params": plist})
    return checked if as_groups else checked[0]["params"]


def interval(
    low: float, high: float, *, low_closed: bool = True, high_closed: bool = True
) -> Callable[[str, Any], float]:
    """A ``check(name, value)`` for :func:`check_interval` with these ends (for declarations)."""

    def check(name: str, value: Any) -> float:
        return check_interval(
            name, value, low, high, low_closed=low_closed, high_closed=high_closed
        )

    return check


def one_of(choices: Iterable[Any]) -> Callable[[str, Any], Any]:
    """A ``check(name, value)`` that the value is one of ``choices`` (for declarations)."""
    allowed = tuple(choices)

    def check(name: str, value: Any) -> Any:
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        return value

    return check


def check_decay_rates(name: str, value: Any) -> tuple[float, ...]:
    """:func:`check_betas` in the ``check(name, value)`` form of declarations."""
    return check_betas(value, name)
