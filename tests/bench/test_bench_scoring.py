"""Performance ratios, profiles and the AlgoPerf score against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from descentlab.bench.scoring import performance_profile, performance_ratios, score

TIMES = {
    "p1": {"a": 10, "b": 20, "c": None},
    "p2": {"a": 30, "b": 10, "c": 50},
}


def test_ratios_by_hand() -> None:
    r = performance_ratios(TIMES)
    assert r["p1"] == {"a": 1.0, "b": 2.0, "c": math.inf}
    assert r["p2"] == {"a": 3.0, "b": 1.0, "c": 5.0}


def test_score_by_hand() -> None:
    s = score(performance_ratios(TIMES))
    # a: ratios 1 and 3 -> ((4-1) + (4-3)) / (2 problems * 3); b: 2 and 1; c: never / beyond 4
    assert s["a"] == pytest.approx(4 / 6)
    assert s["b"] == pytest.approx(5 / 6)
    assert s["c"] == 0.0


def test_score_is_area_under_profile() -> None:
    rng = np.random.default_rng(0)
    times = {
        f"p{i}": {s: (None if rng.random() < 0.2 else float(rng.integers(1, 100))) for s in "abcd"}
        for i in range(7)
    }
    ratios = performance_ratios(times)
    taus = np.linspace(1, 4, 300_001)
    rho = performance_profile(ratios, taus)
    exact = score(ratios)
    for s in "abcd":
        numeric = np.trapezoid(rho[s], taus) / 3
        assert exact[s] == pytest.approx(numeric, abs=1e-4)


def test_unsolved_problem_gives_no_credit_but_counts() -> None:
    s = score(performance_ratios({"p1": {"a": 5, "b": 10}, "p2": {"a": None, "b": None}}))
    assert s["a"] == pytest.approx(0.5)  # full credit on one of two problems
    assert s["b"] == pytest.approx((4 - 2) / 3 / 2)


def test_zero_time_counts_as_best() -> None:
    r = performance_ratios({"p": {"a": 0, "b": 4, "c": 8}})
    assert r["p"] == {"a": 1.0, "b": 1.0, "c": 2.0}


def test_profile_values() -> None:
    rho = performance_profile(performance_ratios(TIMES), [1.0, 2.0, 3.0, 10.0])
    assert rho["a"].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert rho["c"].tolist() == [0.0, 0.0, 0.0, 0.5]


def test_bad_tau_max() -> None:
    with pytest.raises(ValueError, match="tau_max"):
        score({}, tau_max=1.0)
