"""Plumbing shared by the closure-based optimizers: closure checks, counters, flat steps.

:class:`ClosureOptimizer` is a thin ``torch.optim.Optimizer`` subclass that
treats all parameters of all groups as one flat vector ``x`` (global state is
kept, as in ``torch.optim.LBFGS``, under the first parameter so that
``state_dict`` / ``load_state_dict`` work unchanged). Each group's ``lr``
scales that group's part of the search direction.

Counters kept in the global state: ``func_evals`` (closure calls, one
function+gradient evaluation each), ``hvp_evals`` (Hessian-vector products),
``n_iter`` (iterations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._flat import (
    ClosureEvaluation,
    evaluate_closure,
    flatten,
    hessian_vector_product,
    set_params,
)
from descentlab.linesearch.base import LineObjective, LineSearch, LineSearchResult
from descentlab.optim.validation import check_int, check_nonnegative, check_params

__all__ = ["ClosureOptimizer", "check_limits", "resolve_line_search"]


def check_limits(
    max_iter: int,
    max_eval: int | None,
    tolerance_grad: float,
    tolerance_change: float | None = None,
    *,
    default_max_eval: Callable[[int], int] = lambda max_iter: max_iter * 5 // 4,
) -> int:
    """Check the stopping settings of a closure optimizer; return ``max_eval``.

    ``max_iter`` and ``max_eval`` must be ints >= 1, the tolerances >= 0
    (``tolerance_change`` is skipped when ``None``, for optimizers without
    one). ``max_eval=None`` becomes ``default_max_eval(max_iter)``
    (``max_iter * 5 // 4``, ``torch.optim.LBFGS``'s default).
    """
    check_int("max_iter", max_iter, minimum=1)
    if max_eval is None:
        max_eval = default_max_eval(max_iter)
    check_int("max_eval", max_eval, minimum=1)
    check_nonnegative("tolerance_grad", tolerance_grad)
    if tolerance_change is not None:
        check_nonnegative("tolerance_change", tolerance_change)
    return max_eval


def resolve_line_search(
    spec: Any, *, allow_none: bool = True, **defaults: Any
) -> LineSearch | None:
    """Turn ``spec`` (None, a name, or a :class:`LineSearch`) into a line-search object.

    Names: ``"armijo"``, ``"armijo_goldstein"``, ``"full_relaxation"``,
    ``"strong_wolfe"``, ``"stochastic_armijo"``; ``defaults`` are passed to the
    constructor when a name is given.
    """
    from descentlab.linesearch import registry

    if spec is None:
        if allow_none:
            return None
        raise ValueError("line_search must be given, got None")
    if isinstance(spec, LineSearch):
        return spec
    if isinstance(spec, str):
        if spec not in registry:
            raise ValueError(
                f"line_search must be one of {sorted(registry)} or a LineSearch, got {spec!r}"
            )
        return registry[spec](**defaults)
    raise TypeError(f"line_search must be a name, a LineSearch or None, got {spec!r}")


class ClosureOptimizer(torch.optim.Optimizer):
    """Base of the closure-based optimizers (see the module docstring)."""

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(check_params(params), defaults)

    # -- parameters and state ---------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _global_state(self) -> dict[str, Any]:
        state = self.state[self._params()[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("hvp_evals", 0)
        state.setdefault("n_iter", 0)
        return state

    def _hessian(self) -> bool:
        """Whether this optimizer's line search needs Hessian-vector products."""
        search = getattr(self, "_search", None)
        return bool(search is not None and search.needs_hessian)

    def _require_closure(self, closure: Callable[[], Any] | None) -> Callable[[], Any]:
        if closure is None:
            raise TypeError(
                f"{type(self).__name__}.step() needs a closure: step(closure) where closure() "
                "zeroes the gradients, computes the loss, calls loss.backward() and returns "
                "the loss"
            )
        if not callable(closure):
            raise TypeError(f"closure must be callable, got {type(closure).__name__}")
        return closure

    def _begin_step(
        self, closure: Callable[[], Any] | None, **counters: Any
    ) -> tuple[Callable[[], Any], dict[str, Any], dict[str, Any]]:
        """Start ``step``: the checked closure, the first group and the global state.

        ``counters`` are entries of the global state to create (with the given
        initial value) where they are missing.
        """
        closure = self._require_closure(closure)
        state = self._global_state()
        for key, value in counters.items():
            state.setdefault(key, value)
        return closure, self.param_groups[0], state

    def _flat_params(self) -> torch.Tensor:
        return flatten(self._params())

    def _lr(self, key: str = "lr") -> float | torch.Tensor:
        """The per-group ``lr`` as a scalar if all groups agree, else as a flat vector."""
        values = [g[key] for g in self.param_groups]
        if all(v == values[0] for v in values):
            return float(values[0])
        params = self._params()
        ref = params[0]
        parts = [torch.full((p.numel(),), float(g[key]), device=ref.device, dtype=ref.dtype)
                 for g in self.param_groups for p in g["params"] if p.requires_grad]
        return torch.cat(parts)

    # -- evaluations ------------------------------------------------------------------------
    def _evaluate(self, closure: Callable[[], Any], create_graph: bool = False
                  ) -> ClosureEvaluation:
        ev = evaluate_closure(closure, self._params(), create_graph=create_graph)
        self._global_state()["func_evals"] += 1
        return ev

    def _hvp(self, ev: ClosureEvaluation) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> H v`` at the point of ``ev`` (which must carry its graph); counts products."""
        params = self._params()
        state = self._global_state()
        if ev.graph_grads is None:
            raise RuntimeError("internal: Hessian-vector product requested without a graph")

        def hvp(v: torch.Tensor) -> torch.Tensor:
            state["hvp_evals"] += 1
            return hessian_vector_product(ev.graph_grads, params, v)

        return hvp

    def _line(self, closure: Callable[[], Any], x0: torch.Tensor, ev0: ClosureEvaluation,
              d: torch.Tensor, *, hessian: bool = False, graph: bool = False
              ) -> LineObjective:
        """The objective ``phi(a) = f(x0 + a d)``; each call sets the parameters and evaluates.

        ``hessian``: provide ``d^T H d`` at ``x0`` (for curvature-using searches);
        ``graph``: keep each trial's gradient graph (so the accepted point can give
        Hessian-vector products without another evaluation).
        """
        params = self._params()

        def evaluate(alpha: float) -> ClosureEvaluation:
            set_params(params, x0 + alpha * d)
            return self._evaluate(closure, create_graph=graph)

        return LineObjective(evaluate, ev0.f, ev0.g, d, self._hvp(ev0) if hessian else None)

    def _run_line_search(self, closure: Callable[[], Any], search: LineSearch,
                         x0: torch.Tensor, ev0: ClosureEvaluation, d: torch.Tensor,
                         step: float, *, need_graph: bool = False
                         ) -> tuple[LineSearchResult, ClosureEvaluation]:
        """Search along ``d`` and leave the parameters at the returned step.

        Returns the result and the evaluation at the returned point (with its
        graph if ``need_graph``; re-evaluating only if the returned point is not
        the last one evaluated). On a failure without decrease the parameters go
        back to ``x0`` and ``ev0`` is returned.
        """
        need_graph = need_graph or search.needs_hessian
        line = self._line(closure, x0, ev0, d, hessian=search.needs_hessian, graph=need_graph)
        res = search.search(line, step)
        if res.step == 0.0:
            set_params(self._params(), x0)
            return res, ev0
        if line.last is not None and line.last[0] == res.step:
            ev = line.last[1]
            if need_graph and ev.graph_grads is None:
                ev = self._evaluate(closure, create_graph=True)
            return res, ev
        set_params(self._params(), x0 + res.step * d)
        ev = line.evaluation_at(res.step)
        if ev is None or need_graph:
            ev = self._evaluate(closure, create_graph=need_graph)
        return res, ev
