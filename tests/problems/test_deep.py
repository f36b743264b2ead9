"""The deep-suite networks: residual CNN with batch norm, character LSTM, GRU adding problem."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from descentlab.problems import get_problem
from descentlab.problems.data import VOCAB
from descentlab.problems.language import CharLSTM
from descentlab.problems.residual import BasicBlock, ResidualCNN, random_shift
from descentlab.problems.sequence import RecurrentRegressor, adding_problem, adding_split

NEW = ["digits_resnet", "stdlib_char_lstm", "adding_gru"]


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[r, c] = image[r + dy, c + dx]``, zero outside: written with explicit loops."""
    side = image.shape[0]
    out = torch.zeros_like(image)
    for r in range(side):
        for c in range(side):
            if 0 <= r + dy < side and 0 <= c + dx < side:
                out[r, c] = image[r + dy, c + dx]
    return out


def test_random_shift_translates_each_image_by_an_offset_within_the_range():
    torch.manual_seed(0)
    x = torch.rand(200, 64)
    out = random_shift(x, 8, 1, torch.Generator().manual_seed(5))
    seen = set()
    for before, after in zip(x.view(-1, 8, 8), out.view(-1, 8, 8), strict=True):
        offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                   if torch.equal(_shifted(before, dy, dx), after)]
        assert len(offsets) == 1
        seen.add(offsets[0])
    assert len(seen) == 9  # every offset occurs
    again = random_shift(x, 8, 1, torch.Generator().manual_seed(5))
    assert torch.equal(out, again)


def test_residual_blocks_and_network_shapes():
    torch.manual_seed(0)
    same = BasicBlock(4, 4, 1)
    assert isinstance(same.shortcut, torch.nn.Identity)
    down = BasicBlock(4, 8, 2)
    assert isinstance(down.shortcut[0], torch.nn.Conv2d) and down.shortcut[0].stride == (2, 2)
    assert down(torch.rand(3, 4, 8, 8)).shape == (3, 8, 4, 4)
    net = ResidualCNN(8, 10, (16, 32))
    assert net(torch.rand(5, 64)).shape == (5, 10)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 6
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="widths"):
        ResidualCNN(8, 10, ())


def test_resnet_evaluation_uses_exact_training_set_batch_norm_statistics():
    task = get_problem("digits_resnet").build(0)
    opt = torch.optim.SGD(task.parameters(), lr=0.1, momentum=0.9)
    for _ in range(5):
        task.train_step(opt)
    first = task.evaluate()
    assert task.model.training  # back in training mode
    assert task.evaluate() == first  # a function of the weights, not of earlier evaluations
    stem_conv, stem_bn = task.model.stem[0], task.model.stem[1]
    with torch.no_grad():
        h = stem_conv(task._x_train.view(-1, 1, 8, 8))
    torch.testing.assert_close(stem_bn.running_mean, h.mean((0, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stem_bn.running_var, h.var((0, 2, 3), unbiased=True),
                               rtol=1e-4, atol=1e-6)


def test_resnet_evaluations_do_not_change_training():
    problem = get_problem("digits_resnet")
    losses = []
    for evaluate in (False, True):
        task = problem.build(1)
        opt = torch.optim.Adam(task.parameters(), lr=3e-3)
        run = []
        for _ in range(4):
            run.append(task.train_step(opt))
            if evaluate:
                task.evaluate()
        losses.append(run)
    assert losses[0] == losses[1]


def test_char_lstm_is_causal_and_starts_near_uniform():
    torch.manual_seed(0)
    model = CharLSTM(len(VOCAB), 8, 16)
    tokens = torch.randint(0, len(VOCAB), (2, 12))
    changed = tokens.clone()
    changed[:, 7] = (changed[:, 7] + 1) % len(VOCAB)
    a, b = model(tokens), model(changed)
    assert a.shape == (2, 12, len(VOCAB))
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])
    start = get_problem("stdlib_char_lstm").build(0).evaluate()
    assert abs(start["val_loss"] - math.log(len(VOCAB))) < 0.3


def test_adding_problem_data_by_hand():
    x, y = adding_problem(300, 20, torch.Generator().manual_seed(0))
    assert x.shape == (300, 20, 2) and y.shape == (300,)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert (markers.sum(1) == 2).all()
    assert (markers[:, :10].sum(1) == 1).all() and (markers[:, 10:].sum(1) == 1).all()
    for i in range(300):
        marked = [float(values[i, t]) for t in range(20) if markers[i, t] == 1]
        assert float(y[i]) == pytest.approx(sum(marked), rel=1e-6)
    with pytest.raises(ValueError, match="length"):
        adding_problem(3, 1, torch.Generator())


def test_adding_split_is_fixed_and_predicting_the_mean_gives_one_sixth():
    problem = get_problem("adding_gru")
    split = adding_split(2000, 500, 20, problem.split_seed)
    assert len(split.x_train) == 2000 and len(split.x_val) == 500
    adding_split.cache_clear()
    again = adding_split(2000, 500, 20, problem.split_seed)
    assert torch.equal(split.x_val, again.x_val) and torch.equal(split.y_train, again.y_train)
    assert not torch.equal(adding_split(2000, 500, 20, 1).y_val, split.y_val)
    # Var(v_i + v_j) = 2 · 1/12 for independent uniform values
    assert float(((split.y_val - 1.0) ** 2).mean()) == pytest.approx(1 / 6, abs=0.03)
    task = problem.build(0)
    assert torch.equal(task._x_val, split.x_val)


def test_recurrent_regressor_reads_the_last_hidden_state():
    torch.manual_seed(0)
    model = RecurrentRegressor(2, 8)
    x = torch.rand(4, 6, 2)
    _, last = model.rnn(x)
    torch.testing.assert_close(model(x), model.head(last[0]))


@pytest.mark.parametrize("name", NEW)
def test_fingerprint_follows_every_setting_of_the_definition(name):
    p = get_problem(name)
    base = p.fingerprint()
    for key, _ in p.config:
        changed = tuple((k, (v if k != key else _other(v))) for k, v in p.config)
        assert dataclasses.replace(p, config=changed).fingerprint() != base, key
    for change in ({"version": p.version + 1}, {"steps": p.steps + 1}, {"target": p.target / 2},
                   {"batch_size": p.batch_size + 1}, {"split_seed": 1}, {"eval_every": 1}):
        assert dataclasses.replace(p, **change).fingerprint() != base, change


def _other(value):
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return value[:-1] if len(value) > 1 else value + value
    return value + 1


@pytest.mark.parametrize("name", ["digits_resnet", "adding_gru"])  # the LM: test_language.py
def test_full_batch_steps_are_deterministic(name):
    p = dataclasses.replace(get_problem(name), batch_size=None)
    losses = []
    for seed in (0, 0):
        task = p.build(seed)
        losses.append(task.train_step(torch.optim.SGD(task.parameters(), lr=0.0)))
    assert losses[0] == losses[1] and math.isfinite(losses[0])
