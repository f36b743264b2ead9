"""Safeguarded polynomial interpolation for step selection (Nocedal & Wright, sec. 3.5)."""

from __future__ import annotations

import math

__all__ = ["cubic_minimizer", "safeguarded", "interpolated_initial_step"]


def cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float | None:
    """Minimiser of the cubic matching ``f`` and ``f'`` at ``a`` and ``b`` (N&W eq. 3.59).

    Returns None when the cubic has no local minimiser (or the data are not finite).
    """
    if a == b or not all(math.isfinite(v) for v in (a, fa, da, b, fb, db)):
        return None
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc < 0.0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0.0:
        return None
    x = b - (b - a) * (db + d2 - d1) / denom
    return x if math.isfinite(x) else None


def safeguarded(candidate: float | None, low: float, high: float, fallback: float) -> float:
    """``candidate`` clipped to ``[low, high]``; ``fallback`` if there is no candidate."""
    if candidate is None or not math.isfinite(candidate):
        return fallback
    return min(max(candidate, low), high)


def interpolated_initial_step(f: float, f_prev: float | None, dphi0: float,
                              cap: float = 1.0) -> float:
    """First trial step ``min(cap, 1.01 * 2 (f_k - f_{k-1}) / phi'(0))`` (N&W eq. 3.60).

    Assumes the decrease of this iteration will match the last one; ``cap`` when
    there is no previous value or the formula is not positive.
    """
    if f_prev is None or not dphi0 < 0:
        return cap
    guess = 1.01 * 2.0 * (f - f_prev) / dphi0
    if not math.isfinite(guess) or guess <= 0:
        return cap
    return min(cap, guess)
