"""Common types of every line search: the 1-D objective, the result, the error, the base class.

A line search looks at ``phi(alpha) = f(x + alpha d)`` along a descent
direction ``d`` (``phi'(0) = grad f(x) . d < 0``) and returns a step ``alpha``
satisfying its acceptance condition. Every evaluation of ``phi`` is one
evaluation of ``f`` *and* its gradient (one closure call in an optimizer), so
``phi'(alpha)`` comes for free and is used for interpolation. Conditions that
need curvature (the full-relaxation condition) use one Hessian-vector product
``d^T H d``, counted separately.

Searches are configured objects (``StrongWolfe(c1=1e-4, c2=0.9)``) usable in
two ways:

* inside an optimizer, through :meth:`LineSearch.search` on a
  :class:`LineObjective` the optimizer builds;
* on their own, by calling the object: ``StrongWolfe()(fun, x, d)`` where
  ``fun`` maps a tensor to a scalar tensor. This raises
  :class:`LineSearchError` when no acceptable step is found.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from descentlab.linesearch._flat import ClosureEvaluation

__all__ = ["LineSearch", "LineSearchError", "LineSearchResult", "LineObjective"]


class LineSearchError(RuntimeError):
    """Raised when a line search finds no acceptable step (the message says why)."""


@dataclass
class LineSearchResult:
    """Outcome of one line search.

    Attributes:
        step: the accepted step ``alpha`` (on failure: the best step seen with a
            decrease, or ``0.0`` if none decreased ``f``).
        f: ``phi(step)``.
        dphi: ``phi'(step)`` (directional derivative at the returned point).
        evaluations: function+gradient evaluations used by this search.
        hvps: Hessian-vector products used by this search.
        success: whether the search's own acceptance condition holds at ``step``.
        message: a human-readable reason, most useful on failure.
    """

    step: float
    f: float
    dphi: float
    evaluations: int
    hvps: int
    success: bool
    message: str = ""


class LineObjective:
    """``phi(alpha) = f(x + alpha d)`` with evaluation counting.

    Args:
        evaluate: maps ``alpha`` to a :class:`ClosureEvaluation` (loss and flat
            gradient at ``x + alpha d``); it is called once per evaluation.
        f0: ``f(x)``.
        g0: flat gradient at ``x``.
        direction: the flat direction ``d``.
        hvp: optional ``v -> H(x) v`` (flat), needed only by curvature-using
            searches.

    Calling the object returns ``(phi(alpha), phi'(alpha))``. The most recent
    and the best (lowest ``phi``) evaluations are kept (:attr:`last`,
    :attr:`best`) so the caller can pick up the gradient at the accepted point
    without evaluating again.
    """

    def __init__(
        self,
        evaluate: Callable[[float], ClosureEvaluation],
        f0: float,
        g0: torch.Tensor,
        direction: torch.Tensor,
        hvp: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self._evaluate = evaluate
        self.direction = direction
        self.phi0 = float(f0)
        self.dphi0 = float(torch.dot(g0, direction))
        self._hvp = hvp
        self.evaluations = 0
        self.hvps = 0
        self.last: tuple[float, ClosureEvaluation] | None = None
        self.best: tuple[float, ClosureEvaluation] | None = None
        self._curvature: float | None = None

    def __call__(self, alpha: float) -> tuple[float, float]:
        ev = self._evaluate(alpha)
        self.evaluations += 1
        self.last = (alpha, ev)
        if math.isfinite(ev.f) and (self.best is None or ev.f < self.best[1].f):
            self.best = (alpha, ev)
        return ev.f, float(torch.dot(ev.g, self.direction))

    def curvature(self) -> float:
        """``d^T H(x) d`` by one Hessian-vector product (cached)."""
        if self._curvature is None:
            if self._hvp is None:
                raise RuntimeError(
                    "this line search needs Hessian-vector products but none were provided"
                )
            self._curvature = float(torch.dot(self.direction, self._hvp(self.direction)))
            self.hvps += 1
        return self._curvature

    def evaluation_at(self, alpha: float) -> ClosureEvaluation | None:
        """The stored evaluation at ``alpha`` (the last or the best one), else None."""
        for rec in (self.last, self.best):
            if rec is not None and rec[0] == alpha:
                return rec[1]
        return None

    def result(self, alpha: float, f: float, dphi: float, success: bool,
               message: str = "") -> LineSearchResult:
        """Build a :class:`LineSearchResult` carrying this objective's counters."""
        return LineSearchResult(alpha, f, dphi, self.evaluations, self.hvps, success, message)

    def fallback(self, message: str) -> LineSearchResult:
        """A failed result at the best decreasing step seen (or at ``alpha = 0``)."""
        if self.best is not None and self.best[1].f < self.phi0:
            alpha, ev = self.best
            return self.result(alpha, ev.f, float(torch.dot(ev.g, self.direction)), False,
                               message)
        return self.result(0.0, self.phi0, self.dphi0, False, message)


class LineSearch:
    """Base class of the line searches.

    Subclasses implement :meth:`search`; :meth:`initial_step` says where the
    next search starts given the previous accepted step (default: at the
    optimizer's ``lr``). ``needs_hessian`` is True for searches that use
    ``d^T H d``.
    """

    name = "line_search"
    needs_hessian = False

    def search(self, line: LineObjective, step: float) -> LineSearchResult:  # pragma: no cover
        """Search along ``line`` starting from the trial step ``step``."""
        raise NotImplementedError

    def initial_step(self, previous: float | None, default: float) -> float:
        """First trial step of a search, given the previous accepted step (or None)."""
        return default

    def __call__(
        self,
        fun: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        direction: torch.Tensor | None = None,
        step: float = 1.0,
    ) -> LineSearchResult:
        """Run the search on its own: ``fun`` maps a tensor like ``x`` to a scalar tensor.

        ``direction`` defaults to steepest descent ``-grad f(x)``. Gradients (and,
        for curvature-using searches, one Hessian-vector product) are taken with
        ``torch.autograd``. Raises :class:`LineSearchError` if no step is found,
        and ``ValueError`` if ``direction`` is not a descent direction.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        shape = x.shape
        x0 = x.detach().reshape(-1).clone().requires_grad_(True)
        with torch.enable_grad():
            f0 = fun(x0.view(shape))
            (g0,) = torch.autograd.grad(f0, x0, create_graph=self.needs_hessian)
        d = -g0.detach() if direction is None else direction.detach().reshape(-1).to(x0)
        if d.shape != x0.shape:
            raise ValueError(
                f"direction must have as many elements as x ({x0.numel()}), got {d.numel()}"
            )

        def evaluate(alpha: float) -> ClosureEvaluation:
            xt = (x0.detach() + alpha * d).requires_grad_(True)
            with torch.enable_grad():
                ft = fun(xt.view(shape))
                (gt,) = torch.autograd.grad(ft, xt)
            return ClosureEvaluation(ft, float(ft.detach()), gt.detach(), None)

        def hvp(v: torch.Tensor) -> torch.Tensor:
            (hv,) = torch.autograd.grad(g0, x0, grad_outputs=v, retain_graph=True)
            return hv

        line = LineObjective(evaluate, float(f0.detach()), g0.detach(), d,
                             hvp if self.needs_hessian else None)
        if not line.dphi0 < 0:
            raise ValueError(
                f"direction is not a descent direction: grad . direction = {line.dphi0!r} >= 0"
            )
        res = self.search(line, step)
        if not res.success:
            raise LineSearchError(f"{type(self).__name__}: {res.message}")
        return res
