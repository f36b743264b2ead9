"""Strong Wolfe line search: bracketing phase plus zoom (Nocedal & Wright, Alg. 3.5 and 3.6)."""

from __future__ import annotations

import math

from descentlab.linesearch._interp import cubic_minimizer, safeguarded
from descentlab.linesearch.base import LineObjective, LineSearch, LineSearchResult
from descentlab.optim.validation import check_int, check_interval, check_positive

__all__ = ["StrongWolfe"]


class StrongWolfe(LineSearch):
    r"""Line search for the strong Wolfe conditions.

    Accepts ``alpha`` with

    .. math:: \phi(\alpha) \le \phi(0) + c_1 \alpha \phi'(0), \qquad
              |\phi'(\alpha)| \le c_2 |\phi'(0)|, \qquad 0 < c_1 < c_2 < 1.

    *Bracketing* (N&W Alg. 3.5): trial steps grow until one fails sufficient
    decrease, stops decreasing, or has ``phi' >= 0``; each new trial is the
    minimiser of the cubic through the last two trials, kept within
    ``[a + 0.1 w, a + 4 w]`` (``w`` the last increase). *Zoom* (Alg. 3.6): the
    bracket shrinks by safeguarded cubic interpolation (kept at least ``0.1``
    of the bracket away from its ends) until a trial satisfies both conditions.

    Every trial costs one function+gradient evaluation. When the budget runs out
    or the bracket collapses (rounding near a minimum, or a gradient that does
    not match the function), or when the whole bracket promises a decrease
    ``width * |phi'(0)|`` below rounding level ``1e-16 (1 + |phi(0)|)``, the
    search fails; the result then carries the best
    decreasing step seen, and the stand-alone call raises
    :class:`~descentlab.linesearch.LineSearchError`.

    Args:
        c1: sufficient-decrease constant; default 1e-4.
        c2: curvature constant; default 0.9 (quasi-Newton / Newton); use 0.1–0.4
            for nonlinear CG (Fletcher–Reeves needs ``c2 < 1/2``).
        max_step: upper bound on trial steps.
        max_evals: evaluation budget per search; default 25 (as torch.optim.LBFGS).
        growth: if set, a search inside an optimizer starts at
            ``previous_step * growth`` instead of the optimizer's ``lr``.

    Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., sec. 3.5.
    """

    name = "strong_wolfe"

    def __init__(self, c1: float = 1e-4, c2: float = 0.9, max_step: float = 1e10,
                 max_evals: int = 25, growth: float | None = None) -> None:
        self.c1 = check_interval("c1", c1, 0.0, 1.0, low_closed=False, high_closed=False)
        self.c2 = check_interval("c2", c2, 0.0, 1.0, low_closed=False, high_closed=False)
        if not self.c1 < self.c2:
            raise ValueError(f"c1 must be smaller than c2, got c1={c1!r}, c2={c2!r}")
        self.max_step = check_positive("max_step", max_step)
        self.max_evals = check_int("max_evals", max_evals, minimum=1)
        self.growth = None if growth is None else check_positive("growth", growth)

    def initial_step(self, previous: float | None, default: float) -> float:
        """``default`` unless ``growth`` is set, then ``previous * growth``."""
        if previous is None or self.growth is None or previous <= 0:
            return min(default, self.max_step)
        return min(previous * self.growth, self.max_step)

    def _armijo(self, line: LineObjective, a: float, f: float) -> bool:
        return f <= line.phi0 + self.c1 * a * line.dphi0

    def _curvature_ok(self, line: LineObjective, d: float) -> bool:
        return abs(d) <= -self.c2 * line.dphi0

    def search(self, line: LineObjective, step: float) -> LineSearchResult:
        """Bracket, then zoom (see the class docstring)."""
        if not line.dphi0 < 0:
            return line.fallback(f"not a descent direction: phi'(0) = {line.dphi0!r} >= 0")
        a_prev, f_prev, d_prev = 0.0, line.phi0, line.dphi0
        a = min(step, self.max_step)
        while line.evaluations < self.max_evals:
            f, d = line(a)
            if not math.isfinite(f) or not self._armijo(line, a, f) or (
                line.evaluations > 1 and f >= f_prev
            ):
                return self._zoom(line, a_prev, f_prev, d_prev, a, f, d)
            if self._curvature_ok(line, d):
                return line.result(a, f, d, True)
            if d >= 0:
                return self._zoom(line, a, f, d, a_prev, f_prev, d_prev)
            if a >= self.max_step:
                return line.fallback(f"step reached max_step={self.max_step} while phi still "
                                     "decreases (unbounded below?)")
            w = a - a_prev
            cand = cubic_minimizer(a_prev, f_prev, d_prev, a, f, d)
            a_new = safeguarded(cand, a + 0.1 * w, a + 4.0 * w, a + 2.0 * w)
            a_prev, f_prev, d_prev = a, f, d
            a = min(a_new, self.max_step)
        return line.fallback(self._budget_message(line))

    def _zoom(self, line: LineObjective, lo: float, flo: float, dlo: float,
              hi: float, fhi: float, dhi: float) -> LineSearchResult:
        while line.evaluations < self.max_evals:
            left, right = min(lo, hi), max(lo, hi)
            width = right - left
            if (width <= 1e-16 * max(1.0, right)
                    or width * abs(line.dphi0) <= 1e-16 * (1.0 + abs(line.phi0))):
                return line.fallback(
                    f"zoom bracket collapsed to [{left:.6g}, {right:.6g}] after "
                    f"{line.evaluations} evaluations without a strong Wolfe step "
                    f"(phi(0) = {line.phi0!r}, phi'(0) = {line.dphi0!r}; rounding near a "
                    "minimum, or a gradient that does not match the function)"
                )
            cand = cubic_minimizer(lo, flo, dlo, hi, fhi, dhi) if math.isfinite(fhi) else None
            a = safeguarded(cand, left + 0.1 * width, right - 0.1 * width, left + 0.5 * width)
            f, d = line(a)
            if not math.isfinite(f) or not self._armijo(line, a, f) or f >= flo:
                hi, fhi, dhi = a, f, d
            else:
                if self._curvature_ok(line, d):
                    return line.result(a, f, d, True)
                if d * (hi - lo) >= 0:
                    hi, fhi, dhi = lo, flo, dlo
                lo, flo, dlo = a, f, d
        return line.fallback(self._budget_message(line))

    def _budget_message(self, line: LineObjective) -> str:
        return (f"no strong Wolfe step (c1={self.c1}, c2={self.c2}) within "
                f"max_evals={self.max_evals} evaluations (phi(0) = {line.phi0!r}, "
                f"phi'(0) = {line.dphi0!r})")
