"""``descentlab.advisor`` (``descentlab.advise(...)``): which optimizer and settings, measured.

The method (a portfolio at defaults, learning-rate range tests, successive
halving within a budget, diagnostics for warm-up, clipping and schedule) is
described in :mod:`descentlab.advisor.method`; the portfolio in
:mod:`descentlab.advisor.portfolio`.

Example::

    import descentlab

    rec = descentlab.advise(model_fn, loss_fn, (x_train, y_train), (x_val, y_val),
                            steps=2_000, budget=0.2)
    print(rec.summary())
    opt = rec.make_optimizer(model.parameters())
    schedule = rec.attach_schedule(opt)
    print(rec.code())
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

from descentlab.advisor.method import MIN_EVALUATIONS, advise_setup
from descentlab.advisor.portfolio import PORTFOLIO, Candidate, build_portfolio
from descentlab.advisor.recommendation import Evidence, Recommendation
from descentlab.advisor.setup import AdviseSetup, check_budget, from_pieces, from_problem
from descentlab.checks import check_seed

__all__ = [
    "MIN_EVALUATIONS",
    "PORTFOLIO",
    "AdviseSetup",
    "Candidate",
    "Evidence",
    "Recommendation",
    "advise",
    "advise_problem",
    "build_portfolio",
    "check_budget",
    "from_pieces",
    "from_problem",
]


def advise(
    model_fn: Callable[[int], nn.Module],
    loss_fn: Callable[[Any, Any], Tensor],
    train_data: Any,
    val_data: Any,
    *,
    steps: int,
    budget: float = 0.2,
    metric: str = "val_loss",
    higher_is_better: bool | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    candidates: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Recommendation:
    """Choose an optimizer and its settings for training ``model_fn(seed)`` for ``steps`` steps.

    Args:
        model_fn: ``model_fn(seed) -> nn.Module``, a fresh model for each run.
        loss_fn: ``loss_fn(output, target) -> scalar Tensor``.
        train_data, val_data: ``(inputs, targets)`` tensors or datasets of pairs.
        steps: the full training budget (optimizer steps).
        budget: the share of ``steps`` the advice may spend, in (0, 1]; every
            gradient evaluation counts, range tests included.
        metric: ``"val_loss"`` (default), ``"train_loss"``, ``"val_accuracy"``
            or ``"train_accuracy"``.
        higher_is_better: direction of ``metric`` (default: accuracies up, losses down).
        batch_size: rows per step; ``None``: the whole training set when it
            has at most 2,048 rows (then L-BFGS is a candidate), else 128.
        seed: seed of the initialisations and batch orders the advice uses.
        candidates: restrict the portfolio to these candidate names.
        progress: called with the number of evaluations spent, as they are spent.

    Bad arguments (budget outside (0, 1], data that does not fit the model,
    a loss that is not a scalar, …) raise ``ValueError``/``TypeError`` before
    any training.
    """
    budget = check_budget(budget)
    seed = check_seed(seed)
    setup = from_pieces(model_fn, loss_fn, train_data, val_data, steps=steps, metric=metric,
                        higher_is_better=higher_is_better, batch_size=batch_size)
    return advise_setup(setup, budget=budget, seed=seed, candidates=candidates,
                        progress=progress)


def advise_problem(
    problem: Any, *, budget: float = 0.2, steps: int | None = None, seed: int = 0,
    candidates: Iterable[str] | None = None, progress: Callable[[int], None] | None = None,
) -> Recommendation:
    """:func:`advise` for a built-in problem (a name or a :class:`~descentlab.problems.Problem`)."""
    from descentlab.problems import get_problem

    budget = check_budget(budget)
    seed = check_seed(seed)
    if isinstance(problem, str):
        problem = get_problem(problem)
    return advise_setup(from_problem(problem, steps=steps), budget=budget, seed=seed,
                        candidates=candidates, progress=progress)
