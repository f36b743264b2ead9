"""Add a line search to the direction proposed by any other optimizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._closure import resolve_line_search
from descentlab.linesearch._flat import evaluate_closure, flatten, set_params
from descentlab.linesearch.base import LineObjective, LineSearch

__all__ = ["WithLineSearch"]


class WithLineSearch:
    """Wrap an optimizer so that each step is a line search along the step it proposes.

    One ``step(closure)``:

    1. calls ``closure()`` once at the current point ``x`` (loss ``f``, gradient ``g``);
    2. calls ``optimizer.step()`` (without a closure: the inner optimizer reads the
       gradients the closure left in ``p.grad``) and takes the proposed move
       ``d = x_proposed - x``, then restores ``x``;
    3. if ``g . d >= 0`` (not a descent direction, which momentum methods can
       propose), uses ``d = -g * ||d|| / ||g||`` instead (counted in
       ``state["fallbacks"]``);
    4. searches along ``d`` starting from ``alpha = 1`` (the inner optimizer's own
       step) — or from ``previous * growth`` if the line search has a ``growth``
       — and leaves the parameters at ``x + alpha d``.

    The inner optimizer's state (moments, step counts) is updated as in a plain
    step; only the length of its move is changed. Works with any
    ``torch.optim.Optimizer`` (torch's or descentlab's) through its public API;
    the inner optimizer must not require a closure itself.

    Closure protocol: ``closure()`` zeroes the gradients, computes the loss,
    calls ``loss.backward()`` and returns the loss (or returns the loss without
    calling backward); it is called ``1 + (evaluations of the search)`` times
    per step. ``step(None)`` raises ``TypeError``.

    A failed search (no acceptable step) keeps the best decreasing trial, or
    the current point if none decreased ``f``; ``state["failures"]`` counts them.

    Args:
        optimizer: the optimizer that proposes directions.
        line_search: a :class:`~descentlab.linesearch.LineSearch` or a name
            (default ``"armijo"``). Curvature-using searches are refused.

    Attributes: ``param_groups`` (the inner optimizer's), ``state`` (a dict with
    ``func_evals``, ``failures``, ``fallbacks``, ``last_step``).
    """

    def __init__(self, optimizer: torch.optim.Optimizer,
                 line_search: LineSearch | str = "armijo") -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        search = resolve_line_search(line_search, allow_none=False)
        if search.needs_hessian:
            raise ValueError(
                f"line_search {search.name!r} needs Hessian-vector products, which "
                "WithLineSearch does not provide; use an Armijo, Goldstein or Wolfe search"
            )
        self.optimizer = optimizer
        self.line_search = search
        self.state: dict[str, Any] = {"func_evals": 0, "failures": 0, "fallbacks": 0,
                                      "last_step": None}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups."""
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Zero the gradients (delegates to the inner optimizer)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus this wrapper's counters."""
        return {"optimizer": self.optimizer.state_dict(), "wrapper": dict(self.state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.state.update(state_dict["wrapper"])

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def step(self, closure: Callable[[], Any] | None = None) -> torch.Tensor:
        """One line-searched step of the inner optimizer; returns the loss at the start."""
        if closure is None:
            raise TypeError(
                "WithLineSearch.step() needs a closure: step(closure) where closure() zeroes "
                "the gradients, computes the loss, calls loss.backward() and returns the loss"
            )
        params = self._params()
        ev0 = evaluate_closure(closure, params)
        self.state["func_evals"] += 1
        x0 = flatten(params)
        self.optimizer.step()
        d = flatten(params) - x0
        set_params(params, x0)
        if not float(torch.dot(ev0.g, d)) < 0:
            gnorm = float(ev0.g.norm())
            if gnorm == 0.0:
                return torch.tensor(ev0.f)
            d = -ev0.g * (float(d.norm()) / gnorm if float(d.norm()) > 0 else 1.0)
            self.state["fallbacks"] += 1

        def evaluate(alpha: float):
            set_params(params, x0 + alpha * d)
            self.state["func_evals"] += 1
            return evaluate_closure(closure, params)

        line = LineObjective(evaluate, ev0.f, ev0.g, d)
        res = self.line_search.search(line, self.line_search.initial_step(
            self.state["last_step"], 1.0))
        if not res.success:
            self.state["failures"] += 1
        if line.last is None or line.last[0] != res.step:
            set_params(params, x0 + res.step * d)
        if res.step > 0:
            self.state["last_step"] = res.step
        return torch.tensor(ev0.f)
