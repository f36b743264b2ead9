"""Optimizers that wrap another optimizer, on one base (:class:`OptimizerWrapper`).

``NonFiniteGuard`` (skip non-finite steps), ``WithLineSearch`` (a line search
along the inner optimizer's move), ``GradientAccumulator`` (one step per
``k`` micro-batches), ``SAM`` (sharpness-aware minimisation, plain and
adaptive) and ``Lookahead`` (slow and fast weights); see
:mod:`descentlab.wrappers.base` for the contract a new wrapper follows and
:mod:`descentlab.wrappers.registry` for the wrappers by name.
"""

from descentlab.wrappers.accumulation import GradientAccumulator
from descentlab.wrappers.base import OptimizerWrapper, unwrap
from descentlab.wrappers.guard import NonFiniteGuard, grads_are_finite
from descentlab.wrappers.line_search import WithLineSearch
from descentlab.wrappers.lookahead import Lookahead
from descentlab.wrappers.registry import (
    WRAPPERS,
    available_wrappers,
    describe_wrapper,
    make_wrapped,
)
from descentlab.wrappers.sam import SAM

__all__ = [
    "GradientAccumulator",
    "Lookahead",
    "NonFiniteGuard",
    "OptimizerWrapper",
    "SAM",
    "WRAPPERS",
    "WithLineSearch",
    "available_wrappers",
    "describe_wrapper",
    "grads_are_finite",
    "make_wrapped",
    "unwrap",
]
