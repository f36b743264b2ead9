"""AlgoPerf-style aggregation: performance profiles and the benchmark score.

For problem ``p`` and entrant ``s`` let ``t[p, s]`` be the time to reach the
target (``inf`` if never reached). The performance ratio is
``r[p, s] = t[p, s] / min_s' t[p, s']`` (``inf`` if ``s`` never reached the
target, or if no entrant did). The performance profile of ``s`` is

    ρ_s(τ) = |{p : r[p, s] ≤ τ}| / |P|,

the share of problems ``s`` solves within a factor ``τ`` of the best
(Dolan & Moré, 2002). The score is the normalised area under the profile,

    score_s = (1 / (τ_max − 1)) ∫₁^τ_max ρ_s(τ) dτ,   τ_max = 4,

as in MLCommons AlgoPerf (Dahl et al., 2023, "Benchmarking Neural Network
Training Algorithms"); a problem never solved earns no credit. Because ρ is a
step function, the integral is exact: each problem with ``r ≤ τ_max`` adds
``(τ_max − r) / (|P| · (τ_max − 1))``.

AlgoPerf measures time in wall-clock seconds on fixed hardware. descentlab
scores twice with the same functions: on *optimizer steps* to target, which is
exactly reproducible on shared machines and ranks the leaderboard, and on
training wall time to target, which depends on the machine and its load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["TAU_MAX", "performance_ratios", "performance_profile", "score"]

TAU_MAX = 4.0

Times = Mapping[str, Mapping[str, float | None]]


def performance_ratios(times: Times) -> dict[str, dict[str, float]]:
    """Ratios ``r[p][s]`` from times ``times[p][s]`` (``None``/``inf``/``nan`` = not reached).

    A time of 0 (target met at the start) counts as the smallest positive
    time among the entrants, so ratios stay finite.
    """
    ratios: dict[str, dict[str, float]] = {}
    for problem, row in times.items():
        clean = {
            s: (float(t) if t is not None and math.isfinite(float(t)) and t >= 0 else math.inf)
            for s, t in row.items()
        }
        finite = [t for t in clean.values() if math.isfinite(t)]
        if not finite:
            ratios[problem] = {s: math.inf for s in clean}
            continue
        positive = [t for t in finite if t > 0]
        floor = min(positive) if positive else 1.0
        best = max(min(finite), floor) if min(finite) == 0 else min(finite)
        ratios[problem] = {
            s: (max(t, floor) / best if math.isfinite(t) else math.inf) for s, t in clean.items()
        }
    return ratios


def _entrants(ratios: Mapping[str, Mapping[str, float]]) -> list[str]:
    names: list[str] = []
    for row in ratios.values():
        names += [s for s in row if s not in names]
    return names


def performance_profile(
    ratios: Mapping[str, Mapping[str, float]], taus: Sequence[float] | np.ndarray
) -> dict[str, np.ndarray]:
    """``ρ_s(τ)`` for every entrant at each ``τ`` in ``taus``."""
    taus = np.asarray(taus, dtype=float)
    n = len(ratios)
    out: dict[str, np.ndarray] = {}
    for s in _entrants(ratios):
        r = np.array([row.get(s, math.inf) for row in ratios.values()], dtype=float)
        out[s] = (r[None, :] <= taus[:, None]).sum(axis=1) / max(n, 1)
    return out


def score(ratios: Mapping[str, Mapping[str, float]], tau_max: float = TAU_MAX) -> dict[str, float]:
    """Exact area under each entrant's profile on ``[1, tau_max]``, divided by ``tau_max − 1``."""
    if not tau_max > 1:
        raise ValueError(f"tau_max must be > 1, got {tau_max!r}")
    n = len(ratios)
    out: dict[str, float] = {}
    for s in _entrants(ratios):
        total = 0.0
        for row in ratios.values():
            r = row.get(s, math.inf)
            if r <= tau_max:
                total += tau_max - max(r, 1.0)
        out[s] = total / (max(n, 1) * (tau_max - 1.0))
    return out
