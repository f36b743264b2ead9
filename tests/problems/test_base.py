"""The Problem interface and the registry."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
import torch

from descentlab.problems import (
    DEFAULT_SUITE,
    Problem,
    Task,
    available_problems,
    get_problem,
)
from descentlab.problems.base import check_seed

EXPECTED = {
    "square", "ill_conditioned_quadratic", "saddle", "monkey_saddle", "rosenbrock",
    "rastrigin", "beale", "himmelblau", "noisy_quadratic",
    "breast_cancer_logreg", "breast_cancer_svm", "digits_softmax", "digits_mlp", "digits_cnn",
    "digits_autoencoder", "diabetes_linreg", "diabetes_lad", "stdlib_char_transformer",
    "digits_resnet", "stdlib_char_lstm", "adding_gru",
}


def test_registry_holds_every_problem():
    assert set(available_problems()) == EXPECTED
    assert available_problems() == sorted(available_problems())
    assert set(DEFAULT_SUITE) <= EXPECTED


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_problem("rosenbrok")
    message = str(err.value)
    assert "'rosenbrok'" in message
    for name in EXPECTED:
        assert name in message


def test_name_must_be_a_string():
    with pytest.raises(TypeError, match="problem name must be a str"):
        get_problem(3)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_problem_fields_are_consistent(name):
    p = get_problem(name)
    assert p.name == name
    assert p.kind in ("analytic", "learning")
    assert p.steps >= 1 and 1 <= p.eval_every <= p.steps
    assert p.description and "\n" not in p.description
    assert len(p.fingerprint()) == 16
    assert p.higher_is_better == p.metric.endswith("accuracy")


def test_fingerprints_differ_between_problems_and_follow_every_field():
    prints = {get_problem(n).fingerprint() for n in EXPECTED}
    assert len(prints) == len(EXPECTED)
    p = get_problem("digits_mlp")
    assert p.fingerprint() == dataclasses.replace(p).fingerprint()
    for change in ({"version": 2}, {"steps": 201}, {"target": 0.5}, {"batch_size": 32},
                   {"split_seed": 1}, {"val_fraction": 0.2},
                   {"config": p.config + (("extra", 1),)}):
        assert dataclasses.replace(p, **change).fingerprint() != p.fingerprint(), change


def test_fingerprint_is_stable_across_processes():
    import subprocess
    import sys

    code = "from descentlab.problems import get_problem; print(get_problem('beale').fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == get_problem("beale").fingerprint()


@pytest.mark.parametrize("name", ["rosenbrock", "digits_mlp", "stdlib_char_transformer",
                                  "digits_resnet", "stdlib_char_lstm", "adding_gru"])
def test_problems_pickle_for_worker_processes(name):
    p = get_problem(name)
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.fingerprint() == p.fingerprint()
    assert isinstance(q.build(0), Task)


def test_reached_respects_direction_and_nan():
    low = get_problem("rosenbrock")
    assert low.reached(low.target) and low.reached(low.target / 2)
    assert not low.reached(low.target * 2) and not low.reached(float("nan"))
    high = get_problem("digits_mlp")
    assert high.reached(1.0) and not high.reached(0.5) and not high.reached(float("nan"))


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_seed(seed, error):
    with pytest.raises(error, match="seed"):
        get_problem("square").build(seed)
    with pytest.raises(error):
        check_seed(seed)


@pytest.mark.parametrize("field, value", [("steps", 0), ("eval_every", -1), ("version", 0),
                                          ("batch_size", 0), ("kind", "toy"),
                                          ("val_fraction", 1.0)])
def test_bad_problem_fields(field, value):
    p = get_problem("square")
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(p, **{field: value})


def test_closure_is_used_so_lbfgs_works():
    task = get_problem("rosenbrock").build(0)
    opt = torch.optim.LBFGS(task.parameters(), lr=1, max_iter=20,
                            line_search_fn="strong_wolfe")
    for _ in range(10):
        task.train_step(opt)
    assert task.evaluate()["loss"] < 1e-8


def test_problem_without_builder():
    p = dataclasses.replace(get_problem("square"), builder=None)
    with pytest.raises(ValueError, match="no builder"):
        p.build(0)


def test_settings_expose_config_as_dict():
    s = get_problem("digits_cnn").settings
    assert s["config"]["model"] == "cnn" and s["name"] == "digits_cnn"
    assert isinstance(Problem, type)
