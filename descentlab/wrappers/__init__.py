"""Optimizers that wrap another optimizer, on one base (:class:`OptimizerWrapper`).

``NonFiniteGuard`` (skip non-finite steps), ``WithLineSearch`` (a line search
along the inner optimizer's move) and ``GradientAccumulator`` (one step per
``k`` micro-batches); see :mod:`descentlab.wrappers.base` for the contract a
new wrapper follows.
"""

from descentlab.wrappers.accumulation import GradientAccumulator
from descentlab.wrappers.base import OptimizerWrapper, unwrap
from descentlab.wrappers.guard import NonFiniteGuard, grads_are_finite
from descentlab.wrappers.line_search import WithLineSearch

__all__ = [
    "GradientAccumulator",
    "NonFiniteGuard",
    "OptimizerWrapper",
    "WithLineSearch",
    "grads_are_finite",
    "unwrap",
]
