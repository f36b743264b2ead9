"""A recurrent network on generated sequences: the adding problem with a GRU.

The adding problem (Hochreiter & Schmidhuber, 1997, "Long Short-Term
Memory"; in the form of Arjovsky, Shah & Bengio, 2016) tests memory over a
sequence. Each input is ``length`` steps of two channels: a value
``v_t ~ U(0, 1)`` and a marker ``m_t ∈ {0, 1}`` that is 1 at exactly two
steps, one drawn uniformly from the first half and one from the second half.
The target is the sum of the two marked values, ``y = Σ_t m_t v_t``. The loss
is ``nn.MSELoss``. Predicting the constant 1 (the mean) gives
``Var(v_i + v_j) = 1/6 ≈ 0.167``; a network reaches that quickly and then sits
on a plateau until it learns to remember the marked values, which plain SGD
rarely escapes within a small budget while adaptive and momentum methods do
(Martens & Sutskever, 2011, used this problem to show the plateau).

The model is an ``nn.GRU`` over the sequence whose last hidden state feeds an
``nn.Linear`` read-out. The data set is generated once from the problem's
``split_seed`` (a fixed training and validation set, like a data set on disk);
the run's seed sets the initial weights and the mini-batch order.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from descentlab.problems.base import Problem
from descentlab.problems.data import Split
from descentlab.problems.learning import SupervisedTask
from descentlab.problems.registry import register

__all__ = ["RecurrentRegressor", "adding_problem", "adding_split"]


def adding_problem(n: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` adding-problem sequences: inputs ``(n, length, 2)`` and targets ``(n,)``.

    Channel 0 holds the values ``v ~ U(0, 1)``, channel 1 the markers (one in
    ``[0, length // 2)``, one in ``[length // 2, length)``); the target is the
    sum of the two marked values. Everything is drawn from ``generator``.
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length!r}")
    values = torch.rand(n, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (n,), generator=generator)
    second = torch.randint(half, length, (n,), generator=generator)
    markers = torch.zeros(n, length)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=-1), (values * markers).sum(dim=1)


@functools.cache
def adding_split(train: int, val: int, length: int, seed: int) -> Split:
    """The fixed training and validation sets (drawn in that order from ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = adding_problem(train, length, generator)
    x_val, y_val = adding_problem(val, length, generator)
    return Split(x_train, y_train, x_val, y_val)


class RecurrentRegressor(nn.Module):
    """``Linear(GRU(x)[:, -1])``: a GRU over ``(n, length, inputs)`` and a linear
    read-out of its last hidden state, giving ``(n, 1)``."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Predictions ``(n, 1)``."""
        states, _ = self.rnn(x)
        return self.head(states[:, -1])


def _build_adding(problem: Problem, seed: int) -> SupervisedTask:
    c = dict(problem.config)
    total = c["sequences"]
    val = int(round(problem.val_fraction * total))
    split = adding_split(total - val, val, c["length"], problem.split_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = RecurrentRegressor(2, c["hidden"])
    return SupervisedTask(model, "mse", split, problem.batch_size, seed)


register(Problem(
    name="adding_gru",
    version=1,
    description="GRU (32 units) on the adding problem, 20-step generated sequences (MSE)",
    kind="learning",
    steps=800,
    batch_size=64,
    metric="val_loss",
    target=0.01,
    higher_is_better=False,
    eval_every=20,
    split_seed=0,
    val_fraction=0.2,
    config=(("hidden", 32), ("length", 20), ("loss", "mse"), ("model", "gru"),
            ("sequences", 2500)),
    builder=_build_adding,
))
