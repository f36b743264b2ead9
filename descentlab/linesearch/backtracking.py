"""Backtracking line searches: Armijo, Armijo–Goldstein, full relaxation (Hessian term).

All three share one bracketing loop: a trial step that is *too long* (fails the
decrease condition) becomes the upper end of the bracket, a trial that is *too
short* (fails Goldstein's lower bound) the lower end; the next trial is the
minimiser of the cubic through the two known ends (``phi`` and ``phi'`` are both
known at every trial, since each evaluation gives f and its gradient),
safeguarded to ``[0.1, 0.5]`` of the bracket when shrinking from zero
(Nocedal & Wright, sec. 3.5), or plain halving/doubling with
``interpolate=False``.

Notation: ``phi(a) = f(x + a d)``, ``phi'(0) = grad f(x) . d < 0``.
"""

from __future__ import annotations

import math

from descentlab.linesearch._interp import cubic_minimizer, safeguarded
from descentlab.linesearch.base import LineObjective, LineSearch, LineSearchResult
from descentlab.optim.validation import check_int, check_interval, check_positive

__all__ = ["Armijo", "ArmijoGoldstein", "FullRelaxation"]

_OK, _LONG, _SHORT = 0, 1, 2


class _Bracketing(LineSearch):
    """Shared loop; subclasses define :meth:`_verdict` (and may pick the first trial)."""

    def __init__(
        self,
        *,
        shrink: float,
        interpolate: bool,
        growth: float | None,
        max_step: float,
        max_evals: int,
    ) -> None:
        self.shrink = check_interval("shrink", shrink, 0.0, 1.0, low_closed=False,
                                     high_closed=False)
        if not isinstance(interpolate, bool):
            raise TypeError(f"interpolate must be a bool, got {interpolate!r}")
        self.interpolate = interpolate
        self.growth = None if growth is None else check_positive("growth", growth)
        self.max_step = check_positive("max_step", max_step)
        self.max_evals = check_int("max_evals", max_evals, minimum=1)

    def initial_step(self, previous: float | None, default: float) -> float:
        """``default`` (the optimizer's lr) unless ``growth`` is set, then ``previous * growth``."""
        if previous is None or self.growth is None or previous <= 0:
            return min(default, self.max_step)
        return min(previous * self.growth, self.max_step)

    def _verdict(self, line: LineObjective, alpha: float, f: float, d: float) -> int:
        raise NotImplementedError  # pragma: no cover

    def _first_trial(self, line: LineObjective, step: float) -> float:
        return step

    def _next(self, lo, flo, dlo, hi, fhi, dhi) -> float:
        width = hi - lo
        if not math.isfinite(fhi) or not self.interpolate:
            return lo + self.shrink * width
        cand = cubic_minimizer(lo, flo, dlo, hi, fhi, dhi)
        if lo == 0.0:
            return safeguarded(cand, 0.1 * hi, 0.5 * hi, self.shrink * hi)
        return safeguarded(cand, lo + 0.1 * width, hi - 0.1 * width, lo + 0.5 * width)

    def search(self, line: LineObjective, step: float) -> LineSearchResult:
        """Bracket and shrink until :meth:`_verdict` accepts (see the class docstring)."""
        if not line.dphi0 < 0:
            return line.fallback(f"not a descent direction: phi'(0) = {line.dphi0!r} >= 0")
        lo, flo, dlo = 0.0, line.phi0, line.dphi0
        hi = fhi = dhi = math.inf
        alpha = min(self._first_trial(line, step), self.max_step)
        for _ in range(self.max_evals):
            f, d = line(alpha)
            verdict = self._verdict(line, alpha, f, d) if math.isfinite(f) else _LONG
            if verdict == _OK:
                return line.result(alpha, f, d, True)
            if verdict == _LONG:
                hi, fhi, dhi = alpha, f, d
                alpha = self._next(lo, flo, dlo, hi, fhi, dhi)
            else:
                lo, flo, dlo = alpha, f, d
                if math.isinf(hi):
                    if alpha >= self.max_step:
                        return line.fallback(f"step reached max_step={self.max_step} and is "
                                             "still too short")
                    alpha = min(2.0 * alpha, self.max_step)
                else:
                    alpha = self._next(lo, flo, dlo, hi, fhi, dhi)
            if (math.isfinite(hi) and hi - lo <= 1e-16 * max(1.0, hi)) or alpha <= 0.0:
                return line.fallback(
                    f"bracket collapsed to [{lo:.3g}, {hi:.3g}] without an acceptable step "
                    f"after {line.evaluations} evaluations (phi(0) = {line.phi0!r}, "
                    f"phi'(0) = {line.dphi0!r}; rounding or a wrong gradient)"
                )
        return line.fallback(
            f"no acceptable step within max_evals={self.max_evals} evaluations "
            f"(last trial {alpha:.3g}; phi(0) = {line.phi0!r}, phi'(0) = {line.dphi0!r})"
        )


class Armijo(_Bracketing):
    r"""Backtracking line search with the Armijo sufficient-decrease condition.

    Accepts the first trial ``alpha`` with

    .. math:: f(x + \alpha d) \le f(x) + c_1 \alpha \nabla f(x)^\top d,

    which for steepest descent ``d = -grad f`` is seed 003's condition
    ``f(x - alpha g) - f(x) <= -c alpha ||g||^2`` (the seed writes it for ascent,
    with the inequality reversed). Starting at ``step``, a rejected trial is
    replaced by the safeguarded cubic-interpolation minimiser in
    ``[0.1 alpha, 0.5 alpha]`` (or ``shrink * alpha`` with ``interpolate=False``).

    Args:
        c1: sufficient-decrease constant in (0, 1); default 1e-4 (N&W).
        shrink: factor for plain backtracking, in (0, 1); default 0.5.
        interpolate: use cubic interpolation instead of plain shrinking.
        growth: if set, a search inside an optimizer starts at
            ``previous_step * growth`` instead of the optimizer's ``lr``.
        max_step: upper bound on any trial step.
        max_evals: evaluation budget per search.

    Reference: Armijo (1966); Nocedal & Wright, *Numerical Optimization*, 2nd
    ed., Alg. 3.1 and sec. 3.5.
    """

    name = "armijo"

    def __init__(self, c1: float = 1e-4, shrink: float = 0.5, interpolate: bool = True,
                 growth: float | None = None, max_step: float = 1e10,
                 max_evals: int = 30) -> None:
        self.c1 = check_interval("c1", c1, 0.0, 1.0, low_closed=False, high_closed=False)
        super().__init__(shrink=shrink, interpolate=interpolate, growth=growth,
                         max_step=max_step, max_evals=max_evals)

    def _verdict(self, line: LineObjective, alpha: float, f: float, d: float) -> int:
        return _OK if f <= line.phi0 + self.c1 * alpha * line.dphi0 else _LONG


class ArmijoGoldstein(_Bracketing):
    r"""Line search with both Goldstein bounds.

    Accepts ``alpha`` with

    .. math:: f(x) + (1 - c)\,\alpha \nabla f^\top d \;\le\; f(x + \alpha d)
              \;\le\; f(x) + c\,\alpha \nabla f^\top d, \qquad 0 < c < 1/2.

    The upper bound is Armijo's sufficient decrease; the lower bound rules out
    steps that are too short. Too-long trials shrink the bracket by
    interpolation, too-short ones double the step (or interpolate once an upper
    end is known).

    Args:
        c: the Goldstein constant in (0, 1/2); default 0.25.
        shrink, interpolate, growth, max_step, max_evals: as in :class:`Armijo`.

    Reference: Goldstein (1965); Nocedal & Wright, eq. 3.11.
    """

    name = "armijo_goldstein"

    def __init__(self, c: float = 0.25, shrink: float = 0.5, interpolate: bool = True,
                 growth: float | None = None, max_step: float = 1e10,
                 max_evals: int = 30) -> None:
        self.c = check_interval("c", c, 0.0, 0.5, low_closed=False, high_closed=False)
        super().__init__(shrink=shrink, interpolate=interpolate, growth=growth,
                         max_step=max_step, max_evals=max_evals)

    def _verdict(self, line: LineObjective, alpha: float, f: float, d: float) -> int:
        if f > line.phi0 + self.c * alpha * line.dphi0:
            return _LONG
        if f < line.phi0 + (1.0 - self.c) * alpha * line.dphi0:
            return _SHORT
        return _OK


class FullRelaxation(_Bracketing):
    r"""Seed 003's "full relaxation" condition: Armijo with a Hessian term.

    Accepts ``alpha`` with

    .. math:: f(x + \alpha d) - f(x) \le c\,\alpha \nabla f^\top d
              + \tfrac{b}{2} \alpha^2 d^\top H(x) d
              \quad\text{and}\quad f(x + \alpha d) < f(x),

    where ``d^T H d`` comes from one Hessian-vector product (double backward).
    When ``d^T H d > 0`` the first trial is the minimiser of the quadratic model,
    ``alpha* = -grad f . d / d^T H d`` (the exact, "full relaxation" step on a
    quadratic, which the condition always accepts); otherwise the search starts
    at the given step. Rejected trials shrink as in :class:`Armijo`.

    On a convex quadratic the condition accepts ``alpha < 2(1-c)/(1-b) alpha*``;
    for ``b > c`` that includes steps past ``2 alpha*`` where ``f`` *increases*,
    so the literal condition alone is not a descent test. The extra requirement
    ``f(x + alpha d) < f(x)`` (our addition) keeps every accepted step a descent
    step; with the defaults (``b < c``) it is implied on convex quadratics.

    Args:
        c: decrease constant in (0, 1); default 0.1.
        b: weight of the Hessian term in [0, 1); default 0.05. ``b = 0`` is Armijo.
        shrink, interpolate, growth, max_step, max_evals: as in :class:`Armijo`.

    Needs Hessian-vector products: in an optimizer the closure must return the
    loss without calling backward, or call ``loss.backward(create_graph=True)``.
    """

    name = "full_relaxation"
    needs_hessian = True

    def __init__(self, c: float = 0.1, b: float = 0.05, shrink: float = 0.5,
                 interpolate: bool = True, growth: float | None = None,
                 max_step: float = 1e10, max_evals: int = 30) -> None:
        self.c = check_interval("c", c, 0.0, 1.0, low_closed=False, high_closed=False)
        self.b = check_interval("b", b, 0.0, 1.0, high_closed=False)
        super().__init__(shrink=shrink, interpolate=interpolate, growth=growth,
                         max_step=max_step, max_evals=max_evals)

    def _first_trial(self, line: LineObjective, step: float) -> float:
        kappa = line.curvature()
        if kappa > 0 and math.isfinite(kappa):
            return -line.dphi0 / kappa
        return step

    def _verdict(self, line: LineObjective, alpha: float, f: float, d: float) -> int:
        bound = self.c * alpha * line.dphi0 + 0.5 * self.b * alpha * alpha * line.curvature()
        return _OK if (f - line.phi0 <= bound and f < line.phi0) else _LONG
