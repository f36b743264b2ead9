"""A single run against the closed-form gradient-descent path of a quadratic."""

from __future__ import annotations

import math

import pytest

from descentlab.bench.entrants import get_entrant
from descentlab.bench.runner import run

from .fakes import quadratic_problem


def test_steps_to_target_matches_closed_form() -> None:
    # f = ½ w², GD: w_k = (1 − lr)^k w_0, so f_k = ½ (1 − lr)^(2k) w_0²
    lr, target, seed = 0.1, 1e-3, 2
    w0 = 1.0 + 0.1 * seed
    problem = quadratic_problem(steps=60, target=target)
    record = run(problem, get_entrant("sgd"), {"lr": lr}, seed)
    expected = math.ceil(math.log(2 * target / w0**2) / (2 * math.log(1 - lr)))
    assert record.steps_to_target == expected
    assert record.final["loss"] == pytest.approx(0.5 * (1 - lr) ** 120 * w0**2, rel=1e-10)
    assert [c["step"] for c in record.curve] == list(range(61))
    assert not record.diverged
    assert record.time_to_target is not None and record.time_to_target <= record.train_time


def test_never_reached_and_divergence() -> None:
    problem = quadratic_problem(steps=20, target=1e-12)
    slow = run(problem, get_entrant("sgd"), {"lr": 0.01}, 0)
    assert slow.steps_to_target is None and not slow.diverged
    # lr = 3 on ½ w²: |1 − lr| = 2, the iterate doubles every step and overflows float64
    wild = run(quadratic_problem(steps=2000, eval_every=50), get_entrant("sgd"), {"lr": 3.0}, 0)
    assert wild.diverged and wild.steps_to_target is None
    assert wild.extra["steps_done"] < 2000


def test_state_bytes_counts_optimizer_state() -> None:
    problem = quadratic_problem(steps=3, h=(1.0, 2.0, 3.0, 4.0))
    plain = run(problem, get_entrant("sgd"), {"lr": 0.1}, 0)
    heavy = run(problem, get_entrant("momentum"), {"lr": 0.1, "momentum": 0.9}, 0)
    adam = run(problem, get_entrant("adam"), {"lr": 0.1, "beta1": 0.9}, 0)
    # momentum keeps one float64 buffer of 4 values; Adam at least two
    assert heavy.state_bytes - plain.state_bytes == 4 * 8
    assert adam.state_bytes >= 2 * 4 * 8


def test_memory_and_trajectory_on_a_2d_function() -> None:
    from descentlab.problems import get_problem

    problem = get_problem("square")
    record = run(
        problem,
        get_entrant("adam"),
        {"lr": 0.05, "beta1": 0.9},
        0,
        measure_memory=True,
        record_trajectory=True,
    )
    assert record.peak_bytes is not None and record.peak_bytes > 0
    assert record.trajectory is not None and len(record.trajectory) == problem.steps + 1
    assert record.trajectory[-1] == pytest.approx([0, 0], abs=0.5)
