"""Plumbing shared by the closure-based optimizers: closure checks, counters, flat steps.

:class:`ClosureOptimizer` is a thin ``torch.optim.Optimizer`` subclass that
treats all parameters of all groups as one flat vector ``x`` (global state is
kept, as in ``torch.optim.LBFGS``, under the first parameter of the first
group, so that ``state_dict`` / ``load_state_dict`` work unchanged). Each
group's ``lr`` scales that group's part of the search direction.

Counters kept in the global state: ``func_evals`` (closure calls, one
function+gradient evaluation each), ``n_iter`` (iterations) and, for the
methods that use curvature, ``hvp_evals`` (Hessian-vector products).

Hessian-vector products (``hvp="auto"``, the default, of the methods that
take the option): by double backward through the gradient's graph when the
closure allows it (it returns the loss without calling ``backward``, or calls
``loss.backward(create_graph=True)``); by a forward difference of two
gradients when the closure has already called plain ``backward()`` — one
extra closure call per product (:func:`~descentlab.linesearch._flat.finite_difference_hvp`),
counted in ``hvp_evals`` and not in ``func_evals`` or ``max_eval``.
``hvp="autograd"`` insists on double backward (a plain-``backward`` closure
is an error); ``hvp="finite_difference"`` never builds a graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from descentlab.linesearch._flat import (
    ClosureEvaluation,
    evaluate_closure,
    finite_difference_hvp,
    flatten,
    hessian_vector_product,
    loss_value,
    real_view,
    set_params,
)
from descentlab.linesearch.base import LineObjective, LineSearch, LineSearchResult
from descentlab.optim.validation import check_int, check_interval, check_params

__all__ = [
    "ClosureOptimizer",
    "HVP_MODES",
    "check_hvp_mode",
    "check_limits",
    "materialize_param_groups",
    "resolve_line_search",
]

#: Ways to get Hessian-vector products (see the module docstring).
HVP_MODES = ("auto", "autograd", "finite_difference")

_NO_GRAPH = (
    "this method needs Hessian-vector products by double backward (hvp='autograd'), but the "
    "gradients carry no graph: in the closure call loss.backward(create_graph=True), or return "
    "the loss without calling backward and the optimizer will differentiate it; or use "
    "hvp='auto' (finite differences of gradients for a plain-backward closure)"
)


def check_limits(
    max_iter: int,
    max_eval: int | None,
    tolerance_grad: float,
    tolerance_change: float | None = None,
    *,
    default_max_eval: Callable[[int], int] = lambda max_iter: max_iter * 5 // 4,
) -> int:
    """Check the stopping settings of a closure optimizer; return ``max_eval``.

    ``max_iter`` and ``max_eval`` must be ints >= 1, the tolerances real numbers
    (not NaN; as in torch, ``inf`` and negative values are allowed:
    ``tolerance_grad=inf`` stops at the first evaluation, ``-inf`` never stops
    on the gradient); ``tolerance_change`` is skipped when ``None``, for
    optimizers without one. ``max_eval=None`` becomes ``default_max_eval(max_iter)``
    (``max_iter * 5 // 4``, ``torch.optim.LBFGS``'s default).
    """
    check_int("max_iter", max_iter, minimum=1)
    if max_eval is None:
        max_eval = default_max_eval(max_iter)
    check_int("max_eval", max_eval, minimum=1)
    check_interval("tolerance_grad", tolerance_grad, -math.inf, math.inf)
    if tolerance_change is not None:
        check_interval("tolerance_change", tolerance_change, -math.inf, math.inf)
    return max_eval


def check_hvp_mode(hvp: Any) -> str:
    """Check the ``hvp`` option (one of :data:`HVP_MODES`)."""
    if hvp not in HVP_MODES:
        raise ValueError(f"hvp must be one of {HVP_MODES}, got {hvp!r}")
    return hvp


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


def materialize_param_groups(params: Any) -> Any:
    """``params`` with every group's ``"params"`` made a list (generators are read once).

    ``{"params": model.layer.parameters()}`` is the usual idiom; checking such a
    group would otherwise exhaust the generator and leave the group empty.
    Anything that is not an iterable of groups is returned unchanged for
    :func:`~descentlab.optim.validation.check_params` to judge.
    """
    if isinstance(params, torch.Tensor) or not hasattr(params, "__iter__"):
        return params
    items = list(params)
    out = []
    for item in items:
        if (isinstance(item, dict) and "params" in item
                and not isinstance(item["params"], (torch.Tensor, set, list))):
            item = {**item, "params": list(item["params"])}
        out.append(item)
    return out


class ClosureOptimizer(torch.optim.Optimizer):
    """Base of the closure-based optimizers (see the module docstring)."""

    #: instance attributes that ``copy.deepcopy`` and ``pickle`` must keep, beyond
    #: torch's ``defaults``, ``state`` and ``param_groups``
    _pickled_attributes: tuple[str, ...] = ()

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        super().__init__(check_params(materialize_param_groups(params)), defaults)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({k: self.__dict__[k] for k in self._pickled_attributes
                      if k in self.__dict__})
        return state

    # -- parameters and state ---------------------------------------------------------------
    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

    def _global_state(self) -> dict[str, Any]:
        state = self.state[self.param_groups[0]["params"][0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        return state

    def _line_search(self) -> LineSearch | None:
        """The line search named by the first group (``line_search``)."""
        return resolve_line_search(self.param_groups[0]["line_search"], allow_none=False)

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

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run the method's iterations on ``closure`` (see the class docstring).

        Returns what the first closure call returned. When no parameter needs a
        gradient the closure is called once and nothing moves (``torch.optim.LBFGS``
        ends the same way: it finds a zero gradient).
        """
        closure = self._require_closure(closure)
        if not self._params():
            with torch.enable_grad():
                loss = closure()
            loss_value(loss)
            self._global_state()["func_evals"] += 1
            return loss
        # whether evaluations should keep the gradient's graph (for double-backward HVPs)
        self._graph = self.param_groups[0].get("hvp", "auto") != "finite_difference"
        return self._iterate(closure)

    def _iterate(self, closure: Callable[[], Any]) -> Any:  # pragma: no cover
        """The method's iterations (subclasses define it)."""
        raise NotImplementedError

    def _begin_step(self, **counters: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The first group and the global state, with ``counters`` created where missing."""
        state = self._global_state()
        for key, value in counters.items():
            state.setdefault(key, value)
        return self.param_groups[0], state

    def _flat_params(self) -> torch.Tensor:
        return flatten(self._params())

    def _lr(self, key: str = "lr") -> float | torch.Tensor:
        """The per-group ``lr`` as a scalar if all groups agree, else as a flat vector."""
        values = [float(g[key]) for g in self.param_groups]
        if all(v == values[0] for v in values):
            return values[0]
        ref = real_view(self._params()[0])
        parts = [torch.full((real_view(p).numel(),), v, device=ref.device, dtype=ref.dtype)
                 for g, v in zip(self.param_groups, values, strict=True)
                 for p in g["params"] if p.requires_grad]
        return torch.cat(parts)

    # -- evaluations ------------------------------------------------------------------------
    def _evaluate(self, closure: Callable[[], Any], create_graph: bool = False
                  ) -> ClosureEvaluation:
        """One closure call (counted); keeps the graph if asked and still possible."""
        want = create_graph and getattr(self, "_graph", True)
        ev = evaluate_closure(closure, self._params(), create_graph=want)
        self._global_state()["func_evals"] += 1
        if want and ev.graph_grads is None:
            if self.param_groups[0].get("hvp", "auto") == "autograd":
                raise RuntimeError(_NO_GRAPH)
            self._graph = False  # a plain-backward closure: finite differences for this step
        return ev

    def _hvp(self, ev: ClosureEvaluation, closure: Callable[[], Any], x: torch.Tensor
             ) -> Callable[[torch.Tensor], torch.Tensor]:
        """``v -> H v`` at the point ``x`` of ``ev``; counts products in ``hvp_evals``.

        Double backward if ``ev`` carries its graph, else a forward difference of
        gradients (one closure call per product; the parameters go back to ``x``).
        """
        params = self._params()
        state = self._global_state()
        state.setdefault("hvp_evals", 0)

        if ev.graph_grads is not None:
            graph_grads = ev.graph_grads

            def hvp(v: torch.Tensor) -> torch.Tensor:
                state["hvp_evals"] += 1
                return hessian_vector_product(graph_grads, params, v)

            return hvp

        def grad_at(y: torch.Tensor) -> torch.Tensor:
            set_params(params, y)
            return evaluate_closure(closure, params).g

        def fd_hvp(v: torch.Tensor) -> torch.Tensor:
            state["hvp_evals"] += 1
            hv = finite_difference_hvp(grad_at, x, ev.g, v)
            set_params(params, x)
            return hv

        return fd_hvp

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

        hvp = self._hvp(ev0, closure, x0) if hessian else None
        return LineObjective(evaluate, ev0.f, ev0.g, d, hvp)

    def _run_line_search(self, closure: Callable[[], Any], search: LineSearch,
                         x0: torch.Tensor, ev0: ClosureEvaluation, d: torch.Tensor,
                         step: float, *, need_graph: bool = False
                         ) -> tuple[LineSearchResult, ClosureEvaluation]:
        """Search along ``d`` and leave the parameters at the returned step.

        Returns the result and the evaluation at the returned point (with its
        graph if ``need_graph`` and the closure allows one; re-evaluating only
        if the returned point is not the last one evaluated). On a failure
        without decrease the parameters go back to ``x0`` and ``ev0`` is returned.
        """
        need_graph = (need_graph or search.needs_hessian) and getattr(self, "_graph", True)
        line = self._line(closure, x0, ev0, d, hessian=search.needs_hessian, graph=need_graph)
        res = search.search(line, step)
        if res.step == 0.0:
            set_params(self._params(), x0)
            return res, ev0
        if line.last is not None and line.last[0] == res.step:
            ev = line.last[1]
            if need_graph and ev.graph_grads is None and self._graph:
                ev = self._evaluate(closure, create_graph=True)
            return res, ev
        set_params(self._params(), x0 + res.step * d)
        ev = line.evaluation_at(res.step)
        if ev is None or (need_graph and self._graph):
            ev = self._evaluate(closure, create_graph=need_graph)
        return res, ev
