"""The strong Wolfe line search of ``torch.optim.LBFGS`` (minFunc's), for exact drop-in parity.

``torch.optim.LBFGS(line_search_fn="strong_wolfe")`` uses the search of
M. Schmidt's minFunc (``WolfeLineSearch``, via the Lua ``optim`` package), which
differs from Nocedal & Wright's Alg. 3.5/3.6 (:class:`~descentlab.linesearch.StrongWolfe`)
in its details:

* **bracketing**: a trial that fails sufficient decrease
  ``f(t) > f(0) + c1 t f'(0)``, or (from the third trial on) does not decrease
  ``f``, or has ``f'(t) >= 0``, closes the bracket; one with
  ``|f'(t)| <= -c2 f'(0)`` is accepted; otherwise the next trial is the
  minimiser of the cubic through the last two trials, clipped to
  ``[t + 0.01 (t - t_prev), 10 t]``;
* **zoom**: the cubic minimiser of the bracket ends; if it falls within 10% of
  the bracket width from an end, it is accepted once, and the second time (or
  if it lies outside) it is moved to 10% inside the nearer end
  ("insufficient progress"); the low end is the one with the smaller ``f``;
* it stops when the bracket times ``max |d|`` is below ``tolerance_change``
  (1e-9) or after ``max_evals`` trials beyond the first, and returns the low
  end of the bracket (which need not be the last point evaluated) with its
  loss and gradient.

The arithmetic is done in the same order and on the same kinds of numbers
(the loss as a Python float, directional derivatives as 0-dim tensors), so an
L-BFGS run with this search reproduces torch's iterates bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

__all__ = ["cubic_step", "minfunc_strong_wolfe"]

Number = Any  # a float or a 0-dim tensor


def _sqrt(v: Number) -> Number:
    return v.sqrt() if isinstance(v, torch.Tensor) else math.sqrt(v)


def cubic_step(t1: Number, f1: Number, g1: Number, t2: Number, f2: Number, g2: Number,
               bounds: tuple[Number, Number] | None = None) -> Number:
    """Minimiser of the cubic with values ``f`` and slopes ``g`` at ``t1``, ``t2``, clipped.

    ``bounds`` default to the interval between ``t1`` and ``t2``; without a real
    minimiser the midpoint of the bounds is returned (N&W eq. 3.59, in minFunc's
    form: the root is taken from the end that lies further right).
    """
    if bounds is None:
        bounds = (t1, t2) if t1 <= t2 else (t2, t1)
    low, high = bounds
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    disc = d1 * d1 - g1 * g2
    if disc < 0:
        return (low + high) / 2.0
    d2 = _sqrt(disc)
    if t1 <= t2:
        t = t2 - (t2 - t1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        t = t1 - (t1 - t2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(t, low), high)


class _Trial(NamedTuple):
    t: Number
    f: float
    g: torch.Tensor
    gtd: Number


def minfunc_strong_wolfe(
    evaluate: Callable[[Number], tuple[float, torch.Tensor]],
    t: Number,
    d: torch.Tensor,
    f: float,
    g: torch.Tensor,
    gtd: Number,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_evals: int = 25,
) -> tuple[float, torch.Tensor, Number, int]:
    """Search along ``d`` from the trial step ``t`` (see the module docstring).

    ``evaluate(t)`` returns the loss and flat gradient at ``x + t d`` (and
    leaves the parameters at ``x``); ``f``, ``g``, ``gtd`` are the loss,
    gradient and ``g . d`` at ``t = 0``. Returns ``(f, g, t, evaluations)`` at
    the chosen step.
    """
    d_norm = d.abs().max()
    f_new, g_new = evaluate(t)
    evals, extra = 1, 0
    gtd_new = g_new.dot(d)
    prev = _Trial(0, f, g, gtd)
    bracket: list[_Trial] = []
    done = False
    while extra < max_evals:
        cur = _Trial(t, f_new, g_new, gtd_new)
        if f_new > (f + c1 * t * gtd) or (extra > 1 and f_new >= prev.f):
            bracket = [prev, cur]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [cur], True
            break
        if gtd_new >= 0:
            bracket = [prev, cur]
            break
        t = cubic_step(prev.t, prev.f, prev.gtd, t, f_new, gtd_new,
                       bounds=(t + 0.01 * (t - prev.t), t * 10))
        prev = cur
        f_new, g_new = evaluate(t)
        evals, extra = evals + 1, extra + 1
        gtd_new = g_new.dot(d)
    if extra == max_evals:
        bracket = [_Trial(0, f, g, None), _Trial(t, f_new, g_new, None)]

    low, high = (0, 1) if bracket[0].f <= bracket[-1].f else (1, 0)
    stalled = False  # the previous zoom trial was too close to an end
    while not done and extra < max_evals:
        a, b = bracket
        if abs(b.t - a.t) * d_norm < tolerance_change:
            break
        t = cubic_step(a.t, a.f, a.gtd, b.t, b.f, b.gtd)
        left, right = min(a.t, b.t), max(a.t, b.t)
        margin = 0.1 * (right - left)
        if min(right - t, t - left) < margin:
            if stalled or t >= right or t <= left:
                t = right - margin if abs(t - right) < abs(t - left) else left + margin
                stalled = False
            else:
                stalled = True
        else:
            stalled = False
        f_new, g_new = evaluate(t)
        evals, extra = evals + 1, extra + 1
        gtd_new = g_new.dot(d)
        cur = _Trial(t, f_new, g_new, gtd_new)
        if f_new > (f + c1 * t * gtd) or f_new >= bracket[low].f:
            bracket[high] = cur
            low, high = (0, 1) if bracket[0].f <= bracket[1].f else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high].t - bracket[low].t) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = cur
    best = bracket[low]
    return best.f, best.g, best.t, evals
