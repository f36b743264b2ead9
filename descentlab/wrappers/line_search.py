"""Add a line search to the direction proposed by any other optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

from descentlab.linesearch._closure import resolve_line_search
from descentlab.linesearch._flat import (
    evaluate_closure,
    finite_difference_hvp,
    flatten,
    set_params,
)
from descentlab.linesearch.base import LineObjective, LineSearch
from descentlab.wrappers.base import OptimizerWrapper

__all__ = ["WithLineSearch"]


class WithLineSearch(OptimizerWrapper):
    """Wrap an optimizer so that each step is a line search along the step it proposes.

    One ``step(closure)``:

    1. calls ``closure()`` once at the current point ``x`` (loss ``f``, gradient ``g``);
    2. calls ``optimizer.step()`` (without a closure: the inner optimizer reads the
       gradients the closure left in ``p.grad``) and takes the proposed move
       ``d = x_proposed - x``, then restores ``x``;
    3. if ``g . d >= 0`` (not a descent direction, which momentum methods can
       propose), uses ``d = -g * ||d|| / ||g||`` instead (counted in
       ``fallbacks``);
    4. searches along ``d`` starting from ``alpha = 1`` (the inner optimizer's own
       step) — or from ``previous * growth`` if the line search has a ``growth``
       — and leaves the parameters at ``x + alpha d``.

    The inner optimizer's state (moments, step counts) is updated as in a plain
    step; only the length of its move is changed. Works with any
    ``torch.optim.Optimizer`` (torch's or descentlab's) through its public API;
    the inner optimizer must not require a closure itself. It is an
    :class:`~descentlab.wrappers.OptimizerWrapper`: ``param_groups`` are the
    inner optimizer's, so schedules and ``attach()`` drive the proposed step.

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss,
    calls ``loss.backward()`` and returns the loss (or returns the loss without
    calling backward); it is called ``1 + (evaluations of the search)`` times
    per step, plus once for a curvature-using search
    (:class:`~descentlab.linesearch.FullRelaxation`: ``d^T H d`` by a forward
    difference of gradients). ``step(None)`` raises ``TypeError``. Returns the
    closure's first loss.

    A failed search (no acceptable step) keeps the best decreasing trial, or
    the current point if none decreased ``f``; ``failures`` counts them.

    Args:
        optimizer: the optimizer that proposes directions.
        line_search: a :class:`~descentlab.linesearch.LineSearch` or a name
            (default ``"armijo"``).

    Attributes (saved in ``state_dict``): ``func_evals`` (closure calls),
    ``failures``, ``fallbacks``, ``last_step`` (the last accepted step).
    """

    _saved_attributes = ("func_evals", "failures", "fallbacks", "last_step")

    def __init__(self, optimizer: Optimizer,
                 line_search: LineSearch | str = "armijo") -> None:
        super().__init__(optimizer)
        self.line_search = resolve_line_search(line_search, allow_none=False)
        self.func_evals = 0
        self.failures = 0
        self.fallbacks = 0
        self.last_step: float | None = None

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One line-searched step of the inner optimizer; returns the loss at the start."""
        if closure is None:
            raise TypeError(
                "WithLineSearch.step() needs a closure: step(closure) where closure() zeroes "
                "the gradients, computes the loss, calls loss.backward() and returns the loss"
            )
        params = self._params()

        def evaluate_at(x: torch.Tensor):
            set_params(params, x)
            self.func_evals += 1
            return evaluate_closure(closure, params)

        ev0 = evaluate_closure(closure, params)
        self.func_evals += 1
        x0 = flatten(params)
        self.optimizer.step()
        d = flatten(params) - x0
        set_params(params, x0)
        if not float(torch.dot(ev0.g, d)) < 0:
            gnorm = float(ev0.g.norm())
            if gnorm == 0.0:
                return ev0.loss
            d = -ev0.g * (float(d.norm()) / gnorm if float(d.norm()) > 0 else 1.0)
            self.fallbacks += 1

        hvp = None
        if self.line_search.needs_hessian:
            def hvp(v: torch.Tensor) -> torch.Tensor:
                hv = finite_difference_hvp(lambda y: evaluate_at(y).g, x0, ev0.g, v)
                set_params(params, x0)
                return hv

        line = LineObjective(lambda alpha: evaluate_at(x0 + alpha * d), ev0.f, ev0.g, d, hvp)
        with torch.no_grad():
            res = self.line_search.search(line, self.line_search.initial_step(
                self.last_step, 1.0))
            if not res.success:
                self.failures += 1
            if line.last is None or line.last[0] != res.step:
                set_params(params, x0 + res.step * d)
        if res.step > 0:
            self.last_step = res.step
        return ev0.loss

    def _upgrade_state_dict(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        if "optimizer" in state_dict and "wrapper" in state_dict:  # the first version's layout
            inner = dict(state_dict["optimizer"])
            entry = {"type": type(self).__name__, "attributes": state_dict["wrapper"],
                     "state": {}}
            inner["wrappers"] = [entry, *inner.get("wrappers", [])]
            return inner
        return state_dict

    def _repr_extra(self) -> str:
        return f", line_search={type(self.line_search).__name__}"
