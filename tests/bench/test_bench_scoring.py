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


class _Store:
    """Just enough of ResultStore for ``collect``: no trials, hand-made re-runs."""

    def __init__(self, runs: dict[tuple[str, str], dict[int, object]]) -> None:
        self._runs = runs

    def finished_trials(self, key: str) -> list:
        return []

    def runs(self, key: str) -> dict[int, object]:
        problem, entrant = key.split(":")[1].split("@")[0], key.split(":")[2].split("@")[0]
        return self._runs[(problem, entrant)]


def _record(seed: int, seconds: float | None):
    from descentlab.bench.runner import RunRecord

    steps = None if seconds is None else 10
    return RunRecord(seed=seed, hparams={}, final={"loss": 1e-4}, curve=[],
                     steps_to_target=steps, time_to_target=seconds, train_time=9.0,
                     diverged=False, state_bytes=0)


def test_wall_time_score_by_hand(tmp_path) -> None:
    import csv
    import dataclasses
    import json

    from descentlab.bench.entrants import get_entrant
    from descentlab.bench.protocol import Protocol
    from descentlab.bench.report import render_html
    from descentlab.bench.results import collect, export, leaderboard_text

    from .fakes import quadratic_problem

    seconds = {  # training seconds to target of the re-run seeds 1, 2, 3 (None: not reached)
        ("p1", "sgd"): [2.0, 4.0, 3.0],        # median 3
        ("p1", "adam"): [1.0, None, 1.5],      # median 1.5 (the unreached seed counts as inf)
        ("p1", "momentum"): [None, None, 1.0],  # median inf
        ("p2", "sgd"): [1.0, 1.0, 1.0],        # median 1
        ("p2", "adam"): [4.0, 5.0, 6.0],       # median 5
        ("p2", "momentum"): [2.0, 2.5, 3.0],   # median 2.5
    }
    runs = {key: {s: _record(s, t) for s, t in zip((1, 2, 3), ts, strict=True)}
            for key, ts in seconds.items()}
    problems = [dataclasses.replace(quadratic_problem(), name=n) for n in ("p1", "p2")]
    entrants = [get_entrant(n) for n in ("sgd", "adam", "momentum")]
    results = collect(_Store(runs), problems, entrants, Protocol(trials=1, seeds=3))
    # wall-time ratios: p1 sgd 3/1.5 = 2, adam 1, momentum inf; p2 sgd 1, adam 5, momentum 2.5
    assert results.time_ratios == {"p1": {"sgd": 2.0, "adam": 1.0, "momentum": math.inf},
                                   "p2": {"sgd": 1.0, "adam": 5.0, "momentum": 2.5}}
    expected = {"sgd": (2 + 3) / 6, "adam": (3 + 0) / 6, "momentum": (0 + 1.5) / 6}
    assert results.time_scores == pytest.approx(expected)
    # every reached seed took 10 steps: on steps, sgd and adam tie, momentum solves p2 only
    assert results.scores == pytest.approx({"sgd": 1.0, "adam": 1.0, "momentum": 0.5})
    board = [(r["optimizer"], r["score"], r["time_score"]) for r in results.leaderboard]
    assert board == [("adam", 1.0, 0.5), ("sgd", 1.0, 0.833), ("momentum", 0.5, 0.25)]
    assert "| rank | optimizer | score | time score | solved |" in leaderboard_text(results)
    assert "| 2 | sgd | 1.000 | 0.833 | 2/2 |" in leaderboard_text(results)

    export(results, tmp_path)
    with open(tmp_path / "leaderboard.csv") as fh:
        assert [r["time_score"] for r in csv.DictReader(fh)] == ["0.5", "0.833", "0.25"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["time_scores"] == pytest.approx(expected)
    page = render_html(results, dict.fromkeys(
        ("performance_profile", "loss_curves", "lr_sensitivity"), b""), {})
    assert "<th>time score</th>" in page and "<td>0.833</td>" in page
