"""Learning problems: losses against hand computation, training, determinism, fixed splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import expit, logsumexp

from descentlab.problems import available_problems, get_problem
from descentlab.problems.data import load_split
from descentlab.problems.learning import LOSSES

LEARNING = [n for n in available_problems() if get_problem(n).kind == "learning"]


def _adam_steps(task, steps, lr=0.01):
    opt = torch.optim.Adam(task.parameters(), lr=lr)
    return [task.train_step(opt) for _ in range(steps)]


@pytest.mark.parametrize("name", LEARNING)
def test_adam_lowers_the_training_loss(name):
    task = get_problem(name).build(0)
    before = task.evaluate()
    assert {"train_loss", "val_loss"} <= set(before)
    _adam_steps(task, 15)
    after = task.evaluate()
    assert after["train_loss"] < 0.95 * before["train_loss"]


@pytest.mark.parametrize("name", LEARNING)
def test_build_is_deterministic_given_the_seed(name):
    p = get_problem(name)
    a, b, c = p.build(3), p.build(3), p.build(4)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(),
                                                           strict=True))
    assert _adam_steps(a, 3) == _adam_steps(b, 3)
    assert a.evaluate() == b.evaluate()


def test_building_does_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    get_problem("digits_cnn").build(5)
    assert torch.equal(torch.rand(3), expected)


def test_split_is_fixed_disjoint_and_scaled_with_training_statistics():
    a = load_split("breast_cancer", 0.25, 0, "standardize", False)
    assert len(a.x_train) + len(a.x_val) == 569 and len(a.x_val) == 142
    torch.testing.assert_close(a.x_train.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(a.x_train.std(0, unbiased=False), torch.ones(30), atol=1e-4,
                               rtol=0)
    rows_train = {tuple(r) for r in a.x_train.tolist()}
    assert not rows_train & {tuple(r) for r in a.x_val.tolist()}
    load_split.cache_clear()
    b = load_split("breast_cancer", 0.25, 0, "standardize", False)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_train, b.y_train)
    c = load_split("breast_cancer", 0.25, 1, "standardize", False)
    assert not torch.equal(a.y_val, c.y_val)
    d = load_split("digits", 0.25, 0, "unit", False)
    assert d.x_train.max() == 1.0 and d.x_train.min() == 0.0 and len(d.x_val) == 449


def test_bad_dataset_and_scaling_names():
    with pytest.raises(ValueError, match="valid names: breast_cancer, diabetes, digits"):
        load_split("mnist", 0.25, 0, "none", False)
    with pytest.raises(ValueError, match="scaling must be"):
        load_split("digits", 0.25, 0, "minmax", False)


def _linear_scores(task, x):
    weight = task.model.weight.detach().double().numpy()
    bias = task.model.bias.detach().double().numpy()
    return x.double().numpy() @ weight.T + bias


def _split(name):
    p = get_problem(name)
    c = dict(p.config)
    return load_split(c["dataset"], p.val_fraction, p.split_seed, c["scaling"],
                      c["loss"] in ("mse", "mae"))


def test_logistic_regression_bce_and_accuracy_by_hand():
    task = get_problem("breast_cancer_logreg").build(0)
    _adam_steps(task, 5)
    s = _split("breast_cancer_logreg")
    z = _linear_scores(task, s.x_val)[:, 0]
    y = s.y_val.double().numpy()
    p = expit(z)
    bce = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    m = task.evaluate()
    assert m["val_loss"] == pytest.approx(bce, rel=1e-5)
    assert m["val_accuracy"] == pytest.approx(np.mean((z > 0) == (y == 1)))


def test_svm_uses_the_binary_hinge_on_the_score_difference():
    task = get_problem("breast_cancer_svm").build(0)
    _adam_steps(task, 5)
    s = _split("breast_cancer_svm")
    scores = _linear_scores(task, s.x_val)
    y = s.y_val.numpy()
    margin = scores[np.arange(len(y)), y] - scores[np.arange(len(y)), 1 - y]
    hinge = np.mean(np.maximum(0.0, 1.0 - margin)) / 2
    m = task.evaluate()
    assert m["val_loss"] == pytest.approx(hinge, rel=1e-5)
    assert m["val_accuracy"] == pytest.approx(np.mean(scores.argmax(1) == y))


def test_softmax_regression_cross_entropy_by_hand():
    task = get_problem("digits_softmax").build(0)
    _adam_steps(task, 5)
    s = _split("digits_softmax")
    scores = _linear_scores(task, s.x_train)
    y = s.y_train.numpy()
    ce = np.mean(logsumexp(scores, axis=1) - scores[np.arange(len(y)), y])
    assert task.evaluate()["train_loss"] == pytest.approx(ce, rel=1e-5)


@pytest.mark.parametrize("name, reduce", [("diabetes_linreg", lambda r: np.mean(r**2)),
                                          ("diabetes_lad", lambda r: np.mean(np.abs(r)))])
def test_regression_losses_by_hand(name, reduce):
    task = get_problem(name).build(0)
    s = _split(name)
    residual = _linear_scores(task, s.x_val)[:, 0] - s.y_val.double().numpy()
    assert task.evaluate()["val_loss"] == pytest.approx(reduce(residual), rel=1e-5)
    assert "val_accuracy" not in task.evaluate()


def test_least_squares_solution_is_the_optimum_of_diabetes_linreg():
    task = get_problem("diabetes_linreg").build(0)
    s = _split("diabetes_linreg")
    x = np.c_[s.x_train.double().numpy(), np.ones(len(s.x_train))]
    w, *_ = np.linalg.lstsq(x, s.y_train.double().numpy(), rcond=None)
    with torch.no_grad():
        task.model.weight.copy_(torch.tensor(w[:-1])[None])
        task.model.bias.copy_(torch.tensor(w[-1:]))
    task.model.zero_grad()
    task.loss_fn(task.model(s.x_train).squeeze(-1), s.y_train).backward()
    assert max(float(p.grad.abs().max()) for p in task.parameters()) < 1e-5
    mse = np.mean((x @ w - s.y_train.double().numpy()) ** 2)
    assert task.evaluate()["train_loss"] == pytest.approx(mse, rel=1e-5)


def test_autoencoder_reconstructs_its_input():
    task = get_problem("digits_autoencoder").build(0)
    s = _split("digits_autoencoder")
    with torch.no_grad():
        out = task.model(s.x_val)
    assert out.shape == s.x_val.shape
    assert task.evaluate()["val_loss"] == pytest.approx(float(((out - s.x_val) ** 2).mean()),
                                                        rel=1e-5)


def test_minibatches_visit_every_row_once_per_epoch():
    task = get_problem("breast_cancer_logreg").build(0)
    n = len(_split("breast_cancer_logreg").x_train)
    seen = torch.cat([task._next_batch() for _ in range(n // 32)])
    assert len(set(seen.tolist())) == len(seen) == 32 * (n // 32)


def test_every_seed_loss_is_used_by_a_problem():
    used = {dict(get_problem(n).config).get("loss") for n in LEARNING}
    assert set(LOSSES) <= used
    assert {cls.__module__.split(".")[0] for cls, _ in LOSSES.values()} == {"torch"}
