"""Wrappers by name: :data:`WRAPPERS`, :func:`available_wrappers`, :func:`make_wrapped`.

``make_wrapped("sam", "sgd", params, lr=0.1, momentum=0.9, rho=0.05)`` builds
a wrapper around an optimizer of :func:`descentlab.make_optimizer`'s
registry; ``descentlab list`` shows these names and the benchmark's wrapper
entrants (``sam_sgd``, ``lookahead_adam``, ...) are built with it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from torch.optim import Optimizer

from descentlab.optim.registry import make_optimizer
from descentlab.wrappers.accumulation import GradientAccumulator
from descentlab.wrappers.base import OptimizerWrapper
from descentlab.wrappers.guard import NonFiniteGuard
from descentlab.wrappers.line_search import WithLineSearch
from descentlab.wrappers.lookahead import Lookahead
from descentlab.wrappers.sam import SAM

__all__ = ["WRAPPERS", "available_wrappers", "describe_wrapper", "make_wrapped",
           "wrapper_arguments"]

#: Registry name → wrapper class.
WRAPPERS: dict[str, type[OptimizerWrapper]] = {
    "sam": SAM,
    "lookahead": Lookahead,
    "nonfinite_guard": NonFiniteGuard,
    "line_search": WithLineSearch,
    "gradient_accumulator": GradientAccumulator,
}

#: constructor arguments that are the wrapped optimizer, not settings
_NOT_SETTINGS = {"self", "params", "base_optimizer", "optimizer", "kwargs", "foreach"}


def available_wrappers() -> list[str]:
    """Names accepted by :func:`make_wrapped`, in registry order."""
    return list(WRAPPERS)


def _lookup(name: str) -> type[OptimizerWrapper]:
    if not isinstance(name, str) or name.lower() not in WRAPPERS:
        raise ValueError(f"unknown wrapper {name!r}; valid names: {', '.join(WRAPPERS)}")
    return WRAPPERS[name.lower()]


def describe_wrapper(name: str) -> str:
    """First line of the docstring of the wrapper called ``name``."""
    return (_lookup(name).__doc__ or "").strip().splitlines()[0]


def wrapper_arguments(name: str) -> list[str]:
    """The settings the wrapper called ``name`` takes (``["rho", "adaptive", ...]`` for SAM)."""
    signature = inspect.signature(_lookup(name).__init__)
    return [n for n in signature.parameters if n not in _NOT_SETTINGS]


def make_wrapped(
    wrapper: str, optimizer: str, params: Iterable[Any], **hparams: Any
) -> OptimizerWrapper:
    """Build the wrapper called ``wrapper`` around the registry optimizer ``optimizer``.

    ``hparams`` named by :func:`wrapper_arguments` go to the wrapper (a name
    both take, such as Lookahead's and RMSprop's ``alpha``, goes to the
    wrapper), the rest to :func:`descentlab.make_optimizer`. SAM gets the
    built optimizer as its ``base_optimizer``.
    """
    cls = _lookup(wrapper)
    own = set(wrapper_arguments(wrapper))
    settings = {k: v for k, v in hparams.items() if k in own}
    params = list(params)
    inner: Optimizer = make_optimizer(
        optimizer, params, **{k: v for k, v in hparams.items() if k not in own})
    if cls is SAM:
        return SAM(params, inner, **settings)
    return cls(inner, **settings)
