"""The standard-library character language model."""

from __future__ import annotations

import math
import os
import sysconfig

import pytest
import torch

from descentlab.problems import get_problem
from descentlab.problems.data import STDLIB_FILES, VOCAB, encode_text, stdlib_text
from descentlab.problems.language import CharTransformer, LanguageModelTask


def test_text_is_read_from_the_stdlib_and_cut_to_the_budget():
    text = stdlib_text(STDLIB_FILES, 60_000)
    assert len(text) == 60_000
    with open(os.path.join(sysconfig.get_paths()["stdlib"], STDLIB_FILES[0]),
              encoding="utf-8") as fh:
        first = fh.read()
    assert text.startswith(first[:1000])
    with pytest.raises(ValueError, match="exceeds"):
        stdlib_text(("keyword.py",), 10**7)
    with pytest.raises(FileNotFoundError, match="no_such_module.py"):
        stdlib_text(("no_such_module.py",), 10)


def test_vocabulary_and_encoding():
    assert len(VOCAB) == 97 and len(set(VOCAB)) == 97
    assert encode_text("a\n\té").tolist() == [VOCAB.index("a"), 1, 0, 0]


def test_initial_loss_is_near_uniform_and_falls_with_adam():
    problem = get_problem("stdlib_char_transformer")
    assert problem.settings["config"]["python"].count(".") == 1
    task = problem.build(0)
    start = task.evaluate()
    assert abs(start["val_loss"] - math.log(len(VOCAB))) < 0.6
    opt = torch.optim.Adam(task.parameters(), lr=0.01)
    losses = [task.train_step(opt) for _ in range(8)]
    assert task.evaluate()["train_loss"] < start["train_loss"] - 0.5
    assert losses[-1] < losses[0]


def test_model_is_causal():
    torch.manual_seed(0)
    model = CharTransformer(len(VOCAB), 16, 16, 2, 2)
    tokens = torch.randint(0, len(VOCAB), (1, 16))
    changed = tokens.clone()
    changed[0, 10] = (changed[0, 10] + 1) % len(VOCAB)
    a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_full_batch_uses_every_training_window_and_is_deterministic():
    tokens = encode_text(stdlib_text(STDLIB_FILES, 60_000)[:2_000])
    losses = []
    for seed in (0, 1):
        torch.manual_seed(0)
        model = CharTransformer(len(VOCAB), 16, 16, 2, 1)
        task = LanguageModelTask(model, tokens, 0.1, 16, None, seed)
        losses.append(task.train_step(torch.optim.SGD(task.parameters(), lr=0.0)))
    assert len(task._full) == (1_800 - 1) // 16
    assert losses[0] == losses[1]  # full batch: no sampling, so the seed does not matter
    x, y = task._windows(task._train, task._full)
    with torch.no_grad():
        assert losses[0] == pytest.approx(float(task._loss(x, y)), rel=1e-6)
